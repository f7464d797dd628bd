"""Run a grid of runs (softprompt.experiments.grid) to completion, on this machine or on a Ray cluster.

    OUT/<run name>/          one run folder each (artifact, log.jsonl, checkpoint/, result.json)
    OUT/grid.json            the grid as it was given (the record of what the table is of)
    OUT/results.{csv,md}     the table, rewritten as runs finish (softprompt.experiments.results)

Runs whose folder has `result.json` are finished and skipped; the others start, or resume from their checkpoint
(softprompt.experiments.worker), so a sweep killed at any moment and started again loses nothing and runs nothing
twice. One progress line per finished run, with the time left: each unfinished run is expected to take what the
finished runs of its group (same task, model, method and settings, any seed) took, spread over the parallel slots;
runs of groups with no finished run yet are counted, not guessed (a zero-shot run and a 1,500-call search differ
by 100x, so one mean over all runs says nothing).

* Local: each run in its own subprocess, `jobs` at a time, each with `threads` torch threads (and OMP/MKL threads),
  so N runs share the machine without oversubscribing it. Ctrl-C stops the running ones (they keep their last
  checkpoint) and starts no more.
* Ray (`ray_address`: "local" for a fresh local instance, "auto" or an address for a cluster, or an already
  initialised `ray`): each run is one Ray task asking for its `cpus`/`gpus`; it runs the same worker function and
  returns the same result. OUT must be a folder every node sees (shared storage).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.experiments.grid import Grid, RunSpec
from softprompt.experiments.results import planned_result, run_seconds, write_tables


@dataclass
class SweepReport:
    out_dir: Path
    results: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r.get("status") != "done"]


@dataclass
class _TimeLeft:
    """Expected seconds left: a run takes the mean wall time of its group's finished runs; `slots` run at once
    (0: not known, as on a Ray cluster; the estimate is then one run after another)."""

    slots: int
    walls: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    @staticmethod
    def _key(spec: RunSpec) -> tuple[str, str, str]:
        return (spec.task_name, spec.model, spec.group)

    def add(self, spec: RunSpec, result: dict[str, Any]) -> None:
        """Learn from a finished run what one of its group takes: its command's whole wall time (model loading
        included) where it ran in one attempt, else its time over all attempts (loading left out)."""
        if result.get("status") != "done":
            return
        seconds = run_seconds(result) if result.get("resumed") else float(result.get("wall_s", math.nan))
        if math.isfinite(seconds):
            self.walls.setdefault(self._key(spec), []).append(seconds)

    def text(self, left: list[RunSpec]) -> str:
        if not left:
            return "done"
        known = [statistics.fmean(self.walls[k]) for k in map(self._key, left) if k in self.walls]
        untimed = len(left) - len(known)
        slots = min(self.slots, len(left)) if self.slots else 1
        serial = "" if self.slots else " one at a time"
        eta = f"eta {sum(known) / slots:.0f} s{serial}" if known else "eta unknown"
        return eta + (f" + {untimed} run(s) of groups not yet timed" if untimed and known else "")


def _python_path() -> str:
    """PYTHONPATH for run processes: this checkout's softprompt first, whatever else is installed."""
    src = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)


@dataclass
class _Workers:
    """The worker processes a local sweep has running, so that an interrupted sweep (Ctrl-C) stops them and starts
    no more; each stopped run keeps its last checkpoint and resumes from it at the next start of the sweep."""

    running: set[subprocess.Popen] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False

    def run(self, spec: RunSpec, run_dir: Path, threads: int) -> dict[str, Any]:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": _python_path()}  # fmt: skip
        argv = [sys.executable, "-m", "softprompt.experiments.worker", "--spec", json.dumps(spec.to_dict()),
                "--run-dir", str(run_dir), "--threads", str(threads)]  # fmt: skip
        record = {"name": spec.name, "spec": spec.to_dict(), "status": "failed"}
        with self.lock:
            if self.stopped:
                return {**record, "error": "not started: the sweep was interrupted"}
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.running.add(proc)
        try:
            stdout, stderr = proc.communicate()
        finally:
            with self.lock:
                self.running.discard(proc)
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if lines:
            return json.loads(lines[-1])
        error = [line for line in stderr.splitlines() if line.strip()]
        return {**record, "error": error[-1] if error else f"worker exit status {proc.returncode}"}

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for proc in self.running:
                proc.terminate()


def _local(pending: list[RunSpec], out_dir: Path, jobs: int, threads: int | None) -> Iterable[dict[str, Any]]:
    workers = _Workers()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(workers.run, s, out_dir / s.name, threads or s.cpus) for s in pending]
        for future in as_completed(futures):
            yield future.result()
    finally:  # finished, or interrupted (Ctrl-C arrives here as KeyboardInterrupt): start nothing more
        workers.stop()
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(pending: list[RunSpec], out_dir: Path, address: str, threads: int | None) -> Iterable[dict[str, Any]]:
    try:
        import ray
    except ImportError as err:
        raise ValueError("--ray needs Ray: pip install 'softprompt[cluster]' (or pip install ray)") from err
    from softprompt.experiments.worker import execute

    if not ray.is_initialized():
        # A local instance's workers import this checkout's softprompt, like the local subprocesses do.
        env = {"env_vars": {"PYTHONPATH": _python_path()}} if address == "local" else None
        ray.init(address=None if address == "local" else address, log_to_driver=False, runtime_env=env)
    task = ray.remote(execute)
    out_dir = out_dir.resolve()  # a node's worker runs in a folder of its own: a relative path would land there
    refs = [
        task.options(num_cpus=s.cpus, num_gpus=s.gpus).remote(s.to_dict(), str(out_dir / s.name), threads or s.cpus)
        for s in pending
    ]
    try:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            yield ray.get(done[0])
    finally:  # interrupted: cancel what has not finished (its checkpoint stays for the next start)
        for ref in refs:
            ray.cancel(ref, force=True)


