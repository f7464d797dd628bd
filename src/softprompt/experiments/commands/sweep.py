"""`softprompt sweep GRID.yaml`: run a grid of training / black-box runs and write the results table.

Finished runs are skipped and interrupted ones resume, so the same command continues a sweep after a crash or a
kill. The grid format is in softprompt/experiments/grid.py (tasks, models, seeds, common settings, method blocks
whose list-valued settings are axes).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="run a grid of runs and write the results table", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("grid", help="grid file (YAML or JSON)")
    p.add_argument("--out", help="sweep folder (default: the grid's `out`, else runs/sweeps/<grid name>)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine, each a subprocess (1)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: the grid's resources.cpus, else 1)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each run as a Ray task: no ADDRESS starts a local Ray, 'auto' or host:port joins a "
                        "cluster (OUT must then be on storage every node sees)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="list the runs and their commands; run nothing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.experiments.grid import load_grid
    from softprompt.experiments.sweep import run_sweep

    grid = load_grid(args.grid)
    out = Path(args.out) if args.out else grid.out
    if args.dry_run:
        for spec in grid.runs:
            print(f"{spec.name}: softprompt {' '.join(spec.argv(out / spec.name))}")
        return 0
    report = run_sweep(grid, out, jobs=args.jobs, threads=args.threads, ray_address=args.ray)
    return 1 if report.failed else 0
