"""`softprompt blackbox`: tune a prompt with forward passes only (BBT, BBTv2, gradient-free ULPT) via CMA-ES.

Few-shot setting of the BBT papers: k examples per label for train and another k per label for dev, both drawn
(seeded) from the task's train split; test is the task's test split. The model is local (--model) or a remote
`softprompt serve-lm` endpoint (--endpoint) that exposes no weights or gradients.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from softprompt.cli.common import add_data_args, add_model_args, backbone_from_args, resolve_task, subset


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="tune a soft prompt without gradients (CMA-ES)", description=__doc__)
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--endpoint", help="URL of a `softprompt serve-lm` endpoint to tune against instead of --model")
    p.add_argument("--method", default="bbt", choices=["bbt", "bbtv2", "ulpt"], help="(default bbt)")
    p.add_argument("--shots", type=int, default=16, help="examples per label for train, and again for dev (16)")
    p.add_argument("--budget", type=int, default=8000, help="model calls: candidates scored on the train set (8000)")
    p.add_argument("--popsize", type=int, default=20, help="CMA-ES population size (20)")
    p.add_argument("--sigma", type=float, help="CMA-ES step size (default: 1 for bbt/ulpt, 0.2 for bbtv2)")
    p.add_argument("--alpha", type=float, help="projection std factor (default: 1 for bbt, 0.2 for bbtv2)")
    p.add_argument("--dim", type=int, default=500, help="searched dimension d, per layer for bbtv2 (500)")
    p.add_argument("--prompt-len", type=int, default=50, help="number of prompt vectors n (50)")
    p.add_argument("--rank", type=int, default=2, help="ulpt: rank r of z (2)")
    p.add_argument("--search-scale-shift", action="store_true", help="ulpt: also search scale and shift (+2·D)")
    p.add_argument("--loss", default="ce", choices=["ce", "hinge", "neg_accuracy"], help="fitness (default ce)")
    p.add_argument("--bound", type=float, help="box constraint [-b, b] on the searched vector (default none)")
    p.add_argument("--init", choices=["vocab", "normal"], help="P₀: token embeddings (local default) or random")
    p.add_argument("--eval-every", type=int, default=100, help="model calls between dev evaluations (100)")
    p.add_argument("--chunk-size", type=int, default=64, help="rows per forward pass when scoring locally (64)")
    p.add_argument("--max-test-examples", type=int, help="score a seeded subset of the test split")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-shot sample, P₀, projections and CMA-ES")
    p.add_argument("--out", required=True, help="output folder for the artifact, log and checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the search saved in --out (exactly)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.blackbox.search import BlackBoxConfig, run_search
    from softprompt.cli import print_json
    from softprompt.tasks.fewshot import train_dev_k_shot

    task = resolve_task(args)
    config = BlackBoxConfig(
        method=args.method,
        dim=args.dim,
        prompt_len=args.prompt_len,
        rank=args.rank,
        search_scale_shift=args.search_scale_shift,
        popsize=args.popsize,
        sigma=args.sigma,
        alpha=args.alpha,
        budget=args.budget,
        loss=args.loss,
        eval_every=args.eval_every,
        seed=args.seed,
        bounds=args.bound,
        init=args.init or ("normal" if args.endpoint else "vocab"),  # an endpoint cannot embed tokens for P₀
    )
    train, dev = train_dev_k_shot(task.load("train", args.data_dir), args.shots, args.seed, len(task.labels))
    test = subset(task.load("test", args.data_dir), args.max_test_examples, args.seed)
    if args.endpoint:
        from softprompt.remote.client import RemoteEvaluator

        evaluator = RemoteEvaluator(args.endpoint, task)
    else:
        from softprompt.blackbox.local import LocalEvaluator
        from softprompt.scoring import Scorer

        backbone = backbone_from_args(args)
        evaluator = LocalEvaluator(Scorer(backbone, task), chunk_size=args.chunk_size)
    model = evaluator.describe()
    print(
        f"{args.method}: CMA-ES on {model.get('name')} (D={evaluator.hidden_size}, L={evaluator.num_layers}); "
        f"{len(train)} train / {len(dev)} dev ({args.shots} per label) / {len(test)} test; budget {args.budget} calls"
    )
    data = {
        "shots": args.shots,
        "sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "seed": args.seed,
        "dev_from": "train split (disjoint from train)",
        "task_splits": task.split_info,
    }
    result = run_search(
        evaluator,
        task,
        train,
        dev,
        config,
        Path(args.out),
        test=test,
        resume=args.resume,
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
        }
    )
    return 0
