"""Few-shot quality: zero-shot vs BBT vs BBTv2 vs gradient-free ULPT vs gradient ULPT, mean ± std over seeds.

The BBT setting for every method: per seed, k examples per label for train and another k per label for dev, both
from the task's train split (`train_dev_k_shot`); dev picks the best prompt; test is the task's test split
(a seeded subset with --max-test-examples). Black-box methods run `run_search` (CMA-ES, forward passes only) with
`--budget` model calls; gradient ULPT runs `train_prompt` for `--grad-steps` AdamW steps on the same train/dev.

    python bench/fewshot_quality.py --model tiny --budget 40 --grad-steps 5 --seeds 0 --max-test-examples 32
    python bench/fewshot_quality.py --tasks sst2 rte --seeds 0 1 2 --budget 200   # SmolLM2; size it to the machine

Cost on SmolLM2 is dominated by forward passes over (train × candidates): one model call = one forward over the
2k train examples (32 for a 16-shot binary task); plan the budget from a measured call time (see population_eval).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_results

from softprompt.api import make_prompt_config, new_prompt
from softprompt.blackbox.search import SearchConfig, run_search
from softprompt.evaluation import evaluate
from softprompt.evaluator import LocalEvaluator
from softprompt.models import DEFAULT_MODEL, Backbone, load_backbone
from softprompt.models.inputs import PromptInputs
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task
from softprompt.training.trainer import TrainConfig, train_prompt

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("zero-shot", "bbt", "bbtv2", "ulpt-cma", "ulpt-grad")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or local path; 'tiny' = testing")
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR") or str(DEFAULT_DATA))
    p.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--shots", type=int, default=16, help="per label, for train and again for dev")
    p.add_argument("--max-test-examples", type=int, default=200, help="seeded test subset (0: the whole split)")
    p.add_argument("--budget", type=int, default=200, help="model calls per black-box search (papers: 8000)")
    p.add_argument("--popsize", type=int, default=20)
    p.add_argument("--dim", type=int, default=500, help="BBT/BBTv2 d")
    p.add_argument("--prompt-len", type=int, default=50, help="n for every method")
    p.add_argument("--rank", type=int, default=2, help="ULPT rank (both ULPT variants)")
    p.add_argument("--eval-every", type=int, default=100, help="black-box: calls between dev evaluations")
    p.add_argument("--chunk-size", type=int, default=64, help="rows per forward pass in black-box scoring")
    p.add_argument("--grad-steps", type=int, default=100, help="gradient ULPT: AdamW steps")
    p.add_argument("--grad-batch", type=int, default=8)
    p.add_argument("--grad-lr", type=float, default=3e-2, help="gradient ULPT learning rate (CLI default)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="frozen weights' dtype (auto: bfloat16 only where the hardware runs it natively)",
    )
    p.add_argument("--name", help="results file stem (default: fewshot_quality_<model>)")
    return p.parse_args(argv)


def load_model(name: str, dtype: str = "auto") -> Backbone:
    if name == "tiny":
        from softprompt.models.tiny import tiny_backbone

        return tiny_backbone()
    return load_backbone(name, dtype=dtype)


def splits(task: Task, args: argparse.Namespace, seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    from softprompt.cli.common import subset
    from softprompt.tasks.fewshot import train_dev_k_shot

    train, dev = train_dev_k_shot(task.load("train", args.data_dir), args.shots, seed, len(task.labels))
    test = subset(task.load("test", args.data_dir), args.max_test_examples or None, seed)
    return train, dev, test


def black_box_config(method: str, args: argparse.Namespace, seed: int, num_layers: int) -> SearchConfig:
    search = {"popsize": args.popsize, "budget": args.budget, "eval_every": args.eval_every, "seed": seed}
    if method == "ulpt":
        return SearchConfig.from_flat(method, prompt_len=args.prompt_len, rank=args.rank, **search)
    layers = {"num_layers": num_layers} if method == "bbtv2" else {}
    return SearchConfig.from_flat(method, prompt_len=args.prompt_len, dim=args.dim, **layers, **search)


def estimate(backbone: Backbone, args: argparse.Namespace) -> None:
    """Time one model call per task (the train set with an n-vector prompt) and print the run's projected cost."""
    from softprompt.tasks.builtin import get_task

    total = 0.0
    for name in args.tasks:
        task = get_task(name)
        train, _, test = splits(task, args, args.seeds[0])
        scorer = Scorer(backbone, task)
        batch = scorer.encode(train)
        prompt = PromptInputs(embeds=torch.zeros(1, args.prompt_len, backbone.hidden_size))
        with torch.inference_mode():
            scorer.label_scores(batch, prompt)  # warm-up
            t = time.perf_counter()
            scorer.label_scores(batch, prompt)
            call = time.perf_counter() - t
        black_box = sum(m in args.methods for m in ("bbt", "bbtv2", "ulpt-cma")) * args.budget
        grad = 3 * args.grad_steps * args.grad_batch / len(train) if "ulpt-grad" in args.methods else 0  # fwd+bwd
        evals = len(args.methods) * (len(test) + len(train)) / len(train)  # test + dev scoring, roughly
        per_seed = call * (black_box + grad + evals)
        total += per_seed * len(args.seeds)
        print(f"{name}: one model call ({len(train)} examples) ≈ {call:.2f} s → ≈ {per_seed / 60:.1f} min per seed")
    print(f"projected total ≈ {total / 60:.1f} min (scale with --budget, --seeds, --tasks, --max-test-examples)")


