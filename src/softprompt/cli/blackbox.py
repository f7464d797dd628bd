"""`softprompt blackbox`: tune a prompt with forward passes only (BBT, BBTv2, gradient-free ULPT) via CMA-ES.

Few-shot setting of the BBT papers: k examples per label for train and another k per label for dev, both drawn
(seeded) from the task's train split; test is the task's test split. The model is local (--model) or a remote
`softprompt serve-lm` endpoint (--endpoint) that exposes no weights or gradients. Options come from the searched
method's config and `SearchConfig`, so their defaults are the Python API's.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from softprompt.blackbox.search import METHODS, SearchConfig
from softprompt.cli.common import (
    add_api_key_arg,
    add_data_args,
    add_model_args,
    add_run_args,
    api_key_from_env,
    backbone_from_args,
    resolve_task,
    subset,
)
from softprompt.cli.options import add_options, given, positive_int
from softprompt.prompts import REGISTRY

RENAME = {"use_scale": "scale", "use_shift": "shift", "bounds": "bound"}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="tune a soft prompt without gradients (CMA-ES)", description=__doc__)
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--endpoint", help="URL of a `softprompt serve-lm` endpoint to tune against instead of --model")
    add_api_key_arg(p, "--endpoint: send")
    p.add_argument("--method", default="bbt", choices=METHODS, help="(default bbt)")
    p.add_argument(
        "--shots", type=positive_int, default=16, help="examples per label for train, and again for dev (16)"
    )
    search = p.add_argument_group("search")
    seen = add_options(search, [SearchConfig], exclude={"prompt", "sigma"}, rename=RENAME)
    add_options(p.add_argument_group("method options (a method refuses another's)"),
                [REGISTRY[m][0] for m in METHODS], rename=RENAME, seen=seen)  # fmt: skip
    if "sigma" not in seen:  # BBT's config has a sigma: for ULPT it is the search's own step size
        search.add_argument("--sigma", type=float, help="CMA-ES initial step size (default: the method's)")
    p.add_argument("--search-scale-shift", action="store_true", help="ulpt: also search scale and shift (+2·D)")
    p.add_argument(
        "--chunk-size", type=positive_int, default=64, help="rows per forward pass when scoring locally (64)"
    )
    p.add_argument("--max-test-examples", type=positive_int, help="score a seeded subset of the test split")
    add_run_args(p)
    p.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> SearchConfig:
    """The search's settings (method, projection, CMA-ES, budget), validated before anything is loaded (and by
    `softprompt sweep` for every run of a grid before the first one starts). BBTv2's layer count is the model's,
    set once the model is there."""
    from softprompt.api import make_prompt_config
    from softprompt.cli.common import method_options

    if args.shots < 1 or args.chunk_size < 1:
        raise ValueError("--shots and --chunk-size must be positive")
    search = given(args, SearchConfig, exclude={"prompt", "sigma"})
    options = method_options(args)
    options.setdefault("projection_seed", search.get("seed", 0))
    options.setdefault("init", "normal" if args.endpoint else "vocab")  # an endpoint cannot embed tokens for P₀
    if args.method == "ulpt":
        options.pop("init")
        options.setdefault("use_scale", args.search_scale_shift)
        options.setdefault("use_shift", args.search_scale_shift)
        search["sigma"] = args.sigma
    elif args.sigma is not None:
        options["sigma"] = args.sigma
    return SearchConfig(prompt=make_prompt_config(args.method, **options), **search)


def run(args: argparse.Namespace) -> int:
    from softprompt.blackbox.search import run_search
    from softprompt.cli import print_json
    from softprompt.tasks.fewshot import train_dev_k_shot

    config = check(args)
    api_key = api_key_from_env(args.api_key_env)  # before any work: a missing key is the user's to fix
    task = resolve_task(args)
    train, dev = train_dev_k_shot(task.load("train", args.data_dir), args.shots, config.seed, len(task.labels),
                                  task.labels)  # fmt: skip
    test = subset(task.load("test", args.data_dir), args.max_test_examples, config.seed)
    if args.endpoint:
        from softprompt.remote.client import RemoteEvaluator

        evaluator = RemoteEvaluator(args.endpoint, task, api_key=api_key)
    else:
        from softprompt.evaluator import LocalEvaluator
        from softprompt.scoring import Scorer

        backbone = backbone_from_args(args)
        evaluator = LocalEvaluator(Scorer(backbone, task), chunk_size=args.chunk_size)
    if args.method == "bbtv2":
        config = replace(config, prompt=replace(config.prompt, num_layers=evaluator.num_layers))
    model = evaluator.describe()
    print(
        f"{args.method}: CMA-ES on {model.get('name')} (D={evaluator.hidden_size}, L={evaluator.num_layers}); "
        f"{len(train)} train / {len(dev)} dev ({args.shots} per label) / {len(test)} test; "
        f"budget {config.budget} calls"
    )
    data = {
        "shots": args.shots,
        "sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "seed": config.seed,
        "dev_from": "train split (disjoint from train)",
        "task_splits": task.split_info,
    }
    result = run_search(
        evaluator,
        train,
        dev,
        config,
        Path(args.out),
        test=test,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        extra_metadata={"data": data},
    )
    print_json(
        {
            "out": str(result.out_dir),
            "calls": result.calls,
            "best_calls": result.best_calls,
            "dev": result.best_validation,
            "test": result.test,
            "searched_parameters": result.prompt.num_trainable_parameters(),
            "ask_tell_overhead_share": round(result.timing["overhead_share"], 4),
            "dtype": model.get("dtype"),  # the number format the model ran in, here or at the endpoint
        }
    )
    return 0
