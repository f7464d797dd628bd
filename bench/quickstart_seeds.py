"""Is the README's quick start robust? Its main command, run over several seeds, against the zero-shot template.

Each seed runs the README main command itself (`softprompt train --task sst2 --data-dir data --method ulpt --rank 2
--prompt-len 20 --steps 100 --eval-every 50 --max-eval-examples 200 --out ...`) with `--seed S` added, in-process
through the CLI; the first seed adds `--compare-zero-shot` (the bare template's test score does not depend on the
seed). Reported: each seed's test accuracy (SST-2 dev, 872 examples) and best step, their mean ± sample std, and the
margin over zero-shot. Results are written after every seed, so an interrupted run keeps what it finished.

    python bench/quickstart_seeds.py                          # fp32 (dtype auto on a CPU without AVX512-BF16/AMX)
    python bench/quickstart_seeds.py --dtype bfloat16         # ~50x slower on an AVX2-only CPU: not run here
    python bench/quickstart_seeds.py --model tiny --steps 2   # seconds-long smoke run (tiny random model)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_results

from softprompt.cli import main as cli

README_COMMAND = ["train", "--task", "sst2", "--data-dir", "data", "--method", "ulpt", "--rank", "2", "--prompt-len",
                  "20", "--steps", "100", "--eval-every", "50", "--max-eval-examples", "200"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--model", default=None, help="default: the README's (the embedded SmolLM2); 'tiny' for a smoke run")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--name", default="quickstart_seeds", help="result file name under bench/results/ (another CPU's "
                   "run beside the committed one)")  # fmt: skip
    p.add_argument("extra", nargs="*", help="options after -- replace the README's (e.g. -- --steps 200 --lr 0.1)")
    return p.parse_args()


def tiny_model_dir() -> str:
    from softprompt.models.tiny import tiny_causal_lm, tiny_tokenizer

    folder = tempfile.mkdtemp(prefix="tiny-llama-")
    tok = tiny_tokenizer()
    tiny_causal_lm("llama", vocab_size=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_seed(seed: int, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        stdout = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(stdout):
            code = cli([*argv, "--seed", str(seed), "--out", str(Path(out) / "run"), "--quiet"])
        if code:
            raise SystemExit(f"seed {seed}: softprompt train exited with {code}")
        summary = json.loads([line for line in stdout.getvalue().splitlines() if line.startswith("{")][-1])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary.pop("out", None)
    print(f"seed {seed}: {summary}", flush=True)
    return summary


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    argv = [*README_COMMAND, "--dtype", args.dtype]
    model = tiny_model_dir() if args.model == "tiny" else args.model
    if model:
        argv += ["--model", model]
    argv += args.extra  # argparse keeps the last value of a repeated option
    runs: dict[str, dict] = {}
    for i, seed in enumerate(args.seeds):
        runs[str(seed)] = run_seed(seed, argv + (["--compare-zero-shot"] if i == 0 else []))
        zero_shot = runs[str(args.seeds[0])]["zero_shot_test"]["accuracy"]
        accuracies = [r["test"]["accuracy"] for r in runs.values()]
        mean = statistics.fmean(accuracies)
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        summary = {"zero_shot_test_accuracy": zero_shot, "test_accuracy_mean": mean, "test_accuracy_std": std,
                   "margin_over_zero_shot": mean - zero_shot, "seeds_done": list(runs)}  # fmt: skip
        rows = [[seed, f"{r['test']['accuracy']:.4f}", r["best_step"], f"{r['validation']['accuracy']:.4f}",
                 r["seconds"]] for seed, r in runs.items()]  # fmt: skip
        text = (
            f"README main command (`softprompt {' '.join(argv)}`) over seeds {list(runs)}, SST-2 dev (872) as test.\n\n"
            f"**ULPT test accuracy {100 * mean:.1f} ± {100 * std:.1f}** (mean ± sample std over {len(runs)} seeds) vs "
            f"zero-shot {100 * zero_shot:.1f}: margin {100 * (mean - zero_shot):+.1f} points.\n\n"
            + markdown_table(["seed", "test accuracy", "best step", "validation accuracy", "time (s)"], rows)
        )
        write_results(args.name + ("_tiny" if args.model == "tiny" else ""),
                      {"settings": {**vars(args), "argv": argv}, "summary": summary, "runs": runs}, text,
                      machine_info())  # fmt: skip


if __name__ == "__main__":
    main()
