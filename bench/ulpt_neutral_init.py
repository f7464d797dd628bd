"""ULPT at step 0 on SST-2 with the embedded SmolLM2: the bare template vs the authors' init (z ~ N(0, 1), the
default) vs the opt-in neutral init (the same z behind a closed attention gate, softprompt/prompts/ulpt.py), for each
prompt length asked, plus the gate at other starting values (why −20); then both starts after a short few-shot run
(the issue's case: the authors' start fell from 72.8 to 58.8 in one).

    python bench/ulpt_neutral_init.py --data-dir ../shared/data --prompt-lens 100 20 --jobs 2   # the committed table

Test: SST-2 dev (GLUE dev), all 872 unless `--max-test-examples`. Each prompt is one row shared by every example, so
it is scored through its key/value prefix (`backbone.as_prefix`, the inserted prompt's exact effect, gate included;
checked on a few examples first). Besides accuracy, each row reports how many of the bare template's predictions it
keeps. Every row is its own job (one torch thread each; `--jobs` of them at a time), so the rows of the table are
measured side by side in one run. The few-shot runs use the library's trainer as `softprompt train` does (its
defaults: AdamW at ULPT's learning rate, the gate at its own, warm-up, clipping, the best validation step kept) on
`--shots` examples per label from train, validated on another `--shots` per label (`train_dev_k_shot`).

Target (issue 9): the neutral init is within one accuracy point of the bare template; the authors' init stays the
default.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import machine_info, markdown_table, write_results

Job = tuple[str, int, float | None, int]  # (kind, prompt length, gate start, training steps)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR", "../shared/data"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompt-lens", type=int, nargs="+", default=[100, 20])
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--other-gates", type=float, nargs="*", default=[-12.0],
                   help="gate starts besides the default, at the first prompt length")  # fmt: skip
    p.add_argument("--max-test-examples", type=int, help="default: all 872")
    p.add_argument("--train-steps", type=int, default=30, help="few-shot run of both starts (0: none)")
    p.add_argument("--shots", type=int, default=16, help="training (and validation) examples per label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="rows measured at once, one process and torch thread each")
    return p.parse_args(argv)


def run_row(args: argparse.Namespace, job: Job) -> dict:
    """One table row in its own process: its label probabilities on the test sentences."""
    torch.set_num_threads(1)
    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.cli.common import subset
    from softprompt.evaluation import label_probabilities
    from softprompt.models import load_backbone
    from softprompt.scoring import Scorer
    from softprompt.tasks.builtin import get_task
    from softprompt.tasks.fewshot import train_dev_k_shot
    from softprompt.training.trainer import TrainConfig, train_prompt

    kind, prompt_len, gate, steps = job
    backbone = load_backbone(args.model)
    task = get_task("sst2")
    test = subset(task.load("test", args.data_dir), args.max_test_examples, 0)
    scorer = Scorer(backbone, task)
    started = time.perf_counter()
    prefix = None
    if kind != "bare":
        options = {} if gate is None else {"neutral_init": True, "neutral_gate": gate}
        prompt = new_prompt(make_prompt_config("ulpt", prompt_len, rank=args.rank, **options), backbone, args.seed)
        if steps:
            train, dev = train_dev_k_shot(task.load("train", args.data_dir), args.shots, args.seed, len(task.labels))
            config = TrainConfig(steps=steps, batch_size=8, eval_every=max(1, steps // 3), seed=args.seed)
            with tempfile.TemporaryDirectory() as out:
                train_prompt(scorer, prompt, train, dev, config, out, progress=False)
        with torch.no_grad():
            inputs = prompt.materialize().detach()
            prefix = backbone.as_prefix(inputs)
            a, b = label_probabilities(scorer, test[:8], inputs), label_probabilities(scorer, test[:8], prefix)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # the prefix stands in for the prompt exactly
    with torch.no_grad():
        probs = label_probabilities(scorer, test, prefix)
    labels = torch.tensor([ex.label for ex in test])
    end_gate = None if gate is None else float(prompt.gate.detach())
    return {"kind": kind, "prompt_len": prompt_len, "gate": gate, "steps": steps, "end_gate": end_gate,
            "examples": len(test),
            "accuracy": float((probs.argmax(-1) == labels).float().mean()),
            "loss": float(-probs[torch.arange(len(test)), labels].log().mean()),
            "predictions": probs.argmax(-1).tolist(), "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def label(r: dict) -> str:
    if r["kind"] == "bare":
        return "bare template (no prompt)"
    start = "authors' init (z ~ N(0,1)), the default" if r["gate"] is None else f"neutral init (gate {r['gate']:g})"
    if not r["steps"]:
        return f"n={r['prompt_len']}: {start}"
    gate = "" if r["end_gate"] is None else f"; gate now {r['end_gate']:.2f}"
    return f"n={r['prompt_len']}: {start}, after {r['steps']} steps{gate}"


def main() -> None:
    from softprompt.prompts.ulpt import ULPTConfig

    args = parse_args()
    if args.jobs <= 0:
        raise SystemExit("--jobs must be positive")
    default_gate = ULPTConfig.neutral_gate
    jobs: list[Job] = [("bare", 0, None, 0)]
    for n in args.prompt_lens:
        jobs += [("ulpt", n, None, 0), ("ulpt", n, default_gate, 0)]
        if n == args.prompt_lens[0]:
            jobs += [("ulpt", n, g, 0) for g in args.other_gates if g != default_gate]
    if args.train_steps:
        jobs += [("ulpt", n, g, args.train_steps) for n in args.prompt_lens for g in (None, default_gate)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_row, args, job) for job in jobs]
        rows = [future.result() for future in futures]
    bare = rows[0]
    for r in rows:
        r["vs_bare_points"] = 100 * (r["accuracy"] - bare["accuracy"])
        r["same_as_bare"] = sum(a == b for a, b in zip(r["predictions"], bare["predictions"], strict=True))
        print({k: v for k, v in r.items() if k != "predictions"}, flush=True)
    table = markdown_table(
        ["prompt", "accuracy", "points vs bare", "predictions equal to bare", "loss", "time (s)"],
        [[label(r), f"{100 * r['accuracy']:.2f}", f"{r['vs_bare_points']:+.2f}", f"{r['same_as_bare']}/{r['examples']}",
          f"{r['loss']:.4f}", r["seconds"]] for r in rows],
    )  # fmt: skip
    setup = (
        f"SST-2 dev ({bare['examples']} sentences{'' if args.max_test_examples is None else ', seeded subset'}), "
        f"{args.model}, ULPT r={args.rank}, seed {args.seed}; before any training step. Neutral init: the authors' "
        "z ~ N(0,1), scale 1, shift 0, and a gate g added to every attention logit from the text to the prompt "
        f"(ULPTConfig.neutral_gate, default {default_gate:g}). Rows without a step count are before any training "
        f"step; the others after {args.train_steps} steps of 8 on {args.shots} training examples per label.\n\n"
    )
    neutral = [r for r in rows if r["gate"] == default_gate and not r["steps"]]
    verdicts = [f"n={r['prompt_len']}: {'met' if abs(r['vs_bare_points']) <= 1.0 else 'NOT met'} "
                f"({r['vs_bare_points']:+.2f} points)" for r in neutral]  # fmt: skip
    verdict = "\n\nTarget (neutral init within one point of the bare template): " + "; ".join(verdicts) + "."
    json_path, md_path = write_results(
        "ulpt_neutral_init", {"settings": vars(args), "rows": rows}, setup + table + verdict, machine_info()
    )
    print(table + verdict)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
