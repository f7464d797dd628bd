"""ULPT at step 0 on SST-2 with the embedded SmolLM2: the bare template vs the authors' init (z ~ N(0, 1)) vs the
opt-in neutral init (the same start, then distilled to the bare template's next-token distributions at every text
position, softprompt/training/neutral.py), for each prompt length asked.

    python bench/ulpt_neutral_init.py --data-dir ../shared/data --prompt-lens 100 20 --jobs 5   # the committed table

Test: SST-2 dev (GLUE dev), all 872 unless `--max-test-examples`. The fit uses training texts only: its batches
from the train split, its held-out early-stop check on the first `--held-out` validation texts (carved from train);
labels are never read. Each prompt is one row shared by every example, so it is scored through its key/value prefix
(`backbone.prompt_prefix`, the inserted prompt's exact effect; checked on a few examples first): the prompt's n
positions run once instead of once per example. Every row is its own job (one torch thread each; `--jobs` of them at
a time), so the rows of the table are measured side by side in one run.

Target (issue 9): the neutral init is within one accuracy point of the bare template; the authors' init stays the
default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import machine_info, markdown_table, write_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR", "../shared/data"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompt-lens", type=int, nargs="+", default=[100, 20])
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--max-test-examples", type=int, help="default: all 872")
    p.add_argument("--neutral-steps", type=int, help="default: ULPTConfig.neutral_steps")
    p.add_argument("--neutral-lr", type=float, help="default: ULPT's learning rate")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--held-out", type=int, default=32, help="validation texts for the fit's early-stop check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="rows measured at once, one process and torch thread each")
    return p.parse_args(argv)


def run_row(args: argparse.Namespace, kind: str, prompt_len: int) -> dict:
    """One table row in its own process: 'bare', 'authors' or 'neutral' (the fit, then the score)."""
    torch.set_num_threads(1)
    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.cli.common import subset
    from softprompt.evaluation import evaluate, label_probabilities
    from softprompt.models import load_backbone
    from softprompt.scoring import Scorer
    from softprompt.tasks.builtin import get_task
    from softprompt.training.neutral import fit_to_template, template_kl

    backbone = load_backbone(args.model)
    task = get_task("sst2")
    test = subset(task.load("test", args.data_dir), args.max_test_examples, 0)
    scorer = Scorer(backbone, task)
    started = time.perf_counter()
    row: dict = {"kind": kind, "prompt_len": prompt_len, "examples": len(test)}
    if kind == "bare":
        metrics = evaluate(scorer, test, None)
        return {**row, "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    options = {"neutral_init": True} if kind == "neutral" else {}
    config = make_prompt_config("ulpt", prompt_len, rank=args.rank, **options)
    prompt = new_prompt(config, backbone, args.seed)
    if kind == "neutral":
        train, validation = task.load("train", args.data_dir), task.load("validation", args.data_dir)
        steps = config.neutral_steps if args.neutral_steps is None else args.neutral_steps
        lr = config.default_lr if args.neutral_lr is None else args.neutral_lr
        fit = fit_to_template(scorer, prompt, train, steps=steps, lr=lr, batch_size=args.batch_size, seed=args.seed,
                              held_out=validation[: args.held_out])  # fmt: skip
        row.update(fit_steps=steps, fit_lr=lr, fit_kl_first=fit.losses[0] if fit.losses else None,
                   fit_kl_last=fit.losses[-1] if fit.losses else None, held_out_kl=fit.held_out,
                   best_step=fit.best_step)  # fmt: skip
    with torch.no_grad():
        inputs = prompt.materialize().detach()
        prefix = backbone.prompt_prefix(inputs)
    a, b = label_probabilities(scorer, test[:8], inputs), label_probabilities(scorer, test[:8], prefix)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # the prefix stands in for the prompt exactly
    row["test64_kl"] = template_kl(scorer, prompt, test[:64])  # full-vocabulary KL to the bare template
    metrics = evaluate(scorer, test, prefix)
    return {**row, "accuracy": metrics["accuracy"], "loss": metrics["loss"],
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.jobs <= 0:
        raise SystemExit("--jobs must be positive")
    jobs = [("bare", 0)] + [(kind, n) for n in args.prompt_lens for kind in ("authors", "neutral")]
    jobs.sort(key=lambda job: job[0] != "neutral")  # the fits are the long ones: start them first
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {job: pool.submit(run_row, args, *job) for job in jobs}
        done = {job: future.result() for job, future in futures.items()}
    bare = done[("bare", 0)]
    rows = [bare] + [done[(kind, n)] for n in args.prompt_lens for kind in ("authors", "neutral")]
    for r in rows:
        r["vs_bare_points"] = 100 * (r["accuracy"] - bare["accuracy"])
        print(r, flush=True)

    def label(r: dict) -> str:
        if r["kind"] == "bare":
            return "bare template (no prompt)"
        if r["kind"] == "authors":
            return f"n={r['prompt_len']}: authors' init (z ~ N(0,1)), the default"
        fit = f" + {r['fit_steps']}-step fit, kept step {r['best_step']}" if r["fit_steps"] else ""
        return f"n={r['prompt_len']}: neutral init (sink token + near-zero positions{fit})"

    table = markdown_table(
        ["step-0 prompt", "accuracy", "points vs bare", "loss", "full-vocab KL to bare (64 test texts)", "time (s)"],
        [[label(r), f"{100 * r['accuracy']:.2f}", f"{r['vs_bare_points']:+.2f}", f"{r['loss']:.4f}",
          "0" if r["kind"] == "bare" else f"{r['test64_kl']:.4f}", r["seconds"]] for r in rows],
    )  # fmt: skip
    neutral = [r for r in rows if r["kind"] == "neutral"]
    fit = neutral[0] if neutral else {}
    fit_text = (
        f"then {fit.get('fit_steps')} Adam steps × {args.batch_size} training texts at lr {fit.get('fit_lr')} on the "
        f"full-vocabulary KL(bare ‖ prompted) at every text position, keeping the best of the checks every 10 steps "
        f"on {args.held_out} validation texts (carved from train)"
        if fit.get("fit_steps")
        else "no fit steps (ULPTConfig.neutral_steps = 0, the default)"
    )
    setup = (
        f"SST-2 dev ({bare['examples']} sentences{'' if args.max_test_examples is None else ', seeded subset'}), "
        f"{args.model}, ULPT r={args.rank}, seed {args.seed}; before any training step. Neutral init: p_0 = the "
        f"<|endoftext|> embedding, p_1..p_(n-1) near zero (rms 1e-4), in ULPT's own parameters; {fit_text}.\n\n"
    )
    verdicts = [
        f"n={r['prompt_len']}: {'met' if abs(r['vs_bare_points']) <= 1.0 else 'NOT met'} ({r['vs_bare_points']:+.2f} "
        f"points{'; held-out KL by step ' if r['held_out_kl'] else ''}"
        f"{', '.join(f'{s}: {kl:.3f}' for s, kl in r['held_out_kl'])})"
        for r in neutral
    ]
    verdict = "\n\nTarget (neutral init within one point of the bare template): " + "; ".join(verdicts) + "."
    json_path, md_path = write_results(
        "ulpt_neutral_init", {"settings": vars(args), "rows": rows}, setup + table + verdict, machine_info()
    )
    print(table + verdict)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
