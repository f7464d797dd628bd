"""`softprompt train`: tune a prompt by gradient descent (prompt tuning, ULPT, ...) and save the artifact.

Method options come from the method configs and training options from `TrainConfig` (softprompt/cli/options.py),
so the defaults here are the Python API's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from softprompt.cli.common import (
    add_data_args,
    add_limit_args,
    add_model_args,
    add_run_args,
    backbone_from_args,
    load_splits,
    method_options,
    resolve_task,
    warn_truncated,
)
from softprompt.cli.options import add_options, given, positive_int
from softprompt.models.hardware import dtype_name
from softprompt.prompts import REGISTRY, PromptConfig
from softprompt.training.trainer import TrainConfig

RENAME = {"use_scale": "scale", "use_shift": "shift"}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="tune a soft prompt with gradients", description=__doc__)
    add_data_args(p)
    add_model_args(p)
    add_limit_args(p)
    p.add_argument("--shots", type=positive_int, help="few-shot: K examples per label to train on and K more to "
                   "validate on, from the training split (the same as `softprompt blackbox --shots K`)")  # fmt: skip
    p.add_argument("--method", default="ulpt", choices=sorted(REGISTRY), help="prompt parametrisation (ulpt)")
    seen = add_options(p.add_argument_group("training"), [TrainConfig])
    add_options(p.add_argument_group("method options (a method refuses another's)"),
                [config for config, _ in REGISTRY.values()], rename=RENAME, seen=seen)  # fmt: skip
    add_run_args(p)
    p.add_argument(
        "--compare-zero-shot", action="store_true", help="also score the bare template (no prompt) on the test split"
    )
    p.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> tuple[PromptConfig, TrainConfig]:
    """The method's and the training's settings as the run will use them (the method's own lr if none is given),
    validated before anything is loaded (and by `softprompt sweep` for every run of a grid before the first one
    starts, so `lr: 0.03` on ULPT is the same run as no lr)."""
    from softprompt.api import make_prompt_config

    prompt_config = make_prompt_config(args.method, **method_options(args))
    return prompt_config, TrainConfig(**given(args, TrainConfig)).resolved(prompt_config.default_lr)


def run(args: argparse.Namespace) -> int:
    from softprompt.api import new_prompt
    from softprompt.cli import print_json
    from softprompt.evaluation import evaluate
    from softprompt.evaluator import LocalEvaluator
    from softprompt.scoring import Scorer
    from softprompt.training.trainer import train_prompt

    prompt_config, config = check(args)
    task = resolve_task(args)
    train, validation, test, data_record = load_splits(args, task, config.seed)
    backbone = backbone_from_args(args)
    scorer = Scorer(backbone, task)
    warn_truncated(scorer, {"train": train, "validation": validation, "test": test})
    prompt = new_prompt(prompt_config, backbone, seed=config.seed)
    # Counted before training: the prompt ends as the stored one, which for residual PT is folded (its MLP dropped)
    trainable = prompt.num_trainable_parameters()
    print(
        f"{args.method}: {trainable:,} trainable parameters on {backbone.name} "
        f"(D={backbone.hidden_size}); {len(train):,} train / {len(validation):,} validation / {len(test):,} test"
    )
    evaluator = LocalEvaluator(scorer)
    zero_shot = evaluate(evaluator, test, None, progress=not args.quiet) if args.compare_zero_shot else None
    result = train_prompt(
        scorer,
        prompt,
        train,
        validation,
        config,
        Path(args.out),
        test=test,
        resume=args.resume,
        overwrite=args.overwrite,
        extra_metadata={"data": data_record},
        progress=not args.quiet,
    )
    if result.replica:
        return 0  # process 0 prints the run's summary
    summary = {
        "out": str(result.out_dir),
        "best_step": result.best_step,
        "validation": result.best_validation,
        "test": result.test,
        "trainable_parameters": trainable,
        "dtype": dtype_name(backbone.dtype),
    }
    if zero_shot is not None:
        summary["zero_shot_test"] = zero_shot
    print_json(summary)
    return 0
