"""Options and helpers shared by subcommands: model choice, data location, task and split selection."""

from __future__ import annotations

import argparse
import os
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softprompt.cli.options import fields_of, positive_int
from softprompt.models import DEFAULT_MODEL
from softprompt.models.hardware import DTYPE_CHOICES
from softprompt.tasks.base import Example, Task

if TYPE_CHECKING:
    from softprompt.models import Backbone
    from softprompt.scoring import Scorer
    from softprompt.tasks.custom import CustomTaskSpec


def add_model_args(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    parser.add_argument(
        "--model",
        default=default,
        help=f"embedded model name, local directory or hub id (default: {default or 'the tuned-on model'})",
    )
    parser.add_argument(
        "--max-length", type=positive_int, default=256, help="max text tokens per example (default 256)"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="dtype of the frozen weights (default auto: bfloat16 where the hardware runs it natively, i.e. CUDA "
        "with bf16 or a CPU with AVX512-BF16/AMX, else float32)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (default: this process's GPU under accelerate/torchrun, else cuda:0 where "
        "CUDA is available, else cpu), cpu, cuda, cuda:N or mps",
    )


def backbone_from_args(args: argparse.Namespace, default: str | None = None) -> Backbone:
    """The frozen model named by --model (else `default`, else the embedded default), in --dtype."""
    from softprompt.models import load_backbone

    name = args.model or default or DEFAULT_MODEL
    return load_backbone(name, max_length=args.max_length, dtype=args.dtype, device=args.device)


def add_task_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--task", required=required, help="built-in task name (sst2, rte, mrpc, cola, ...)")


def add_task_file_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, note: str = "") -> None:
    parser.add_argument("--task-file", metavar="FILE", help=f"YAML/JSON task definition{note}")


def add_data_args(parser: argparse.ArgumentParser, task_required: bool = False, split_files: bool = True) -> None:
    add_task_arg(parser, task_required)
    parser.add_argument("--data-dir", help="folder with the task files (default: $SOFTPROMPT_DATA_DIR, else the hub)")
    own = parser.add_argument_group("your own data (instead of --task)")
    if split_files:
        own.add_argument("--data", metavar="FILE", help="training file: .csv, .tsv, .jsonl or .parquet")
        own.add_argument("--validation", metavar="FILE", help="validation file (default: 10%% carved from --data)")
        own.add_argument("--test", metavar="FILE", help="test file (default: 10%% carved from --data)")
        own.add_argument("--allow-overlap", action="store_true", default=None,
                         help="accept a validation/test file that is the training file (else an error)")  # fmt: skip
    else:
        own.add_argument("--data", metavar="FILE", help="score every row of this file (.csv, .tsv, .jsonl, .parquet)")
    add_task_file_arg(own, " (the flags below override it)")
    own.add_argument("--text-column", help="column with the input text (default: text; eval: the artifact's)")
    own.add_argument("--text-pair-column", help="column with the second text of a sentence-pair task")
    own.add_argument("--label-column", help="column with the class label (classification)")
    own.add_argument("--target-column", help="column with the answer text (generation)")
    own.add_argument("--template", help=r"model input with {text} and {text_pair}; \n is a newline "
                     r"(default: '{text}\nLabel:')")  # fmt: skip
    own.add_argument("--verbalizer", nargs="+", metavar="LABEL=WORD",
                     help="word for each label, e.g. positive=' good' (default: ' <label>')")  # fmt: skip
    own.add_argument("--metrics", nargs="+", help="metric names; the first picks the best checkpoint")


def run_folder(text: str) -> str:
    """An argparse type: a folder to write a run into, refused at the parser if it names a file (not after loading
    the model)."""
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; a run writes into a folder")
    return text


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Where a run writes, and whether it continues or replaces what is there (softprompt.runs.RunFolder)."""
    parser.add_argument(
        "--out", required=True, type=run_folder, help="output folder for the artifact, log and checkpoints"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out (exactly)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run or artifact in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """Every method option the user typed (a method refuses the options it does not take)."""
    from softprompt.prompts import REGISTRY

    names = {f.name for config, _ in REGISTRY.values() for f in fields_of(config)}
    options = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if options.get("init_text") is not None and "init" not in options:
        options["init"] = "text"  # --init-text alone means: start from this text
    return options


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-train-examples", type=positive_int, help="use a seeded subset of the training split")
    parser.add_argument("--max-eval-examples", type=positive_int, help="use a seeded subset of the validation split")
    parser.add_argument("--max-test-examples", type=positive_int, help="use a seeded subset of the test split")


def _custom_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The own-data options given on the command line (absent ones left out, so they do not override)."""
    from softprompt.tasks.custom import parse_verbalizer

    template = getattr(args, "template", None)
    verbalizer = getattr(args, "verbalizer", None)
    flags = {
        "train": getattr(args, "data", None),
        "validation": getattr(args, "validation", None),
        "test": getattr(args, "test", None),
        "text_column": getattr(args, "text_column", None),
        "text_pair_column": getattr(args, "text_pair_column", None),
        "label_column": getattr(args, "label_column", None),
        "target_column": getattr(args, "target_column", None),
        # A shell passes "\n" literally; templates almost always mean a newline.
        "template": template.replace("\\n", "\n").replace("\\t", "\t") if template else None,
        "verbalizer": parse_verbalizer(verbalizer) if verbalizer else None,
        "metrics": getattr(args, "metrics", None),
        "allow_overlap": getattr(args, "allow_overlap", None),
    }
    return {k: v for k, v in flags.items() if v is not None}


