"""ULPT at step 0: the authors' init (z ~ N(0, 1)) vs the opt-in neutral init (z = 0, shift = one neutral vector)
vs the bare template, on SST-2 dev (GLUE dev, 872 sentences) with the embedded SmolLM2. No training: this measures
what a prompt does before the first step, which is where a short few-shot run starts from.

    python bench/ulpt_neutral_init.py --data-dir ../shared/data            # the committed table

Each candidate prompt is one row shared by every example, so it is evaluated through its key/value prefix
(`backbone.prompt_prefix`, exactly the inserted prompt's effect; checked here on a few examples first): the
prompt's 100 positions are run once instead of once per example.

Target (issue 9): the neutral init is within one accuracy point of the bare template; the authors' init stays the
default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import machine_info, markdown_table, write_results  # noqa: E402

from softprompt.api import make_prompt_config, new_prompt  # noqa: E402
from softprompt.cli.common import subset  # noqa: E402
from softprompt.evaluation import evaluate, label_probabilities  # noqa: E402
from softprompt.scoring import Scorer  # noqa: E402
from softprompt.tasks.builtin import get_task  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR", "../shared/data"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompt-len", type=int, default=100)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--max-test-examples", type=int, help="default: all 872")
    p.add_argument("--neutral-texts", nargs="+", default=["", "\n", " ", "<|endoftext|>"],
                   help="candidate neutral_text values ('' = the zero vector)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the authors' init")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from softprompt.models import load_backbone

    backbone = load_backbone(args.model)
    task = get_task("sst2")
    test = subset(task.load("test", args.data_dir), args.max_test_examples, 0)
    scorer = Scorer(backbone, task)

    candidates = [(f"authors' init (z ~ N(0,1)), seed {s}", {}, s) for s in args.seeds]
    candidates += [(f"neutral init, neutral_text={t!r}", {"neutral_init": True, "neutral_text": t}, 0)
                   for t in args.neutral_texts]  # fmt: skip

    started = time.perf_counter()
    bare = evaluate(scorer, test, None)
    rows = [{"init": "bare template (no prompt)", "accuracy": bare["accuracy"], "loss": bare["loss"],
             "seconds": round(time.perf_counter() - started, 1)}]  # fmt: skip
    print(rows[-1], flush=True)
    checked = False
    for label, options, seed in candidates:
        started = time.perf_counter()
        prompt = new_prompt(make_prompt_config("ulpt", args.prompt_len, rank=args.rank, **options), backbone, seed)
        with torch.no_grad():
            inputs = prompt.materialize().detach()
            prefix = backbone.prompt_prefix(inputs)
        if not checked:  # the prefix stands in for the prompt exactly (up to float rounding)
            a = label_probabilities(scorer, test[:8], inputs)
            b = label_probabilities(scorer, test[:8], prefix)
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
            checked = True
        metrics = evaluate(scorer, test, prefix)
        rows.append({"init": label, "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                     "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    for r in rows:
        r["vs_bare_points"] = 100 * (r["accuracy"] - bare["accuracy"])
    table = markdown_table(
        ["step-0 prompt", "accuracy", "points vs bare", "loss", "time (s)"],
        [[r["init"], f"{100 * r['accuracy']:.2f}", f"{r['vs_bare_points']:+.2f}", f"{r['loss']:.4f}", r["seconds"]]
         for r in rows],
    )  # fmt: skip
    setup = (
        f"SST-2 dev ({len(test)} sentences), {backbone.name} ({str(backbone.dtype).replace('torch.', '')}), "
        f"ULPT n={args.prompt_len}, r={args.rank}, before any training step.\n\n"
    )
    neutral = [r for r in rows if r["init"].startswith("neutral")]
    within = [r["init"] for r in neutral if abs(r["vs_bare_points"]) <= 1.0]
    verdict = f"\n\nWithin one point of the bare template: {', '.join(within) if within else 'none'}."
    json_path, md_path = write_results(
        "ulpt_neutral_init", {"settings": vars(args), "rows": rows}, setup + table + verdict, machine_info()
    )
    print(table + verdict)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
