"""The papers' analyses over a finished (or running) sweep folder: each writes NAME.png and the table behind it
(NAME.csv, NAME.md). The grids that feed them are in experiments/ at the repository root.

* curves        training loss (gradient: the logged mean loss; CMA-ES: the generation's mean loss) against step,
                one panel per task, one line per group of runs, the mean over its seeds (`softprompt plot`)
* shift-scale   ULPT ablation (paper Figure 3): none vs shift vs shift+scale, one panel of loss curves per rank,
                and the final test metric of each variant
* similarity    cosine similarity across ranks (Figure 4) of the learned shift vectors b and of the learned change
                of the scale vectors s − 1 (s starts at ones, so s itself is trivially similar), matched by seed,
                within one model and task (each pair of those gets its own panels);
                the diagonal is one rank across two seeds (how alike two trainings of one shape are: the yardstick
                for the rest); random D-dimensional vectors would give about ±1/√D
* rank-length   test metric against trainable parameters, each group labelled by its rank and prompt length, so
                ULPT at equal parameter count (n·r constant) sits beside vanilla prompt tuning
* tune-projection  test metric of each group as bars (tune z vs tune the projection at equal budget, Table 3)
* main-table    one row per method (zero-shot included), one column per task (test metric × 100, mean over seeds)
                and the average over the tasks every row has finished, so a partial sweep's average stays fair;
                groups that differ only in their learning rate also get a row "<group> (lr by validation)" taking,
                per task, the test score of the lr with the best validation score (the papers tune each method's lr
                on dev); with a prompt tuning row (found by method, whatever its label), each row's average and
                parameter count as % of prompt tuning's (of its lr-by-validation row where there is one)
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softprompt.experiments.grid import RunSpec
from softprompt.experiments.results import _csv, _fmt, read_results, run_row, sweep_runs
from softprompt.fileio import atomic_write_text

if TYPE_CHECKING:
    import torch

SPEC = "spec.json"


# --- reading runs --------------------------------------------------------------------------------------------------
def _folder(target: str | Path) -> Path:
    """`target`, which must be a folder: a mistyped path is said to be one, not read as a sweep with no runs yet."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such folder")
    if not target.is_dir():
        raise FileNotFoundError(f"{target}: not a folder (a run folder or a sweep folder)")
    return target


def describe_runs(target: str | Path) -> list[dict[str, Any]]:
    """`describe_run` of a run folder itself, or of every run folder of a sweep (those with a log), in folder order.
    A sweep with a grid.json gives the runs of that grid only, under the grid's specs as they are now (its labels):
    not the runs an earlier version of the grid left in the folder (`results.sweep_runs`)."""
    target = _folder(target)
    if (target / "log.jsonl").exists():
        return [describe_run(target)]
    runs = sweep_runs(target)
    found = sorted(p.parent for p in target.glob("*/log.jsonl") if runs is None or p.parent.name in runs)
    if not found:
        raise FileNotFoundError(f"{target}: neither a run folder nor a sweep folder (no log.jsonl in it or below)")
    return [describe_run(d, (runs or {}).get(d.name)) for d in found]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def describe_run(run_dir: Path, run: RunSpec | None = None) -> dict[str, Any]:
    """What a run is (its group label, seed, prompt config) and what it gave (test/validation metric, params);
    `run`: its spec as the sweep's grid has it now, else the spec.json it was started with."""
    from softprompt.experiments.worker import read_result

    spec, result = _json(run_dir / SPEC), read_result(run_dir)
    meta = _json(run_dir / "prompt.json") or {}
    run = run or (RunSpec.from_dict(spec) if spec else None)
    config = {**(_planned_config(run) if run else {}), **(meta.get("config") or {})}
    metrics = (meta.get("task") or {}).get("metrics") or [None]
    metric = (result or {}).get("metric") or metrics[0]
    summary = (result or {}).get("summary") or {}
    validation = summary.get("validation") or summary.get("dev") or (meta.get("metrics") or {}).get("validation") or {}
    return {
        "dir": run_dir,
        "group": run.group if run else run_dir.name,
        "task": run.task_name if run else (meta.get("task") or {}).get("name") or "",
        "model": run.model if run else "",
        "seed": run.seed if run else 0,
        "method": meta.get("method") or (spec or {}).get("method"),
        "rank": config.get("rank"),
        "prompt_len": config.get("prompt_len"),
        "use_shift": config.get("use_shift"),
        "use_scale": config.get("use_scale"),
        "metric": metric,
        "test": (summary.get("test") or {}).get(metric, math.nan),
        "validation": validation.get(metric, math.nan),
        "parameters": meta.get("num_trainable_parameters", math.nan),
        "finished": result is not None and result.get("status") == "done",
    }


