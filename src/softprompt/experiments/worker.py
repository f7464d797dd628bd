"""Run one sweep run to its end: start it, or resume it from its checkpoint, and write `result.json` last.

    RUN_DIR/result.json   the run is finished: its spec, final metrics (the command's own summary), wall time of
                          its last attempt (`wall_s`), the run's time over all attempts (`run_s`, from its log) and
                          the sha256 of the data files it reads (`data_files`: `RunSpec.data_sources`)
    RUN_DIR/spec.json      the run's RunSpec (written at its start)
    RUN_DIR/attempts.jsonl one line per start (with whether it resumed), so a restarted sweep can be audited
    RUN_DIR/output.log     what the command printed

The run itself is `softprompt train` or `softprompt blackbox` (the same code, checks and folder layout as by hand),
called in this process with --resume when the folder holds a checkpoint, else --overwrite (a folder without a
checkpoint and without result.json holds nothing worth keeping: at most an artifact written just before the first
checkpoint). `result.json` is written atomically after the command ends, so its presence means "finished"; a run
killed at any point before has a checkpoint or nothing, and resumes or restarts.

A lock on the folder (flock, released by the OS when the process dies) keeps two sweeps from running one run at
once. As a subprocess of a local sweep (`python -m softprompt.experiments.worker`), the worker also asks Linux to
kill it when the sweep dies, so `kill -9` of the sweep leaves no orphan still writing.

A zero-shot run is `softprompt eval --zero-shot` (nothing to resume or save): its printed metrics become the
result's test metrics, with 0 trainable parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softprompt.fileio import atomic_write_text

if TYPE_CHECKING:
    from softprompt.experiments.grid import RunSpec

RESULT = "result.json"


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=float))


@contextlib.contextmanager
def _locked(run_dir: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with (run_dir / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits while another process runs this run
        yield


def _summary(output: str) -> dict[str, Any]:
    """The command's last printed JSON object (its summary line)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the run printed no summary")


def _run_s(run_dir: Path) -> float | None:
    """The run's time over all its attempts, as its log's last `run_s` record says (None: none, as for zero-shot)."""
    from softprompt.runs import RunLog

    lines = (run_dir / RunLog.FILE).read_text().splitlines() if (run_dir / RunLog.FILE).exists() else []
    times = [r["run_s"] for r in map(json.loads, filter(None, lines)) if "run_s" in r]
    return times[-1] if times else None


def data_digests(run: RunSpec) -> dict[str, str]:
    """sha256 of each data file the run reads (`RunSpec.data_sources`), kept in its result so a later sweep can say
    when a finished run's data has changed since."""
    return {str(path): file_digest(path, {}) for path in run.data_sources()}  # each path once: no cache to share


def file_digest(path: Path, cache: dict[Path, str]) -> str:
    """sha256 of a file's bytes ("" for one that does not read), once per path in `cache`."""
    if path not in cache:
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            cache[path] = digest.hexdigest()
        except OSError:
            cache[path] = ""
    return cache[path]


def _primary_metric(run_dir: Path) -> str | None:
    from softprompt.artifact import read_metadata

    task = read_metadata(run_dir).get("task") or {}
    metrics = task.get("metrics") or []
    return metrics[0] if metrics else None


def execute(spec: dict[str, Any], run_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Run (or resume, or just read back) one run; returns what `result.json` holds, or a failure record."""
    import torch

    from softprompt.checkpoint import has_checkpoint
    from softprompt.cli import main as cli_main
    from softprompt.experiments.grid import ZERO_SHOT, RunSpec

    if threads:
        torch.set_num_threads(threads)
    run = RunSpec.from_dict(spec)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        done = read_result(run_dir)
        if done is not None:
            return done
        resume = has_checkpoint(run_dir / "checkpoint")
        _write_json(run_dir / "spec.json", run.to_dict())  # what the run is, for plots of unfinished runs
        with (run_dir / "attempts.jsonl").open("a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "resume": resume}) + "\n")
        zero_shot = run.method == ZERO_SHOT
        argv = run.argv(run_dir) if zero_shot else [*run.argv(run_dir), "--resume" if resume else "--overwrite"]
        data = data_digests(run)  # what it reads, as it starts
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(argv)
        wall = time.perf_counter() - started
        with (run_dir / "output.log").open("a") as log:
            log.write(f"$ softprompt {' '.join(argv)}\n{out.getvalue()}{err.getvalue()}")
        record: dict[str, Any] = {"name": run.name, "spec": run.to_dict(), "resumed": resume, "wall_s": round(wall, 2)}
        if code != 0:
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            return {**record, "status": "failed", "error": lines[-1] if lines else f"exit status {code}"}
        summary = _summary(out.getvalue())
        dtype = summary.pop("dtype", None)  # the frozen model's number format, as the command used it
        if zero_shot:
            metric = summary["metric"]
            test = {k: v for k, v in summary.items() if k not in ("task", "split", "prompt", "metric")}
            summary = {"test": test, "trainable_parameters": 0}
        else:
            metric = _primary_metric(run_dir)
        run_s = wall if zero_shot else _run_s(run_dir)
        result = {**record, "run_s": run_s, "status": "done", "metric": metric, "dtype": dtype, "summary": summary,
                  **({"data_files": data} if data else {})}  # fmt: skip
        _write_json(run_dir / RESULT, result)
        return result


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the sweep that started it dies (prctl PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the sweep died before the request was in place
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one sweep run (used by `softprompt sweep`)")
    parser.add_argument("--spec", required=True, help="the run's RunSpec as JSON")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    _die_with_parent()
    result = execute(json.loads(args.spec), args.run_dir, args.threads)
    print(json.dumps(result, default=float))
    return 0 if result["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
