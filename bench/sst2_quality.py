"""SST-2 quality on the embedded SmolLM2: zero-shot template vs prompt tuning vs ULPT r=2 vs ULPT r=64.

Every method sees the same model, template, verbalizer, prompt length, training batches (same seed), number of
steps, validation subset (for best-step selection) and test split (SST-2 dev, 872 sentences). The step budget is
bounded so the whole run fits ~30 minutes on 2 CPU cores; the ULPT paper trains for up to 30,000 steps on GPUs,
so absolute accuracies here are a short-budget snapshot, not the paper's setting.

    python bench/sst2_quality.py --data-dir ../shared/data --dtype bfloat16   # the committed table
    python bench/sst2_quality.py --model tiny --steps 4 --max-test-examples 16 --data-dir ../shared/data   # smoke

Target (issue): ULPT r=2 reaches ≥ 95% of PT's accuracy with ≤ 2% of its trainable parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_model, machine_info, markdown_table, write_results

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.training.trainer import TrainConfig, train_prompt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR", "../shared/data"))
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name/path, or 'tiny' for a smoke run")
    # n=128: the smallest round length at which ULPT r=2 has ≤ 2% of PT's parameters when D=576 (1,408 vs 73,728)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=40)
    p.add_argument("--max-eval-examples", type=int, default=150)
    p.add_argument("--max-test-examples", type=int, help="default: all 872")
    p.add_argument("--lr-prompt", type=float, default=1e-2, help="peak lr for vanilla prompt tuning")
    p.add_argument("--lr-ulpt", type=float, default=3e-2, help="peak lr for ULPT")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="frozen weights' dtype (auto: bfloat16 only where the hardware runs it natively; the "
        "committed table used bfloat16)",
    )
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 64])
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    backbone = load_model(args.model, args.dtype)
    name = "sst2_quality_tiny" if args.model == "tiny" else "sst2_quality"
    task = get_task("sst2")
    train = task.load("train", args.data_dir)
    validation = subset(task.load("validation", args.data_dir), args.max_eval_examples, args.seed)
    test = subset(task.load("test", args.data_dir), args.max_test_examples, args.seed)
    scorer = Scorer(backbone, task)

    rows: list[dict] = []
    started = time.perf_counter()
    zero = evaluate(scorer, test, None)
    rows.append(
        {
            "method": "zero-shot template",
            "params": 0,
            "test_accuracy": zero["accuracy"],
            "test_loss": zero["loss"],
            "seconds": round(time.perf_counter() - started, 1),
        }
    )

    runs = [("prompt_tuning", {}, args.lr_prompt)] + [("ulpt", {"rank": r}, args.lr_ulpt) for r in args.ranks]
    for method, options, lr in runs:
        prompt = new_prompt(make_prompt_config(method, args.prompt_len, **options), backbone, seed=args.seed)
        config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=lr,
            warmup_steps=args.steps // 10,
            eval_every=args.eval_every,
            seed=args.seed,
        )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = train_prompt(scorer, prompt, train, validation, config, out, test=test, progress=False)
        label = method if not options else f"ulpt r={options['rank']}"
        rows.append(
            {
                "method": label,
                "params": prompt.num_trainable_parameters(),
                "lr": lr,
                "best_step": result.best_step,
                "validation_accuracy": result.best_validation["accuracy"],
                "test_accuracy": result.test["accuracy"],
                "test_loss": result.test["loss"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(rows[-1], flush=True)

    pt = next(r for r in rows if r["method"] == "prompt_tuning")
    for r in rows:
        r["params_vs_pt"] = r["params"] / pt["params"]
        r["accuracy_vs_pt"] = r["test_accuracy"] / pt["test_accuracy"]
    table = markdown_table(
        ["method", "trainable params", "% of PT params", "test accuracy", "% of PT accuracy", "best step", "time (s)"],
        [[r["method"], f"{r['params']:,}", f"{100 * r['params_vs_pt']:.1f}%", f"{r['test_accuracy']:.4f}",
          f"{100 * r['accuracy_vs_pt']:.1f}%", r.get("best_step", "-"), r["seconds"]] for r in rows],
    )  # fmt: skip
    ulpt2 = next((r for r in rows if r["method"] == "ulpt r=2"), None)
    verdict = ""
    if ulpt2:
        met = ulpt2["accuracy_vs_pt"] >= 0.95 and ulpt2["params_vs_pt"] <= 0.02
        verdict = (f"\n\nTarget (ULPT r=2 ≥ 95% of PT accuracy with ≤ 2% of its parameters): "
                   f"{'met' if met else 'NOT met'} — {100 * ulpt2['accuracy_vs_pt']:.1f}% of the accuracy with "
                   f"{100 * ulpt2['params_vs_pt']:.2f}% of the parameters.")  # fmt: skip
    setup = (
        f"SST-2, {backbone.name} ({args.dtype}), prompt length {args.prompt_len}, "
        f"{args.steps} steps × batch {args.batch_size}, "
        f"validation subset {len(validation)} (best step), test {len(test)} sentences (GLUE dev).\n\n"
    )
    results = {"settings": vars(args), "rows": rows}
    json_path, md_path = write_results(name, results, setup + table + verdict, machine_info())
    print(table + verdict)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
