"""The sweep's results table: one row per group of runs that differ only in their seed, mean ± std over seeds.

    OUT/runs.csv     one row per finished run (its settings and final metrics)
    OUT/results.csv  one row per group: n seeds, mean and std (sample std, n-1) of each metric
    OUT/results.md   the same as a markdown table, `mean ± std`

Metrics: the task's primary metric on test and on validation (black-box: dev), the trainable (searched) parameter
count, the number format(s) its runs' frozen model ran in, and the run time (`run_s`: over all of a run's attempts,
`softprompt.runs.RunFolder.elapsed_s`, so without loading the model; a zero-shot run has no run folder and counts its
whole command, loading included; runs.csv also has the last attempt's wall time, `wall_s`, with `resumed`).
Both files are rewritten (atomically) each time a run finishes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softprompt.fileio import atomic_write_text

if TYPE_CHECKING:
    from softprompt.experiments.grid import RunSpec

GROUP = ("task", "model", "method", "optimizer", "group")
METRICS = ("test", "validation", "parameters", "run_s")


def run_seconds(result: dict[str, Any]) -> float:
    """What a finished run took over all its attempts. Results written before runs kept that (2026-12-01) have only
    the last attempt's wall time, which is the run's own only if it did not resume; else not known (nan)."""
    if result.get("run_s") is not None:
        return float(result["run_s"])
    return math.nan if result.get("resumed") else float(result.get("wall_s", math.nan))


def run_row(result: dict[str, Any]) -> dict[str, Any]:
    """One finished run as a flat row."""
    from softprompt.experiments.grid import RunSpec

    run, summary, metric = RunSpec.from_dict(result["spec"]), result["summary"], result.get("metric")
    validation = summary.get("validation") or summary.get("dev") or {}
    return {
        "task": run.task_name,
        "model": run.model,
        "method": run.method,
        "optimizer": run.optimizer,
        "group": run.group,
        "seed": run.seed,
        "metric": metric,
        "test": (summary.get("test") or {}).get(metric, math.nan),
        "validation": validation.get(metric, math.nan),
        "parameters": summary.get("trainable_parameters", summary.get("searched_parameters", math.nan)),
        "dtype": result.get("dtype") or "",  # absent in results written before the worker recorded it
        "run_s": run_seconds(result),
        "wall_s": result.get("wall_s", math.nan),  # its last attempt's
        "resumed": bool(result.get("resumed")),
        "name": result["name"],
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by everything but the seed (first-seen order), with mean and std of each metric."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        entry["metric"] = members[0]["metric"]
        entry["seeds"] = len(members)
        # the number format the frozen model ran in (`dtype auto` differs by machine): two here means the mean mixes
        entry["dtype"] = ", ".join(sorted({m["dtype"] for m in members if m["dtype"]}))
        for name in METRICS:
            entry[f"{name}_mean"], entry[f"{name}_std"] = _mean_std([m[name] for m in members])
        out.append(entry)
    return out


def _fmt(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(groups: Sequence[dict[str, Any]], title: str = "") -> str:
    head = ["task", "model", "run", "seeds", "metric", "test", "validation", "trainable params", "dtype",
            "run s"]  # fmt: skip
    lines = [f"# {title}\n"] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [
            g["task"],
            g["model"],
            g["group"],
            str(g["seeds"]),
            str(g["metric"]),
            _fmt(g["test_mean"], g["test_std"]),
            _fmt(g["validation_mean"], g["validation_std"]),
            f"{g['parameters_mean']:,.0f}" if math.isfinite(g["parameters_mean"]) else "-",
            g["dtype"] or "-",
            f"{g['run_s_mean']:.1f}" if math.isfinite(g["run_s_mean"]) else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_tables(out_dir: Path, results: Sequence[dict[str, Any]], title: str = "") -> list[dict[str, Any]]:
    """Rewrite runs.csv, results.csv and results.md from the finished runs' results; returns the groups. Failed runs
    are listed under the markdown table (a group missing from it would otherwise look as if it was never asked for)."""
    rows = [run_row(r) for r in results if r.get("status") == "done"]
    groups = group_rows(rows)
    text = markdown(groups, title)
    failed = [r for r in results if r.get("status") != "done"]
    if failed:
        text += (f"\n{len(failed)} run(s) failed and are not in the table (each run folder's output.log says why; the "
                 "same sweep command tries them again):\n\n")  # fmt: skip
        text += "".join(f"- {r['name']}: {r.get('error') or 'no error recorded'}\n" for r in failed)
    atomic_write_text(out_dir / "runs.csv", _csv(rows))
    atomic_write_text(out_dir / "results.csv", _csv(groups))
    atomic_write_text(out_dir / "results.md", text)
    return groups


def sweep_runs(out_dir: str | Path) -> dict[str, RunSpec] | None:
    """The runs of the grid last swept into `out_dir` (its grid.json), by folder name, in the grid's order; None for
    a folder without grid.json, or whose grid no longer parses here (a task file gone: said on stderr).

    Why: a sweep folder keeps the runs of earlier versions of its grid (a changed setting is a new folder, the old
    one is not deleted), and the table, analyses and plots must be of the grid as it is now, under its labels now.
    """
    from softprompt.experiments.grid import parse_grid

    path = Path(out_dir) / "grid.json"
    if not path.is_file():
        return None
    try:
        source = json.loads(path.read_text())
    except ValueError as err:  # as before: an unreadable grid.json means reading every run
        print(f"warning: {path} does not parse ({err}); reading every run in the folder", file=sys.stderr)
        return None
    # Relative task files are the sweep's folder's (their content is in the runs' names): parsed from where the
    # runs say it ran first, so the answer does not depend on where this command runs; then from here (a moved
    # checkout).
    bases = [Path(b) for b in dict.fromkeys(_run_bases(Path(out_dir))) if Path(b).is_dir()]
    errors = []
    for base in [*bases, Path.cwd()]:
        try:
            grid = parse_grid(source, base, check_values=False)  # its values were checked when it was swept
        except ValueError as err:
            errors.append(f"from {base}: {err}")
            continue
        return {run.name: run for run in grid.runs}
    print(f"warning: {path} does not parse ({'; '.join(errors)}); reading every run in the folder", file=sys.stderr)
    return None


def _run_bases(out_dir: Path) -> list[str]:
    """The folders the runs of a sweep folder ran from (each run's spec.json records it)."""
    bases = []
    for path in sorted(out_dir.glob("*/spec.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            base = json.loads(path.read_text()).get("base")
            if isinstance(base, str) and base:
                bases.append(base)
    return bases


def planned_result(run_dir: Path, run: RunSpec) -> dict[str, Any] | None:
    """A run's result.json (None: not finished) under the spec its grid gives it now: a block's `label` may have
    changed since the run ran, and the table and analyses go by the grid as it is."""
    from softprompt.experiments.worker import read_result

    result = read_result(run_dir)
    return None if result is None else {**result, "spec": run.to_dict()}


def read_results(out_dir: str | Path, runs: dict[str, RunSpec] | None) -> list[dict[str, Any]]:
    """The finished runs of a sweep folder: with `runs` (its grid's, `sweep_runs`), those runs under the grid's specs
    in the grid's order; with None, every */result.json in folder order."""
    from softprompt.experiments.worker import read_result

    if runs is None:
        results = [read_result(p.parent) for p in sorted(Path(out_dir).glob("*/result.json"))]
    else:
        results = [planned_result(Path(out_dir) / name, run) for name, run in runs.items()]
    return [r for r in results if r and r.get("status") == "done"]


def read_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """The finished runs of a sweep folder (every */result.json), as rows."""
    return [run_row(r) for r in read_results(out_dir, sweep_runs(out_dir))]