def run_sweep(
    grid: Grid,
    out_dir: str | Path,
    *,
    jobs: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    """Run every unfinished run of `grid` under `out_dir`; rewrite the results table as each one finishes."""
    from softprompt.models.loading import check_model

    if jobs < 1:
        raise ValueError(f"--jobs must be positive, got {jobs}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be positive, got {threads}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; the sweep folder must be a folder (choose another --out)")
    _check_same_sweep(grid, out_dir)
    results: dict[str, dict[str, Any]] = {}
    pending: list[RunSpec] = []
    skipped = []
    for spec in grid.runs:
        done = planned_result(out_dir / spec.name, spec)
        if done is not None:
            results[spec.name] = done
            skipped.append(spec.name)
        else:
            pending.append(spec)
    for model in dict.fromkeys(spec.model for spec in pending):  # a mistyped name fails here, not in every run
        check_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "grid.json").write_text(json.dumps({"name": grid.name, **grid.source}, indent=1))  # a file's stem
    total = len(grid.runs)
    echo(f"sweep {grid.name}: {total} runs, {len(skipped)} finished before, {len(pending)} to run -> {out_dir}")
    stale = _stale(results)
    if stale:
        first = next(iter(stale.values()))[0]
        echo(f"warning: {len(stale)} finished run(s) read data files that have changed since ({first} among them); "
             "their results, of the data as it was, are kept and not run again: sweep into another --out to run "
             "them on the data as it is")  # fmt: skip
    write_tables(out_dir, _ordered(grid, results), grid.name)
    specs = {s.name: s for s in grid.runs}
    time_left = _TimeLeft(slots=0 if ray_address else jobs)
    for name, result in results.items():
        time_left.add(specs[name], result)
    if not pending:
        stream: Iterable[dict[str, Any]] = ()
    elif ray_address:
        stream = _ray(pending, out_dir, ray_address, threads)
    else:
        stream = _local(pending, out_dir, jobs, threads)
    try:
        for result in stream:
            results[result["name"]] = result
            time_left.add(specs[result["name"]], result)
            write_tables(out_dir, _ordered(grid, results), grid.name)
            left = [s for s in pending if s.name not in results]
            echo(_progress(result, len(results), total, time_left.text(left)))
    except KeyboardInterrupt:
        finished = sum(r.get("status") == "done" for r in results.values())
        echo(f"sweep {grid.name}: interrupted with {finished}/{total} runs finished (table in "
             f"{out_dir / 'results.md'}); the same command resumes the others from their checkpoints")  # fmt: skip
        raise
    report = SweepReport(out_dir, _ordered(grid, results), skipped)
    echo(f"sweep {grid.name}: {total - len(report.failed)}/{total} runs finished; table in {out_dir / 'results.md'}")
    return report


def _stale(results: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Finished runs -> the data files they read (as their `result.json` records them) that have changed since."""
    from softprompt.experiments.worker import file_digest

    cache: dict[Path, str] = {}
    stale = {}
    for name, result in results.items():
        then = result.get("data_files") or {}
        changed = [path for path, digest in then.items() if file_digest(Path(path), cache) != digest]
        if changed:
            stale[name] = changed
    return stale


def _check_same_sweep(grid: Grid, out_dir: Path) -> None:
    """A sweep folder holds one grid (its grid.json), which may grow or change between starts; a grid of another
    name would take over its table and leave the old runs out of it, so it is refused."""
    path = out_dir / "grid.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} does not read ({err}); choose another --out, or move it away") from None
    if isinstance(before, dict) and "name" not in before:
        return  # written before grid.json kept the name a grid file without one takes from its file name
    name = str(before.get("name")) if isinstance(before, dict) else None
    if name != grid.name:
        raise ValueError(
            f"{out_dir} holds the sweep {name!r} (its grid.json), not {grid.name!r}: choose another --out, or give "
            f"the grid `name: {name}` if it is that sweep's grid renamed"
        )


def _ordered(grid: Grid, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [results[s.name] for s in grid.runs if s.name in results]


def _progress(result: dict[str, Any], have: int, total: int, eta: str) -> str:
    head = f"[{have}/{total}] {result['name']}"
    if result.get("status") != "done":
        return f"{head}: FAILED: {result.get('error')} ({eta})"
    metric, summary = result.get("metric"), result["summary"]
    test = (summary.get("test") or {}).get(metric)
    score = f"test {metric} {test:.4f}" if isinstance(test, float) else "no test split"
    resumed = ", resumed" if result.get("resumed") else ""
    return f"{head}: {score} ({result['wall_s']:.1f} s{resumed}; {eta})"
