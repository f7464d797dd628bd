"""`softprompt predict DIR TEXT...`: label and label probabilities for new text, one JSON line per input.

The task is the one --task or --task-file names (as for `eval`), else the artifact's own; a prompt stored without
one (imported from PEFT, say) needs the flag. What can be refused is refused before the model loads: text that is
not UTF-8, and inputs that do not fit the task (a sentence-pair task needs a --text-pair per text, others none).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from softprompt.cli.common import (
    add_model_args,
    add_task_arg,
    add_task_file_arg,
    artifact_task,
    backbone_from_args,
)
from softprompt.utf8 import check_utf8

if TYPE_CHECKING:
    from softprompt.tasks.base import Task

NOT_UTF8 = "; the command line passed bytes that are not UTF-8 (check the terminal's encoding)"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="predict with a saved prompt", description=__doc__)
    p.add_argument("dir", help="artifact folder")
    p.add_argument("texts", nargs="+", help="input text(s); use --text-pair for sentence-pair tasks")
    p.add_argument("--text-pair", action="append", help="second text for pair tasks (once per input text)")
    add_task_arg(p)
    add_task_file_arg(p, " (for a prompt stored without a task; else it replaces the stored one)")
    add_model_args(p, default=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.api import load
    from softprompt.artifact import read_metadata
    from softprompt.cli import print_json

    pairs = args.text_pair or []
    for text in args.texts:
        check_utf8(text, f"text {text!r}", NOT_UTF8)
    for text in pairs:
        check_utf8(text, f"--text-pair {text!r}", NOT_UTF8)
    metadata = read_metadata(args.dir)
    task = artifact_task(args, metadata)
    check_pairs(task, len(args.texts), len(pairs))
    tuned = load(args.dir, model=backbone_from_args(args, default=metadata["model"]["name"]), task=task)
    inputs = list(zip(args.texts, pairs, strict=True)) if pairs else list(args.texts)
    for text, pred in zip(args.texts, tuned.predict(inputs), strict=True):
        if tuned.task.kind == "generation":
            print_json({"text": text, "answer": pred.label})
        else:
            print_json({"text": text, "label": pred.label, "scores": pred.scores})
    return 0


def check_pairs(task: Task, texts: int, pairs: int) -> None:
    """A pair task (its template has {text_pair}) scores each text with its --text-pair; a single-text task takes
    none (either mistake used to be scored silently: with an empty second text, or without the one given)."""
    if task.takes_pair and not pairs:
        raise ValueError(f"task {task.name!r} scores sentence pairs: pass --text-pair SECOND once per text")
    if not task.takes_pair and pairs:
        raise ValueError(f"task {task.name!r} scores single texts: drop --text-pair")
    if pairs and pairs != texts:
        raise ValueError(f"got {texts} texts but {pairs} --text-pair values; pass one --text-pair per text")
