"""`softprompt predict DIR TEXT...`: label and label probabilities for new text, one JSON line per input."""

from __future__ import annotations

import argparse

from softprompt.cli.common import add_model_args, backbone_from_args


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="predict with a saved prompt", description=__doc__)
    p.add_argument("dir", help="artifact folder")
    p.add_argument("texts", nargs="+", help="input text(s); use --text-pair for sentence-pair tasks")
    p.add_argument("--text-pair", action="append", help="second text for pair tasks (once per input text)")
    add_model_args(p, default=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.api import load
    from softprompt.artifact import read_metadata
    from softprompt.cli import print_json

    pairs = args.text_pair or []
    if pairs and len(pairs) != len(args.texts):
        raise ValueError(f"got {len(args.texts)} texts but {len(pairs)} --text-pair values")
    tuned = load(args.dir, model=backbone_from_args(args, default=read_metadata(args.dir)["model"]["name"]))
    inputs = list(zip(args.texts, pairs, strict=True)) if pairs else list(args.texts)
    for text, pred in zip(args.texts, tuned.predict(inputs), strict=True):
        if tuned.task.kind == "generation":
            print_json({"text": text, "answer": pred.label})
        else:
            print_json({"text": text, "label": pred.label, "scores": pred.scores})
    return 0
