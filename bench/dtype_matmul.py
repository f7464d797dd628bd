"""Time one matmul of SmolLM2's size, (256×576) @ (576×1536), in float32 and in bfloat16 on this CPU.

This is the shape of an MLP up-projection for a batch of 256 tokens in SmolLM2-135M (hidden 576, intermediate 1536).
It backs `--dtype auto` (models/hardware.py): bf16 is chosen only where the hardware runs it natively, because on a
CPU without AVX512-BF16/AMX the bf16 kernels are emulated and much slower than fp32.

Rounds are interleaved (each round times both dtypes once, in a fresh random order: `common.interleaved_rounds`),
so a change in load on a shared machine hits both alike; the report gives medians over rounds, min and max, the
ratio of medians and the range of the per-round ratios. One torch thread by default (the machine is shared; the
ratio is what matters).

    python bench/dtype_matmul.py                     # writes bench/results/dtype_matmul.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_rounds, machine_info, markdown_table, write_results

from softprompt.models.hardware import BF16_CPU_FLAGS, choose_dtype, cpu_flags, dtype_name

SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", *BF16_CPU_FLAGS, "amx_tile")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15, help="interleaved timed rounds (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per dtype first (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--shape", type=int, nargs=3, default=[256, 576, 1536], metavar=("M", "K", "N"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="dtype_matmul", help="result file name under bench/results/")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    m, k, n = args.shape
    gen = torch.Generator().manual_seed(args.seed)
    a32, b32 = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    inputs = {"float32": (a32, b32), "bfloat16": (a32.bfloat16(), b32.bfloat16())}
    for a, b in inputs.values():
        for _ in range(args.warmup):
            torch.matmul(a, b)

    seconds, _ = interleaved_rounds({name: partial(torch.matmul, *ab) for name, ab in inputs.items()}, args.rounds,
                                    args.seed)  # fmt: skip
    times = {name: [s * 1000.0 for s in ss] for name, ss in seconds.items()}

    median = {name: statistics.median(ts) for name, ts in times.items()}
    per_round = [bf / fp for bf, fp in zip(times["bfloat16"], times["float32"], strict=True)]
    ratio = median["bfloat16"] / median["float32"]
    flags = cpu_flags()
    auto_dtype, auto_reason = choose_dtype("cpu", flags)
    machine = machine_info()
    machine["cpu_flags_relevant"] = {flag: flag in flags for flag in SHOWN_FLAGS}
    machine["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    results = {
        "shape": {"m": m, "k": k, "n": n},
        "rounds": args.rounds,
        "warmup": args.warmup,
        "threads": args.threads,
        "ms": times,
        "median_ms": median,
        "bf16_over_fp32_ratio_of_medians": ratio,
        "per_round_ratio_range": [min(per_round), max(per_round)],
        "auto_choice_here": {"dtype": dtype_name(auto_dtype), "reason": auto_reason},
    }
    rows = [[name, f"{median[name]:.1f}", f"{min(ts):.1f}", f"{max(ts):.1f}"] for name, ts in times.items()]
    shown = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in machine["cpu_flags_relevant"].items())
    markdown = "\n".join(
        [
            f"One matmul ({m}×{k}) @ ({k}×{n}), {args.threads} torch thread(s), {args.warmup} warm-up calls per "
            f"dtype, then {args.rounds} interleaved rounds (random order within each round).",
            "",
            f"CPU flags: {shown}. torch CPU capability: {machine['torch_cpu_capability']}.",
            "",
            markdown_table(["dtype", "median ms", "min ms", "max ms"], rows),
            "",
            f"bf16 / fp32: **{ratio:.1f}×** (ratio of medians; per-round ratios {min(per_round):.1f}–"
            f"{max(per_round):.1f}×).",
            "",
            f"`--dtype auto` on this CPU: {results['auto_choice_here']['dtype']} ({auto_reason}).",
        ]
    )
    json_path, md_path = write_results(args.name, results, markdown, machine)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
