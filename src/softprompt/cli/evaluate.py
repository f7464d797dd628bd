"""`softprompt eval DIR`: score a saved prompt on a split of its task (or another task) and print JSON metrics."""

from __future__ import annotations

import argparse

from softprompt.cli.common import (
    add_data_args,
    add_model_args,
    artifact_task,
    backbone_from_args,
    custom_spec,
    eval_examples,
    resolve_task,
    subset,
    warn_truncated,
)
from softprompt.cli.options import positive_int, whole_number
from softprompt.models.hardware import dtype_name


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="evaluate a saved prompt", description=__doc__)
    p.add_argument("dir", nargs="?", help="artifact folder (omit with --zero-shot)")
    add_data_args(p, split_files=False)
    add_model_args(p, default=None)
    p.add_argument("--split", choices=["train", "validation", "test"], help="split of the task's data (test)")
    p.add_argument("--limit", type=positive_int, help="score a seeded subset of this many examples")
    p.add_argument("--seed", type=whole_number, default=0, help="seed of the --limit subset (0); `train --seed S "
                   "--max-test-examples N` tests on the subset `--split test --limit N --seed S` scores")  # fmt: skip
    p.add_argument("--zero-shot", action="store_true", help="score the task's bare template without any prompt")
    p.add_argument("--batch-size", type=positive_int, default=32, help="examples per forward pass (32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.api import load
    from softprompt.artifact import read_metadata
    from softprompt.cli import print_json
    from softprompt.evaluation import evaluate
    from softprompt.evaluator import LocalEvaluator
    from softprompt.scoring import Scorer

    if args.data and args.split:  # it used to be ignored
        raise ValueError("--data scores every row of its file and --split picks a split of the task's data: pass one")
    args.split = args.split or "test"
    split = args.data or args.split  # what the output names as scored: the file, else the split
    if args.zero_shot:
        if args.dir or not (args.task or custom_spec(args)):
            raise ValueError("--zero-shot takes --task (or --data with its columns) and no artifact folder")
        task = resolve_task(args)
        examples = subset(eval_examples(args, task, args.split), args.limit, args.seed)
        backbone = backbone_from_args(args)
        scorer = Scorer(backbone, task)
        warn_truncated(scorer, {split: examples})
        metrics = evaluate(LocalEvaluator(scorer), examples, None, args.batch_size, progress=not args.quiet)
        print_json({"task": task.name, "split": split, "prompt": None, "metric": task.metrics[0],
                    "dtype": dtype_name(backbone.dtype), **metrics})  # fmt: skip
        return 0
    if not args.dir:
        raise ValueError("name an artifact folder (or use --zero-shot)")
    metadata = read_metadata(args.dir)
    # a stored task stays the prompt's (--task-file then only says how to read --data); one stored without a task
    # takes --task or --task-file, checked before the model loads
    task = args.task if metadata["task"] is not None else artifact_task(args, metadata)
    tuned = load(args.dir, model=backbone_from_args(args, default=metadata["model"]["name"]), task=task)
    examples = subset(eval_examples(args, tuned.task, args.split), args.limit, args.seed)
    warn_truncated(tuned.scorer, {split: examples})
    metrics = evaluate(tuned.evaluator, examples, tuned.artifact.prompt, args.batch_size, progress=not args.quiet)
    print_json({"task": tuned.task.name, "split": split, "method": tuned.artifact.method,
                "dtype": dtype_name(tuned.scorer.backbone.dtype), **metrics})  # fmt: skip
    return 0
