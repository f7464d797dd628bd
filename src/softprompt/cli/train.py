"""`softprompt train`: tune a prompt by gradient descent (prompt tuning, ULPT, ...) and save the artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from softprompt.cli.common import (
    add_data_args,
    add_limit_args,
    add_model_args,
    backbone_from_args,
    load_splits,
    resolve_task,
    warn_truncated,
)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="tune a soft prompt with gradients", description=__doc__)
    add_data_args(p)
    add_model_args(p)
    add_limit_args(p)
    p.add_argument("--method", default="ulpt", help="prompt parametrisation: ulpt (default), prompt_tuning")
    p.add_argument("--prompt-len", type=int, default=100, help="number of prompt vectors n (default 100)")
    p.add_argument("--rank", type=int, help="ULPT: dimension r of the learnable prompt (default 2)")
    p.add_argument("--projection-seed", type=int, help="ULPT: seed of the frozen random projection (default 0)")
    p.add_argument("--no-scale", action="store_true", help="ULPT ablation: no learnable scale")
    p.add_argument("--no-shift", action="store_true", help="ULPT ablation: no learnable shift")
    p.add_argument("--init-text", help="prompt: initialise from the embeddings of this text")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (batch-size must divide)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.03 for ulpt, 0.01 for prompt)")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 10%% of --steps)")
    p.add_argument("--eval-every", type=int, default=100, help="evaluate on validation every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batch order and subsets")
    p.add_argument("--out", required=True, help="output folder for the artifact, logs and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--compare-zero-shot", action="store_true", help="also score the bare template (no prompt) on the test split"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


# From a 40-step probe on SST-2 with SmolLM2 (lr 3e-3/1e-2 for PT, 1e-2/3e-2/1e-1 for ULPT): the best of each.
DEFAULT_LR = {"ulpt": 3e-2, "prompt_tuning": 1e-2}


def run(args: argparse.Namespace) -> int:
    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.cli import print_json
    from softprompt.evaluation import evaluate
    from softprompt.scoring import Scorer
    from softprompt.training.trainer import TrainConfig, train_prompt

    task = resolve_task(args)
    options = {
        "rank": args.rank,
        "seed": args.projection_seed,
        "use_scale": False if args.no_scale else None,
        "use_shift": False if args.no_shift else None,
        "init": "text" if args.init_text else None,
        "init_text": args.init_text,
    }
    prompt_config = make_prompt_config(args.method, args.prompt_len, **options)  # validate before loading anything
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr or DEFAULT_LR.get(args.method, 1e-2),
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else args.steps // 10,
        eval_every=min(args.eval_every, args.steps),
        seed=args.seed,
    )
    train, validation, test, data_record = load_splits(args, task)
    backbone = backbone_from_args(args)
    scorer = Scorer(backbone, task)
    warn_truncated(scorer, {"train": train, "validation": validation, "test": test})
    prompt = new_prompt(prompt_config, backbone, seed=args.seed)
    print(
        f"{args.method}: {prompt.num_trainable_parameters():,} trainable parameters on {backbone.name} "
        f"(D={backbone.hidden_size}); {len(train):,} train / {len(validation):,} validation / {len(test):,} test"
    )
    zero_shot = evaluate(scorer, test, None, progress=not args.quiet) if args.compare_zero_shot else None
    result = train_prompt(
        scorer,
        prompt,
        train,
        validation,
        config,
        Path(args.out),
        test=test,
        resume=args.resume,
        extra_metadata={"data": data_record},
        progress=not args.quiet,
    )
    summary = {
        "out": str(result.out_dir),
        "best_step": result.best_step,
        "validation": result.best_validation,
        "test": result.test,
        "trainable_parameters": prompt.num_trainable_parameters(),
    }
    if zero_shot is not None:
        summary["zero_shot_test"] = zero_shot
    print_json(summary)
    return 0
