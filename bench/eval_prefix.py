"""Evaluation through the prompt's key/value prefix vs through the inserted prompt: examples/s, side by side.

`LocalEvaluator` turns each candidate prompt into its key/value prefix on a decoder (`Backbone.prompt_prefix`) and
scores every example against it, so the n prompt positions run once per candidate instead of once per example.
`LocalEvaluator(prefix=False)` inserts the prompt into every row as before. Two workloads:

    evaluate  one prompt on many examples (validation and test of every gradient run; the quick start's n = 20)
    search    a CMA-ES population of P candidates on the K few-shot examples (BBT's calls; n = 50)

Both modes score the same examples with the same prompts; rounds interleave (a fresh random order each round); the
table gives the median time per workload and the ratio of medians, and the largest difference between the two modes'
label probabilities (they must agree to float tolerance).

    python bench/eval_prefix.py                         # SmolLM2-135M, 1 thread, SST-2 dev
    python bench/eval_prefix.py --model tiny --rounds 1  # seconds-long check on a tiny random Llama
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_rounds, load_model, markdown_table, write_results

from softprompt.cli.common import subset
from softprompt.evaluation import label_probabilities
from softprompt.evaluator import LocalEvaluator
from softprompt.models.hardware import dtype_name
from softprompt.models.inputs import PromptInputs
from softprompt.models.statistics import embedding_std
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, or 'tiny' for a tiny random Llama")
    p.add_argument("--data-dir", default="data", help="SST-2 files (the repository's slice by default)")
    p.add_argument("--examples", type=int, default=200, help="SST-2 dev sentences for the evaluate workload")
    p.add_argument("--prompt-len", type=int, default=20, help="prompt length of the evaluate workload")
    p.add_argument("--population", type=int, default=10, help="candidates of the search workload")
    p.add_argument("--shots", type=int, default=32, help="examples of the search workload")
    p.add_argument("--search-prompt-len", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model)
    task = get_task("sst2")
    test = task.load("test", args.data_dir)
    scorer = Scorer(backbone, task)
    gen = torch.Generator().manual_seed(0)
    scale = embedding_std(backbone)

    def prompts(rows: int, n: int) -> PromptInputs:
        return PromptInputs(embeds=scale * torch.randn(rows, n, backbone.hidden_size, generator=gen))

    workloads = {
        "evaluate": (subset(test, args.examples, 0), prompts(1, args.prompt_len)),
        "search": (subset(test, args.shots, 1), prompts(args.population, args.search_prompt_len)),
    }
    modes = {"prefix": LocalEvaluator(scorer, prefix=True), "inserted": LocalEvaluator(scorer, prefix=False)}
    calls = {}
    for mode, evaluator in modes.items():
        calls["evaluate", mode] = partial(label_probabilities, evaluator, *workloads["evaluate"])
        calls["search", mode] = partial(evaluator.label_scores, *workloads["search"])
    times, probs = interleaved_rounds(calls, args.rounds, echo="")
    for mode in modes:
        probs["search", mode] = probs["search", mode].softmax(-1)
    rows, results = [], []
    for work, (examples, inputs) in workloads.items():
        pre, ins = (statistics.median(times[work, m]) for m in ("prefix", "inserted"))
        diff = float((probs[work, "prefix"] - probs[work, "inserted"]).abs().max())
        units = inputs.num_rows * len(examples)
        results.append({"workload": work, "prompts": inputs.num_rows, "prompt_len": inputs.prompt_len,
                        "examples": len(examples), "prefix_s": pre, "inserted_s": ins, "speedup": ins / pre,
                        "max_abs_prob_diff": diff, "rounds": {m: times[work, m] for m in modes}})  # fmt: skip
        rows.append([work, inputs.num_rows, inputs.prompt_len, len(examples), f"{units / ins:.1f}",
                     f"{units / pre:.1f}", f"{ins / pre:.2f}x", f"{diff:.1e}"])  # fmt: skip
    table = markdown_table(
        ["workload", "prompts", "prompt len", "examples", "inserted rows/s", "prefix rows/s", "speed-up",
         "max |Δ prob|"], rows)  # fmt: skip
    setup = (f"{backbone.name} ({dtype_name(backbone.dtype)}), SST-2 dev from `{args.data_dir}`, "
             f"{args.threads} torch thread(s), median of {args.rounds} interleaved round(s); prompts are random "
             f"vectors at the embedding scale (timing and agreement do not depend on training).\n\n")  # fmt: skip
    name = "eval_prefix_tiny" if args.model == "tiny" else "eval_prefix"  # a smoke run never replaces the real result
    json_path, md_path = write_results(name, {"settings": vars(args), "results": results}, setup + table)
    print(table)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