def _planned_config(run: RunSpec) -> dict[str, Any]:
    """The prompt config a run was started with: its grid settings over its method's defaults. A running run has no
    prompt.json yet, and without this its rank would be None and its variant (shift/scale off) taken for "none"."""
    from softprompt.prompts import REGISTRY

    if run.method not in REGISTRY:  # zero-shot: no prompt
        return {}
    config_class = REGISTRY[run.method][0]
    options = {k: v for k, v in {**run.common, **run.settings}.items() if k in config_class.__dataclass_fields__}
    try:
        return asdict(config_class(**options))
    except (TypeError, ValueError):  # settings the config refuses: the run fails, its prompt.json is all there is
        return {}


def loss_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    points = [(r["step"], r.get("loss", r.get("loss_mean"))) for r in records if "split" not in r]
    points = [(s, v) for s, v in points if isinstance(v, (int, float))]
    return [s for s, _ in points], [float(v) for _, v in points]


def _mean_curve(dirs: Sequence[Path]) -> tuple[list[int], list[float], list[float], int]:
    """Mean and std of a group's loss curves, and over how many runs: those that have come furthest (the highest last
    step), at the steps they all logged. A run behind the others (just started on a running sweep, or stopped) is
    left out until it catches up: it would otherwise cut the group's curve down to its first steps, and a mean over
    a changing set of runs would jump where one of them stops. Runs that logged no loss draw nothing."""
    curves = [curve for curve in (dict(zip(*loss_curve(d), strict=True)) for d in dirs) if curve]
    furthest = max((max(c) for c in curves), default=None)
    curves = [c for c in curves if max(c) == furthest]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    means = [statistics.fmean(c[s] for c in curves) for s in steps]
    stds = [statistics.stdev([c[s] for c in curves]) if len(curves) > 1 else 0.0 for s in steps]
    return steps, means, stds, len(curves)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _warn_left_out(runs: Sequence[dict[str, Any]], why: str) -> None:
    """Say on stderr which runs an analysis leaves out and why, so a figure with fewer runs than the sweep is not
    taken for the whole of it (the first few names, then how many more)."""
    if not runs:
        return
    names = [r["dir"].name for r in runs]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    print(f"warning: {len(names)} run(s) {why}: {', '.join(names[:5])}{more}", file=sys.stderr)


def _finished(runs: Sequence[dict[str, Any]], where: str | Path, what: str = "") -> list[dict[str, Any]]:
    """The finished runs (the analyses of test metrics and learned prompts read those); the others (still running,
    or failed) are named on stderr, and none finished is an error."""
    done = [r for r in runs if r["finished"]]
    _warn_left_out([r for r in runs if not r["finished"]], "not finished (running or failed), left out")
    if not done:
        raise ValueError(f"{where}: no finished {what}runs yet")
    return done


