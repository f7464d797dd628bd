"""Mixed-prompt batching: 64 rows with 64 distinct prompts vs the same 64 rows with one prompt vs 64 one-prompt
calls in a row (what a PEFT user, who cannot mix prompt adapters in a batch, does).

All three go through the serving engine's classification path (`Engine.classify`, SST-2 task of each prompt) with
the prompt prefix cache OFF, so the only difference is how rows and prompts are batched:

  mixed       64 requests, one text each, 64 distinct ULPT prompts (r=2): one batch, one forward pass
  single      the same 64 texts in one request under one prompt: one batch, one forward pass
  sequential  64 requests one after another (each waits for its answer), 64 forward passes

Rounds are interleaved (each round runs every mode once, in a fresh random order) so load changes on a shared machine
hit all modes alike; the table gives the median rows/s over rounds and ratios of medians with the range of per-round
ratios. Prompts are materialised once in a warm-up round (the engine's prompt store), as in a warm server.

    python bench/mixed_batch.py                          # real SmolLM2-135M, 1 thread, n=20, 64 rows, 3 rounds
    python bench/mixed_batch.py --model tiny --rounds 2  # quick check on a tiny random Llama
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_rounds, markdown_table, write_results
from serving_setup import serving_backbone, sst2_sentences, ulpt_prompts

from softprompt.models import DEFAULT_MODEL
from softprompt.serving.engine import Engine, EngineConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name, or 'tiny' for a tiny random Llama")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="results file name (default mixed_batch[_tiny])")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = serving_backbone(args.model)
    texts = sst2_sentences(args.rows)
    source = ulpt_prompts(backbone, args.rows, args.prompt_len)
    batched = Engine(backbone, source, EngineConfig(max_batch_rows=args.rows, max_wait_ms=60_000, prefix_cache=False))
    alone = Engine(backbone, source, EngineConfig(max_batch_rows=args.rows, max_wait_ms=0, prefix_cache=False))

    def mixed() -> None:
        futures = [batched.submit_classify("bench", f"p{i}", [t]) for i, t in enumerate(texts)]
        for f in futures:
            f.result()

    def single() -> None:
        batched.submit_classify("bench", "p0", texts).result()

    def sequential() -> None:
        for t in texts:
            alone.classify("bench", "p0", [t])

    modes = {"mixed": mixed, "single": single, "sequential": sequential}
    for fn in modes.values():  # warm-up: materialise every prompt, tokenizer caches, allocator
        fn()
    forward_before = (batched.forward_passes, alone.forward_passes)
    seconds, _ = interleaved_rounds(modes, args.rounds)
    passes = {"batched_engine": batched.forward_passes - forward_before[0],
              "sequential_engine": alone.forward_passes - forward_before[1]}  # fmt: skip
    batched.close()
    alone.close()

    rows_per_s = {m: [args.rows / s for s in v] for m, v in seconds.items()}
    median = {m: statistics.median(v) for m, v in rows_per_s.items()}
    ratio = {
        "mixed/single": (median["mixed"] / median["single"],
                         [a / b for a, b in zip(rows_per_s["mixed"], rows_per_s["single"], strict=True)]),
        "mixed/sequential": (median["mixed"] / median["sequential"],
                             [a / b for a, b in zip(rows_per_s["mixed"], rows_per_s["sequential"], strict=True)]),
    }  # fmt: skip
    results = {
        "model": backbone.describe(),
        "settings": {
            "rows": args.rows,
            "prompt_len": args.prompt_len,
            "method": "ulpt r=2",
            "rounds": args.rounds,
            "threads": args.threads,
            "prefix_cache": False,
            "texts": "SST-2 dev, first rows",
            "dtype": str(backbone.dtype),
        },
        "forward_passes_timed": passes,
        "seconds": seconds,
        "rows_per_second": rows_per_s,
        "median_rows_per_second": median,
        "ratios": {k: {"of_medians": v, "per_round": r} for k, (v, r) in ratio.items()},
        "targets": {"mixed/single": ">= 0.95", "mixed/sequential": ">= 10"},
    }
    table = markdown_table(
        ["mode", "rows/s (median)", "min", "max"],
        [[m, f"{median[m]:.2f}", f"{min(v):.2f}", f"{max(v):.2f}"] for m, v in rows_per_s.items()],
    )
    ratios = markdown_table(
        ["ratio", "of medians", "per-round range", "target"],
        [[k, f"{v:.3f}", f"{min(r):.3f} - {max(r):.3f}", results["targets"][k]] for k, (v, r) in ratio.items()],
    )
    name = args.name or ("mixed_batch_tiny" if args.model == "tiny" else "mixed_batch")
    note = (f"{backbone.name}, {args.rows} SST-2 dev rows, ULPT r=2 prompts of length {args.prompt_len}, "
            f"{args.threads} torch thread(s), {backbone.dtype}, engine classification path, prefix cache off, "
            f"{args.rounds} interleaved rounds. Forward passes in the timed rounds: {passes}.")  # fmt: skip
    write_results(name, results, f"{note}\n\n{table}\n\n{ratios}\n")
    print(note)
    print(table)
    print(ratios)


if __name__ == "__main__":
    main()