def custom_spec(args: argparse.Namespace) -> CustomTaskSpec | None:
    """The user's own task from --task-file and the flags (flags win), or None when neither is given."""
    from softprompt.tasks.custom import CustomTaskSpec, load_spec_file

    flags, task_file = _custom_flags(args), getattr(args, "task_file", None)
    if not flags and not task_file:
        return None
    return (load_spec_file(task_file) if task_file else CustomTaskSpec()).merged(**flags)


@contextmanager
def reported_warnings() -> Iterator[None]:
    """Data warnings (a file decoded as cp1252, ...) as one `warning:` line each on stderr."""
    from softprompt.tasks.custom import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        yield
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def resolve_task(args: argparse.Namespace) -> Task:
    from softprompt.tasks.builtin import get_task

    spec = custom_spec(args)
    if spec is not None:
        from softprompt.tasks.custom import build_custom_task

        if args.task:
            raise ValueError("--task is a built-in task; for your own files use --data/--task-file without --task")
        with reported_warnings():
            return build_custom_task(spec)[0]  # the task carries its loaded splits for load_splits
    if not args.task:
        raise ValueError("name a task with --task, or your own files with --data (see `softprompt train --help`)")
    return get_task(args.task)


def artifact_task(args: argparse.Namespace, metadata: dict[str, Any]) -> Task:
    """The task a saved prompt is used with: --task or --task-file, else the one stored in its artifact."""
    if args.task or args.task_file:
        return resolve_task(args)
    if metadata["task"] is None:
        raise ValueError(f"{args.dir} stores no task definition; pass --task NAME or --task-file PATH")
    return Task.from_dict(metadata["task"])


def subset(examples: Sequence[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A seeded random subset (order kept) when `limit` is set and smaller than the split."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit <= 0:
        raise ValueError(f"example limits must be positive, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def load_splits(
    args: argparse.Namespace, task: Task, seed: int = 0
) -> tuple[list[Example], list[Example], list[Example], dict]:
    """train, validation, test (each possibly subsampled) and a record of what was used, for the artifact.

    `--shots K` (train): K per label for train and K more for validation, both from the training split, exactly the
    examples `softprompt blackbox --shots K` searches on with the same seed (tasks.fewshot.train_dev_k_shot), so
    gradient and gradient-free runs of a few-shot table see the same data."""
    shots = getattr(args, "shots", None)
    if shots is not None:
        from softprompt.tasks.fewshot import train_dev_k_shot

        if args.max_train_examples is not None or args.max_eval_examples is not None:
            raise ValueError("--shots picks the train and validation examples; drop --max-train/eval-examples")
        train, validation = train_dev_k_shot(
            task.load("train", args.data_dir), shots, seed, len(task.labels), task.labels
        )
    else:
        train = subset(task.load("train", args.data_dir), args.max_train_examples, seed)
        validation = subset(task.load("validation", args.data_dir), args.max_eval_examples, seed)
    test = subset(task.load("test", args.data_dir), args.max_test_examples, seed)
    record: dict[str, Any] = {
        "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
        "limits_seed": seed,
        **({"shots": shots} if shots is not None else {}),
    }
    return train, validation, test, record


def eval_examples(args: argparse.Namespace, task: Task, split: str) -> list[Example]:
    """What `eval` scores: every row of --data (read with the task's stored columns unless overridden), else a split.

    The task's labels stay fixed, so a saved prompt is scored on new files exactly as it was tuned.
    """
    from softprompt.tasks.custom import CustomTaskSpec, load_spec_file, read_examples, spec_from_task

    flags = _custom_flags(args)
    if {"template", "verbalizer", "metrics"} & set(flags) and not getattr(args, "zero_shot", False):
        raise ValueError("--template/--verbalizer/--metrics would change a tuned prompt's task; it keeps its own")
    if not getattr(args, "data", None):
        with reported_warnings():
            return task.load(split, args.data_dir)
    base = load_spec_file(args.task_file) if getattr(args, "task_file", None) else spec_from_task(task)
    spec = (base or CustomTaskSpec()).merged(**{k: v for k, v in flags.items() if k != "train"})
    with reported_warnings():
        return read_examples(task, args.data, spec)


def count_truncated(scorer: Scorer, examples: Sequence[Example], batch_size: int = 256) -> int:
    """How many examples the backbone cuts to fit its length limit (tokenisation only, no forward pass)."""
    total = 0
    for start in range(0, len(examples), batch_size):
        batch = scorer.encode(examples[start : start + batch_size])
        total += -(-batch.encoded.num_truncated // batch.rows_per_example)  # rows are per label for multi-token
    return total


def warn_truncated(scorer: Scorer, splits: dict[str, Sequence[Example]]) -> None:
    """Over-long rows are never an error (the backbone keeps the end of the text), but the user should know."""
    for split, examples in splits.items():
        n = count_truncated(scorer, examples) if examples else 0
        if n:
            print(
                f"warning: {n:,} of {len(examples):,} {split} examples are longer than {scorer.backbone.max_length} "
                "tokens (--max-length) and were truncated, keeping the end of the text",
                file=sys.stderr,
            )


def add_api_key_arg(parser: argparse.ArgumentParser, what: str) -> None:
    help_text = f"{what} the API key held by environment variable NAME (never on the command line)"
    parser.add_argument("--api-key-env", metavar="NAME", help=help_text)


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable `name` (None when no name is given); unset or empty is an error."""
    if name is None:
        return None
    value = os.environ.get(name, "")
    if not value.strip():
        raise ValueError(f"--api-key-env {name}: the environment variable {name} is not set or is empty")
    return value.strip()