def _logged_loss(runs: Sequence[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    """The runs that have logged a training loss; the others are named on stderr. A run logs one every log_every
    steps, so one with fewer steps (or just started) has none: it has no curve to draw."""
    logged = [r for r in runs if loss_curve(r["dir"])[0]]
    missing = [r for r in runs if r not in logged]
    _warn_left_out(missing, f"logged no training loss yet (fewer steps than log_every, or just started), {what}")
    return logged


def _groups(runs: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


# --- writing figures and tables ------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ValueError("plots need matplotlib: pip install 'softprompt[experiments]' (or pip install matplotlib)") \
            from err  # fmt: skip
    return plt


def _colors(n: int) -> list[tuple[float, ...]]:
    """n colours a reader can tell apart. Matplotlib's default cycle repeats after 10, and a main table or a sweep's
    curves often have more lines (12 in results/main_table_cpu): then tab20's dark shades, then its light ones, and
    past 20 evenly spaced hues."""
    plt = _pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def _legend_outside(ax: Any) -> None:
    """The legend right of the axes, where it covers no bar or line (`_write` saves with a tight bounding box)."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _write(out: Path, name: str, fig: Any, rows: list[dict[str, Any]], title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    if not fig.get_constrained_layout():
        fig.tight_layout()
    fig.savefig(png, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_text(out / f"{name}.csv", _csv(rows))
    head = list(rows[0]) if rows else []
    cells = [[_cell(r[k]) for k in head] for r in rows]
    md = [f"# {title}\n", f"![{name}]({name}.png)\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c) + " |" for c in cells]
    atomic_write_text(out / f"{name}.md", "\n".join(md) + "\n")
    return png


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "-"
    return str(value)


def _metric_rows(groups: dict[Any, list[dict[str, Any]]], **columns: Callable[[Any], Any]) -> list[dict[str, Any]]:
    rows = []
    for key, members in groups.items():
        test, test_std = _mean_std([m["test"] for m in members])
        val, val_std = _mean_std([m["validation"] for m in members])
        rows.append({**{name: f(key) for name, f in columns.items()}, "seeds": len(members),
                     "parameters": members[0]["parameters"], "metric": members[0]["metric"],
                     "test": _fmt(test, test_std), "validation": _fmt(val, val_std),
                     "test_mean": test, "test_std": test_std})  # fmt: skip
    return rows


# --- the analyses ------------------------------------------------------------------------------------------------
def curves(target: str | Path, out: str | Path | None = None) -> Path:
    """Training curves of a run or of every group of a sweep: one panel per task (and model), one line per group,
    the mean over its seeds (over those that have come furthest: see `_mean_curve`; the table's `runs` says how many).
    A group keeps its colour in every panel. Runs that logged no loss yet are named on stderr, and a folder where
    none has is an error: no blank figure, no empty table."""
    plt = _pyplot()
    runs = _logged_loss(describe_runs(target), "nothing to draw")
    if not runs:
        raise ValueError(f"{target}: no run has logged a training loss yet (one is logged every log_every steps)")
    several_models = len({r["model"] for r in runs}) > 1
    panels = _groups(runs, lambda r: f"{r['task']} ({r['model']})" if several_models else r["task"])
    names = list(dict.fromkeys(r["group"] for r in runs))
    color = dict(zip(names, _colors(len(names)), strict=True))
    columns = min(3, len(panels))
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    rows, most_seeds = [], 1
    for ax, (panel, members) in zip(axes.flat, panels.items(), strict=False):
        for group, seeds in _groups(members, lambda r: r["group"]).items():
            steps, means, stds, averaged = _mean_curve([m["dir"] for m in seeds])
            ax.plot(steps, means, color=color[group], label=group)
            rows += [{"task": panel, "group": group, "step": s, "loss_mean": m, "loss_std": d, "runs": averaged}
                     for s, m, d in zip(steps, means, stds, strict=True)]  # fmt: skip
            most_seeds = max(most_seeds, averaged)
        ax.set(xlabel="step (CMA-ES: model calls)", ylabel="training loss", title=panel or Path(target).name)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    suffix = f" (mean over seeds, up to {most_seeds})" if most_seeds > 1 else ""
    fig.suptitle(f"training curves: {Path(target).name}{suffix}")
    handles = [plt.Line2D([], [], color=color[n], label=n) for n in names]
    fig.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    return _write(Path(out or target), "curves", fig, rows, f"Training curves of {Path(target).name}")


def _variant(run: dict[str, Any]) -> str:
    return {(False, False): "none", (True, False): "shift", (False, True): "scale", (True, True): "shift+scale"}[
        (bool(run["use_shift"]), bool(run["use_scale"]))
    ]


def shift_scale(sweep: str | Path, out: str | Path | None = None) -> Path:
    """ULPT without shift and scale vs with shift vs with both (the variant from each run's settings), over the
    finished ULPT runs: a panel of loss curves per rank and the table of test metric and final training loss, for
    each (task, model) its own row of panels and rows of the table (variants are compared on one model). A run that
    logged no loss (fewer steps than log_every) keeps its test metric and has no curve (its loss: "-")."""
    plt = _pyplot()
    runs = [r for r in describe_runs(sweep) if r["method"] == "ulpt"]
    if not runs:
        raise ValueError(f"{sweep}: no ULPT runs (the shift-scale grid is experiments/shift_scale.yaml)")
    runs = _finished(runs, sweep, "ULPT ")
    _logged_loss(runs, "no curve (their test metric is in the table)")
    panels = list(_groups(runs, lambda r: (r["task"], r["model"])))
    ranks = sorted({r["rank"] for r in runs})
    fig, axes = plt.subplots(len(panels), len(ranks), figsize=(5 * len(ranks), 4 * len(panels)), squeeze=False)
    order = ["none", "shift", "scale", "shift+scale"]
    groups = _groups(runs, lambda r: (r["task"], r["model"], r["rank"], _variant(r)))
    keys = sorted(groups, key=lambda k: (panels.index(k[:2]), k[2], order.index(k[3])))
    mean_curves = {key: _mean_curve([m["dir"] for m in groups[key]]) for key in keys}
    for line, (task, model) in zip(axes, panels, strict=True):
        where = f"{task} ({model}): " if len(panels) > 1 else ""
        for ax, rank in zip(line, ranks, strict=True):
            for key in (k for k in keys if k[:3] == (task, model, rank)):
                steps, means, _, _ = mean_curves[key]
                test, _ = _mean_std([m["test"] for m in groups[key]])
                ax.plot(steps, means, label=f"{key[3]} (test {test:.3f})")
            ax.set(title=f"{where}ULPT r={rank}", xlabel="step", ylabel="training loss")
            if ax.lines:
                ax.legend(fontsize=8)
    rows = _metric_rows({k: groups[k] for k in keys}, task=lambda k: k[0], model=lambda k: k[1],
                        rank=lambda k: k[2], variant=lambda k: k[3])  # fmt: skip
    for row, key in zip(rows, keys, strict=True):
        means = mean_curves[key][1]
        row["final_train_loss"] = means[-1] if means else math.nan
    return _write(Path(out or sweep), "shift-scale", fig, rows, "ULPT shift/scale ablation")


SIMILARITY_KINDS = ("shift", "scale - 1")


def _learned_vectors(run_dir: Path) -> dict[str, torch.Tensor]:
    """A ULPT run's learned shift b and change of scale s − 1 (s starts at ones, so s itself is trivially alike)."""
    from softprompt.artifact import PromptArtifact

    state = PromptArtifact.from_pretrained(run_dir).prompt.state_tensors()
    return {"shift": state["shift"].float(), "scale - 1": state["scale"].float() - 1}


Vectors = dict[tuple[int, int], dict[str, "torch.Tensor"]]  # (rank, seed) -> the learned vectors of that run


def _similarity_matrix(vectors: Vectors, kind: str) -> tuple[list[list[float]], list[dict[str, Any]]]:
    """Mean cosine of `kind` between every two ranks (same seed) and within each rank (every two of its seeds), of
    one model's runs on one task; and the table rows of the pairs found."""
    import torch

    ranks = sorted({rank for rank, _ in vectors})
    seeds_of = {rank: sorted(s for r, s in vectors if r == rank) for rank in ranks}

    def cosine(a: int, s: int, b: int, t: int) -> float:
        return float(torch.nn.functional.cosine_similarity(vectors[(a, s)][kind], vectors[(b, t)][kind], dim=0))

    matrix = [[math.nan] * len(ranks) for _ in ranks]
    rows = []
    for (i, a), (j, b) in itertools.combinations_with_replacement(enumerate(ranks), 2):
        if a == b:  # one rank, every pair of its seeds
            cos = [cosine(a, s, a, t) for s, t in itertools.combinations(seeds_of[a], 2)]
            seeds = len(seeds_of[a])
        else:  # two ranks, the same seed
            common = sorted(set(seeds_of[a]) & set(seeds_of[b]))
            cos = [cosine(a, s, b, s) for s in common]
            seeds = len(common)
        matrix[i][j] = matrix[j][i] = statistics.fmean(cos) if cos else math.nan
        if cos:
            rows.append({"vector": kind, "rank_a": a, "rank_b": b, "cosine": matrix[i][j], "seeds": seeds})
    return matrix, rows


def _draw_matrix(ax: Any, matrix: list[list[float]], ranks: list[int], title: str) -> Any:
    """One similarity panel: the matrix on the colour scale -1..1 every panel shares, each cell's value written in
    ("–" for a pair no two runs gave); returns the image for the colour bar."""
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
    for i, j in itertools.product(range(len(ranks)), repeat=2):
        text = "–" if math.isnan(matrix[i][j]) else f"{matrix[i][j]:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set(title=title, xlabel="rank", ylabel="rank")
    return image


def similarity(sweep: str | Path, out: str | Path | None = None) -> Path:
    """Cosine similarity across ranks of the finished ULPT (shift and scale) runs' learned vectors. Only vectors of
    one model on one task are compared (another model's are of another model's space, maybe of another size): each
    (task, model) gets its own row of panels and its own table rows."""
    plt = _pyplot()
    runs = [r for r in describe_runs(sweep) if r["method"] == "ulpt" and r["use_shift"] and r["use_scale"]]
    if not runs:
        raise ValueError(f"{sweep}: no ULPT runs with shift and scale (the grid is experiments/similarity.yaml)")
    panels = _groups(_finished(runs, sweep, "ULPT "), lambda r: (r["task"], r["model"]))
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4.2 * len(panels)), squeeze=False, layout="constrained")
    rows = []
    for line, ((task, model), members) in zip(axes, panels.items(), strict=True):
        vectors = {(r["rank"], r["seed"]): _learned_vectors(r["dir"]) for r in members}
        ranks = sorted({rank for rank, _ in vectors})
        where = f"{task} ({model}): " if len(panels) > 1 else ""
        for ax, kind in zip(line, SIMILARITY_KINDS, strict=True):
            matrix, found = _similarity_matrix(vectors, kind)
            rows += [{"task": task, "model": model, **row} for row in found]
            title = f"{where}cosine similarity of {kind}\n(diagonal: one rank, two seeds)"
            image = _draw_matrix(ax, matrix, ranks, title)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8)
    return _write(Path(out or sweep), "similarity", fig, rows, "Cosine similarity of learned vectors across ranks")


def rank_length(sweep: str | Path, out: str | Path | None = None) -> Path:
    plt = _pyplot()
    runs = _finished(describe_runs(sweep), sweep)
    groups = _groups(runs, lambda r: (r["method"], r["rank"], r["prompt_len"], r["parameters"]))
    rows = _metric_rows(groups, method=lambda k: k[0], rank=lambda k: k[1], prompt_len=lambda k: k[2])
    rows.sort(key=lambda r: (r["method"], r["parameters"], r["prompt_len"]))  # not the folders' order (rank16 < rank8)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted({row["method"] for row in rows}):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["parameters"])
        ax.errorbar([r["parameters"] for r in mine], [r["test_mean"] for r in mine],
                    yerr=[r["test_std"] for r in mine], fmt="o", capsize=3, label=method)  # fmt: skip
        for r in mine:
            text = f"n={r['prompt_len']}" + (f", r={r['rank']}" if r["rank"] is not None else "")
            ax.annotate(text, (r["parameters"], r["test_mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xscale="log", xlabel="trainable parameters", ylabel=f"test {rows[0]['metric']}",
           title="rank x prompt length at equal parameters")  # fmt: skip
    ax.legend()
    return _write(Path(out or sweep), "rank-length", fig, rows, "Rank x prompt length at equal trainable parameters")


def tune_projection(sweep: str | Path, out: str | Path | None = None) -> Path:
    plt = _pyplot()
    runs = _finished(describe_runs(sweep), sweep)
    groups = _groups(runs, lambda r: r["group"])
    rows = _metric_rows(groups, group=lambda k: k)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 4))
    ax.bar(range(len(rows)), [r["test_mean"] for r in rows], yerr=[r["test_std"] for r in rows], capsize=4)
    ax.set_xticks(range(len(rows)), [f"{r['group']}\n{r['parameters']:,} params" for r in rows], fontsize=7)
    ax.set(ylabel=f"test {rows[0]['metric']}", title="tune z vs tune the projection")
    return _write(Path(out or sweep), "tune-projection", fig, rows, "Tune z vs tune the projection")


def main_table(sweep: str | Path, out: str | Path | None = None) -> Path:
    """Methods × tasks: test metric × 100 (mean over seeds), trainable parameters, and the average over all the
    tasks for each method that has finished them all ("-" until then, so every average shown is over the same
    tasks); with a prompt-tuning row, each row's average as a % of prompt tuning's over the tasks the two have both
    finished ("tasks vs PT")."""
    plt = _pyplot()
    grid_runs = sweep_runs(_folder(sweep))
    results = read_results(sweep, grid_runs)  # every finished run, zero-shot runs included (they have no log)
    runs = [run_row(r) for r in results]
    if not runs:
        raise ValueError(f"{sweep}: no finished runs yet")
    planned = list((grid_runs or {}).values())  # rows and columns in the grid's order
    tasks = list(dict.fromkeys([s.task_name for s in planned] + [r["task"] for r in runs]))
    methods = list(dict.fromkeys([s.group for s in planned] + [r["group"] for r in runs]))
    tasks = [t for t in tasks if any(r["task"] == t for r in runs)]
    methods = [m for m in methods if any(r["group"] == m for r in runs)]
    by_cell = _groups(runs, lambda r: (r["group"], r["task"]))
    choices = _lr_choices(results, methods)
    selections: dict[str, list[str]] = {}  # the "(lr by validation)" rows: the groups each chooses from
    for base, members in choices.items():
        name = f"{base} (lr by validation)"
        for t in tasks:
            if all((m, t) in by_cell for m in members):  # chosen once every lr has finished (ties: the first listed)
                validation = [_mean_std([r["validation"] for r in by_cell[(m, t)]])[0] for m in members]
                validation = [v if math.isfinite(v) else -math.inf for v in validation]
                by_cell[(name, t)] = by_cell[(members[validation.index(max(validation))], t)]
        if any((name, t) in by_cell for t in tasks):  # the row goes after the last of its lrs
            methods.insert(max(methods.index(m) for m in members) + 1, name)
            selections[name] = members
    metric = {t: next(r["metric"] for r in runs if r["task"] == t) for t in tasks}
    rows, scores = [], []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        params = {r["parameters"] for t in tasks for r in by_cell.get((method, t), [])}
        row["parameters"] = f"{next(iter(params)):,.0f}" if len(params) == 1 else "varies"
        seeds = {t: len(by_cell.get((method, t), [])) for t in tasks}
        row["seeds"] = max(seeds.values())
        score = {t: 100 * _mean_std([r["test"] for r in by_cell.get((method, t), [])])[0] for t in tasks}
        values = [score[t] for t in tasks]
        score["average"] = statistics.fmean(values) if all(map(math.isfinite, values)) else math.nan
        # a cell whose seeds have not all finished says over how many it is the mean
        row.update({f"{t} ({metric[t]})": _one_decimal(score[t]) + (f" ({seeds[t]} of {row['seeds']} seeds)"
                                                                     if 0 < seeds[t] < row["seeds"] else "")
                    for t in tasks})  # fmt: skip
        row[f"average ({len(tasks)} tasks)"] = _one_decimal(score["average"])
        if choices:  # which lr each selection row took, per task
            chosen = [f"{t}: {by_cell[(method, t)][0]['group']}" for t in tasks if (method, t) in by_cell]
            row["chosen"] = "; ".join(chosen) if method in selections else ""
        rows.append(row)
        scores.append(score)
        score["parameters"] = next(iter(params))
    reference = _reference(methods, selections, results)
    if reference:  # the paper's comparison: each row's average and size against prompt tuning's
        pt = scores[methods.index(reference)]
        for row, score in zip(rows, scores, strict=True):
            # over the tasks this row and prompt tuning have both finished (all of them once the table is done), so
            # a row's comparison does not wait for every other row of a table that is still running
            both = [t for t in tasks if math.isfinite(score[t]) and math.isfinite(pt[t])]
            ours, theirs = (statistics.fmean([s[t] for t in both]) if both else math.nan for s in (score, pt))
            row["average % of PT"] = _one_decimal(100 * ours / theirs) if theirs else "-"
            row["tasks vs PT"] = len(both)
            row["parameters % of PT"] = _one_decimal(100 * score["parameters"] / pt["parameters"])
    fig, ax = plt.subplots(figsize=(max(6, max(1.4, 0.4 + 0.12 * len(methods)) * len(tasks)), 4))  # room for labels
    width = 0.8 / len(methods)
    for i, (method, score, color) in enumerate(zip(methods, scores, _colors(len(methods)), strict=True)):
        ax.bar([j + i * width for j in range(len(tasks))], [score[t] for t in tasks], width, label=method, color=color)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], [f"{t}\n{metric[t]}" for t in tasks], fontsize=8)
    ax.set(ylabel="test metric × 100", title=f"main table: {Path(sweep).name}")
    _legend_outside(ax)
    return _write(Path(out or sweep), "main-table", fig, rows, f"Main table: {Path(sweep).name} (test metric × 100)")


