"""Prompt prefix cache: classification requests/s with and without cached prompt keys/values.

A decoder's prompt positions never attend to the text, so the engine can compute a prompt's keys and values once
(`CausalLMBackbone.prompt_prefix`) and let every request attend to them instead of re-running the n prompt positions
through every layer. With a 100-vector prompt and SST-2 sentences (~25 tokens) most of each row's prefill is the
prompt, so the saving should be large.

Both modes run the same requests through the serving engine (`Engine.classify`): `--requests` requests of one SST-2
dev sentence each, spread round-robin over `--prompts` distinct ULPT r=2 prompts of length `--prompt-len`, submitted
at once and batched `--batch` rows per forward pass. A warm-up pass fills each engine's prompt store (the prefix
cache computes each prompt's keys/values there, once), so the timed rounds are a warm server. Rounds are interleaved;
the table gives median requests/s and the ratio of medians with the per-round range. The largest difference between
the two modes' label probabilities is recorded (they must agree to float tolerance).

    python bench/prefix_cache.py                          # real SmolLM2-135M, 1 thread, n=100, 32 requests, 3 rounds
    python bench/prefix_cache.py --model tiny --rounds 2  # quick check on a tiny random Llama
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
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
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="results file name (default prefix_cache[_tiny])")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = serving_backbone(args.model)
    texts = sst2_sentences(args.requests)
    tokens = [len(backbone.tokenize(t)) for t in texts]
    source = ulpt_prompts(backbone, args.prompts, args.prompt_len)
    engines = {
        mode: Engine(backbone, source, EngineConfig(max_batch_rows=args.batch, max_wait_ms=20, prefix_cache=on))
        for mode, on in (("prefix cache", True), ("no cache", False))
    }
    outputs: dict[str, list] = {}

    def run(mode: str) -> list:
        futures = [engines[mode].submit_classify("bench", f"p{i % args.prompts}", [t]) for i, t in enumerate(texts)]
        return [f.result()[0] for f in futures]

    for mode in engines:  # warm-up: every prompt materialised (and its keys/values computed, with the cache)
        outputs[mode] = run(mode)
    diff = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(*outputs.values(), strict=True) for k in a.scores)
    seconds, _ = interleaved_rounds({mode: partial(run, mode) for mode in engines}, args.rounds)
    stats = {m: e.stats() for m, e in engines.items()}
    for e in engines.values():
        e.close()

    rps = {m: [args.requests / s for s in v] for m, v in seconds.items()}
    median = {m: statistics.median(v) for m, v in rps.items()}
    per_round = [a / b for a, b in zip(rps["prefix cache"], rps["no cache"], strict=True)]
    speedup = median["prefix cache"] / median["no cache"]
    results = {
        "model": backbone.describe(),
        "settings": {
            "requests": args.requests,
            "prompts": args.prompts,
            "prompt_len": args.prompt_len,
            "batch_rows": args.batch,
            "rounds": args.rounds,
            "threads": args.threads,
            "method": "ulpt r=2",
            "dtype": str(backbone.dtype),
            "text_tokens_mean": statistics.mean(tokens),
            "text_tokens_median": statistics.median(tokens),
        },
        "seconds": seconds,
        "requests_per_second": rps,
        "median_requests_per_second": median,
        "speedup": {"of_medians": speedup, "per_round": per_round},
        "max_probability_difference": diff,
        "engine_stats": stats,
        "target": ">= 2x",
    }
    table = markdown_table(
        ["mode", "requests/s (median)", "min", "max"],
        [[m, f"{median[m]:.2f}", f"{min(v):.2f}", f"{max(v):.2f}"] for m, v in rps.items()],
    )
    note = (f"{backbone.name}, {args.requests} classification requests (one SST-2 dev sentence each, mean "
            f"{statistics.mean(tokens):.1f} tokens) over {args.prompts} ULPT r=2 prompts of length {args.prompt_len}, "
            f"{args.batch} rows per batch, {args.threads} torch thread(s), {backbone.dtype}, {args.rounds} interleaved "
            f"rounds.\n\nSpeed-up with the prefix cache: **{speedup:.2f}x** (ratio of medians; per-round "
            f"{min(per_round):.2f}-{max(per_round):.2f}x; target >= 2x). Largest label-probability difference "
            f"between the modes: {diff:.2e}.")  # fmt: skip
    name = args.name or ("prefix_cache_tiny" if args.model == "tiny" else "prefix_cache")
    write_results(name, results, f"{note}\n\n{table}\n")
    print(note)
    print(table)


if __name__ == "__main__":
    main()
