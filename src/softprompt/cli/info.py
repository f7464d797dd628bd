"""`softprompt info DIR`: what an artifact holds (method, parameter count, sizes, model, task, metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="describe a saved prompt", description=__doc__)
    p.add_argument("dir", help="artifact folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.artifact import METADATA, TENSORS, read_metadata
    from softprompt.cli import print_json

    meta = read_metadata(args.dir)
    folder = Path(args.dir)
    print_json(
        {
            "method": meta["method"],
            "config": meta["config"],
            "trainable_parameters": meta["num_trainable_parameters"],
            "stored_numbers": meta["stored_numbers"],
            "bytes": {name: (folder / name).stat().st_size for name in (TENSORS, METADATA)},
            "model": meta["model"],
            "task": (meta.get("task") or {}).get("name"),
            "metrics": meta.get("metrics"),
            "library_version": meta["library_version"],
        }
    )
    return 0