def _reference(methods: list[str], selections: dict[str, list[str]], results: list[dict[str, Any]]) -> str | None:
    """The row the "% of PT" columns compare with: prompt tuning trained by gradient, found by its runs' method and
    optimizer whatever the block's `label` calls it; its lr-by-validation row where it has one, else its first row
    in table order."""
    specs = [RunSpec.from_dict(r["spec"]) for r in results]
    pt = {s.group for s in specs if s.method == "prompt_tuning" and s.optimizer == "gradient"}
    rows = [m for m in methods if set(selections.get(m, [m])) <= pt]
    return next((m for m in rows if m in selections), rows[0] if rows else None)


def _lr_choices(results: list[dict[str, Any]], methods: list[str]) -> dict[str, list[str]]:
    """Groups that differ only in their learning rate, under the name of the group without one (in table order):
    what a "(lr by validation)" row chooses from."""
    members: dict[str, list[str]] = {}
    for result in results:
        spec = RunSpec.from_dict(result["spec"])
        base = replace(spec, settings={k: v for k, v in spec.settings.items() if k != "lr"}, label="").group
        members.setdefault(base, [])
        if spec.group not in members[base]:
            members[base].append(spec.group)
    return {base: sorted(groups, key=methods.index) for base, groups in members.items() if len(groups) > 1}


def _one_decimal(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "-"


ANALYSES: dict[str, Callable[..., Path]] = {
    "curves": curves,
    "shift-scale": shift_scale,
    "similarity": similarity,
    "rank-length": rank_length,
    "tune-projection": tune_projection,
    "main-table": main_table,
}
