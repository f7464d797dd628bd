"""`softprompt plot RUN_OR_SWEEP`: training curves (from log.jsonl) of one run, or of every group of a sweep (a panel
per task, the mean over seeds), as curves.png with the numbers behind it in curves.csv and curves.md."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="plot the training curves of a run or a sweep", description=__doc__)
    p.add_argument("target", help="a run folder (with log.jsonl) or a sweep folder")
    p.add_argument("--out", help="folder for curves.png/.csv/.md (default: the target folder)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.experiments.analyses import curves

    print(curves(args.target, args.out))
    return 0
