"""`softprompt info DIR`: what an artifact holds (method, parameter count, sizes, model, task, metrics).

The artifact is verified in full (checksums, tensors, config) first, so `info` on a bad artifact says what is wrong
in one line and exits 2; what it prints is always strict JSON (the metadata holds no NaN or Infinity).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="describe a saved prompt", description=__doc__)
    p.add_argument("dir", help="artifact folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.artifact import METADATA, TENSORS, prompt_config, read_artifact

    meta, _ = read_artifact(args.dir)
    note = prompt_config(meta, args.dir).storage_note()
    folder = Path(args.dir)
    summary = {
        "method": meta["method"],
        "config": meta["config"],
        "trainable_parameters": meta["num_trainable_parameters"],
        "stored_numbers": meta["stored_numbers"],
        "bytes": {name: (folder / name).stat().st_size for name in (TENSORS, METADATA)},
        "model": meta["model"],
        "task": (meta["task"] or {}).get("name"),
        "metrics": meta["metrics"],
        "library_version": meta["library_version"],
    }
    if note:
        summary["stored_as"] = note
    print(json.dumps(summary, allow_nan=False))
    return 0
