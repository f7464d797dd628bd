"""`softprompt analyze NAME SWEEP_OR_GRID`: one of the papers' analyses, as NAME.png plus its table (NAME.csv, .md).

Given a grid file (experiments/*.yaml), the sweep runs first (finished runs are skipped), then the analysis reads
its folder; given a sweep folder, the analysis reads what has finished. Analyses (softprompt/experiments/analyses.py):
shift-scale (experiments/shift_scale.yaml), similarity (experiments/similarity.yaml), rank-length
(experiments/rank_length.yaml), tune-projection (experiments/tune_projection.yaml), main-table
(experiments/main_table.yaml: methods × tasks with an average column), curves (any sweep).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAMES = ("shift-scale", "similarity", "rank-length", "tune-projection", "main-table", "curves")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="run one of the papers' analyses on a sweep", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("name", choices=NAMES)
    p.add_argument("target", help="a sweep folder, or a grid file to sweep first")
    p.add_argument("--sweep-out", help="with a grid file: the sweep folder (default: the grid's `out`, else "
                   "runs/sweeps/<grid name>)")  # fmt: skip
    p.add_argument("--out", help="folder for NAME.png/.csv/.md (default: the sweep folder)")
    p.add_argument("--jobs", type=int, default=1, help="with a grid file: runs at a time (1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.experiments.analyses import ANALYSES

    target = Path(args.target)
    if not target.exists():  # a mistyped path, not a sweep that has no finished runs yet
        raise FileNotFoundError(f"{target}: no such file or folder (a sweep folder, or a grid file to sweep first)")
    if target.is_file():
        from softprompt.experiments.grid import load_grid
        from softprompt.experiments.sweep import run_sweep

        grid = load_grid(target)
        sweep = Path(args.sweep_out) if args.sweep_out else grid.out
        if run_sweep(grid, sweep, jobs=args.jobs).failed:
            print("warning: some runs failed; the analysis shows the finished ones")
        target = sweep
    print(ANALYSES[args.name](target, args.out))
    return 0
