"""BBT's model call on SmolLM2 in float32 and in bfloat16: what `--dtype auto` buys (or costs) on this CPU.

`bench/dtype_matmul.py` times one matmul; this times the whole call a black-box search makes (and evaluation makes,
one prompt at a time): P candidate prompts of n vectors scored on a 16-per-label training set through each prompt's
key/value prefix (`LocalEvaluator.label_scores`, as `softprompt blackbox`). The same backbone is loaded twice, in
float32 and in bfloat16; rounds interleave the two (a fresh random order each round, `common.interleaved_rounds`),
so a change in load on a shared machine hits both alike. Reported per task: median seconds per candidate (one model
call) per dtype, their ratio, and how far bfloat16's label probabilities are from float32's (largest |Δ| and the
share of (candidate, example) pairs whose top label differs).

    python bench/dtype_forward.py                      # SmolLM2-135M, 1 thread, SST-2 and MRPC
    python bench/dtype_forward.py --model tiny --data-dir data --tasks sst2 --rounds 1   # seconds-long check
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

from softprompt.evaluator import LocalEvaluator
from softprompt.models.hardware import BF16_CPU_FLAGS, choose_dtype, cpu_flags, dtype_name
from softprompt.models.inputs import PromptInputs
from softprompt.models.statistics import embedding_std
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.tasks.fewshot import train_dev_k_shot

DTYPES = ("float32", "bfloat16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, or 'tiny' for a tiny random Llama")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    p.add_argument("--shots", type=int, default=16, help="examples per label (the training set BBT scores)")
    p.add_argument("--seed", type=int, default=0, help="which few-shot set, and the order of each round")
    p.add_argument("--population", type=int, default=5, help="candidates per call of label_scores")
    p.add_argument("--prompt-len", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    backbones = {d: load_model(args.model, dtype=d) for d in DTYPES}
    fp32 = backbones["float32"]
    gen = torch.Generator().manual_seed(0)
    scale = embedding_std(fp32)
    shape = (args.population, args.prompt_len, fp32.hidden_size)
    prompts = PromptInputs(embeds=scale * torch.randn(*shape, generator=gen))
    rows, results = [], []
    for name in args.tasks:
        task = get_task(name)
        train, _ = train_dev_k_shot(task.load("train", args.data_dir), args.shots, args.seed, len(task.labels))
        evaluators = {d: LocalEvaluator(Scorer(b, task)) for d, b in backbones.items()}
        calls = {d: partial(ev.label_scores, train, prompts) for d, ev in evaluators.items()}
        times, scores = interleaved_rounds(calls, args.rounds, args.seed, echo=name)
        probs = {d: s.float().softmax(-1) for d, s in scores.items()}
        fp32_s, bf16_s = (statistics.median(times[d]) / args.population for d in DTYPES)
        diff = float((probs["bfloat16"] - probs["float32"]).abs().max())
        flips = float((probs["bfloat16"].argmax(-1) != probs["float32"].argmax(-1)).float().mean())
        results.append({"task": name, "examples": len(train), "float32_s_per_call": fp32_s,
                        "bfloat16_s_per_call": bf16_s, "bf16_over_fp32": bf16_s / fp32_s,
                        "max_abs_prob_diff": diff, "top_label_differs": flips, "rounds": times})  # fmt: skip
        rows.append([name, len(train), f"{fp32_s:.2f}", f"{bf16_s:.2f}", f"{bf16_s / fp32_s:.2f}x", f"{diff:.3f}",
                     f"{100 * flips:.1f}%"])  # fmt: skip
    table = markdown_table(["task", "examples", "float32 s/call", "bfloat16 s/call", "bf16 / fp32", "max |Δ prob|",
                            "top label differs"], rows)  # fmt: skip
    flags = cpu_flags()
    chosen, reason = choose_dtype("cpu", flags)
    setup = (f"{fp32.name}, {args.shots}-shot training sets of seed {args.seed} from `{args.data_dir}` (train split), "
             f"{args.population} random candidates of n = {args.prompt_len} per call of `label_scores`, through the "
             f"key/value prefix; {args.threads} torch thread(s), median of {args.rounds} rounds, the dtypes in a "
             f"seeded random order within each. CPU flags: "
             + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in BF16_CPU_FLAGS)
             + f". `--dtype auto` on this CPU: {dtype_name(chosen)} ({reason}).\n\n")  # fmt: skip
    out = "dtype_forward_tiny" if args.model == "tiny" else "dtype_forward"  # a smoke run never replaces the real one
    json_path, md_path = write_results(out, {"settings": vars(args), "results": results}, setup + table)
    print(table)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
