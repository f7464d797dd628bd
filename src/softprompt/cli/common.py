"""Options and helpers shared by subcommands: model choice, data location, task and split selection."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from typing import Any

from softprompt.models import DEFAULT_MODEL
from softprompt.tasks.base import Example, Task


def add_model_args(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    parser.add_argument(
        "--model",
        default=default,
        help=f"embedded model name, local directory or hub id (default: {default or 'the tuned-on model'})",
    )
    parser.add_argument("--max-length", type=int, default=256, help="max text tokens per example (default 256)")


def add_data_args(parser: argparse.ArgumentParser, task_required: bool = False) -> None:
    parser.add_argument("--task", required=task_required, help="built-in task name (sst2, rte, mrpc, cola, ...)")
    parser.add_argument("--data-dir", help="folder with the task files (default: $SOFTPROMPT_DATA_DIR, else the hub)")


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-train-examples", type=int, help="use a seeded subset of the training split")
    parser.add_argument("--max-eval-examples", type=int, help="use a seeded subset of the validation split")
    parser.add_argument("--max-test-examples", type=int, help="use a seeded subset of the test split")


def resolve_task(args: argparse.Namespace) -> Task:
    from softprompt.tasks.builtin import get_task

    if not args.task:
        raise ValueError("name a task with --task (see `softprompt train --help`)")
    return get_task(args.task)


def subset(examples: Sequence[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A seeded random subset (order kept) when `limit` is set and smaller than the split."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit <= 0:
        raise ValueError(f"example limits must be positive, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def load_splits(args: argparse.Namespace, task: Task) -> tuple[list[Example], list[Example], list[Example], dict]:
    """train, validation, test (each possibly subsampled) and a record of what was used, for the artifact."""
    seed = getattr(args, "seed", 0)
    train = subset(task.load("train", args.data_dir), args.max_train_examples, seed)
    validation = subset(task.load("validation", args.data_dir), args.max_eval_examples, seed)
    test = subset(task.load("test", args.data_dir), args.max_test_examples, seed)
    record: dict[str, Any] = {
        "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
        "limits_seed": seed,
        "task_splits": task.split_info,
    }
    return train, validation, test, record