def run_one(method: str, backbone: Backbone, task: Task, data: tuple, args: argparse.Namespace, seed: int, out: Path):
    """(test metrics, dev metrics, cost record) of one method on one seed."""
    train, dev, test = data
    scorer = Scorer(backbone, task)
    if method == "zero-shot":
        return evaluate(scorer, test, None), evaluate(scorer, dev, None), {"calls": 0}
    if method == "ulpt-grad":
        prompt = new_prompt(make_prompt_config("ulpt", args.prompt_len, rank=args.rank), backbone, seed=seed)
        config = TrainConfig(
            steps=args.grad_steps,
            batch_size=args.grad_batch,
            lr=args.grad_lr,
            warmup_steps=args.grad_steps // 10,
            eval_every=max(1, args.grad_steps // 5),
            seed=seed,
        )
        result = train_prompt(scorer, prompt, train, dev, config, out, test=test, progress=False)
        cost = {"steps": args.grad_steps, "examples_forward_backward": args.grad_steps * args.grad_batch}
        return result.test, result.best_validation, cost
    bb_method = {"bbt": "bbt", "bbtv2": "bbtv2", "ulpt-cma": "ulpt"}[method]
    config = black_box_config(bb_method, args, seed, backbone.num_layers)
    evaluator = LocalEvaluator(scorer, chunk_size=args.chunk_size)
    result = run_search(evaluator, train, dev, config, out, test=test, progress=False)
    cost = {"calls": result.calls, "best_calls": result.best_calls, "overhead_share": result.timing["overhead_share"]}
    return result.test, result.best_validation, cost


def main(argv: list[str] | None = None) -> None:
    from softprompt.tasks.builtin import get_task

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model, args.dtype)
    if "bbtv2" in args.methods:  # fail before spending anything: BBTv2 needs at least one full round
        from softprompt.blackbox.search import schedule

        schedule(black_box_config("bbtv2", args, 0, backbone.num_layers), backbone.num_layers)
    estimate(backbone, args)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fewshot-quality-") as tmp:
        for task_name in args.tasks:
            task = get_task(task_name)
            for seed in args.seeds:
                data = splits(task, args, seed)
                for method in args.methods:
                    t = time.perf_counter()
                    out = Path(tmp) / f"{task_name}-{method}-{seed}"
                    test, dev, cost = run_one(method, backbone, task, data, args, seed, out)
                    runs.append({"task": task_name, "method": method, "seed": seed, "test": test, "dev": dev,
                                 "cost": cost, "seconds": time.perf_counter() - t})  # fmt: skip
                    metric = task.primary_metric
                    print(f"{task_name} seed {seed} {method:>9}: test {metric} {test[metric]:.4f}, "
                          f"dev {dev[metric]:.4f}, {cost}, {runs[-1]['seconds']:.1f} s "
                          f"(total {time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    results, markdown = report(runs, args, backbone)
    json_path, md_path = write_results(args.name or f"fewshot_quality_{Path(args.model).name}", results, markdown,
                                       machine_info())  # fmt: skip
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def report(runs: list[dict[str, Any]], args: argparse.Namespace, backbone: Backbone) -> tuple[dict, str]:
    from softprompt.tasks.builtin import get_task

    headers = ["method", *[f"{t} ({get_task(t).primary_metric})" for t in args.tasks], "model calls / steps", "s/run"]
    rows = []
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        cells = []
        for t in args.tasks:
            metric = get_task(t).primary_metric
            cells.append(mean_std([r["test"][metric] for r in mine if r["task"] == t]))
        cost = mine[0]["cost"]
        used = (f"{statistics.mean(r['cost']['calls'] for r in mine):.0f} calls" if "calls" in cost
                else f"{cost['steps']} steps × {args.grad_batch}")  # fmt: skip
        rows.append([method, *cells, used, f"{statistics.mean(r['seconds'] for r in mine):.1f}"])
    markdown = "\n\n".join(
        [
            f"Model {backbone.name} ({args.dtype}); {args.shots}-shot train and dev per label from the train split; "
            f"test: "
            f"{args.max_test_examples or 'all'} examples of the test split; seeds {args.seeds}; black-box budget "
            f"{args.budget} calls (popsize {args.popsize}, d={args.dim}), n={args.prompt_len}, ULPT rank "
            f"{args.rank}; gradient ULPT {args.grad_steps} steps × batch {args.grad_batch}, lr {args.grad_lr}. "
            "Test scores ×100, mean ± std over seeds.",
            markdown_table(headers, rows),
        ]
    )
    return {"settings": vars(args), "model": backbone.describe(), "runs": runs}, markdown


if __name__ == "__main__":
    main()
