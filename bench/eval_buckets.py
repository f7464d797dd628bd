"""A CMA-ES population on a few-shot set: parts of similar length vs one batch padded to its longest text.

`LocalEvaluator` sorts the K examples by token length and cuts them into parts of ⌊chunk_size / P⌋, each padded
only to its own longest text (one forward pass still holds about `chunk_size` rows). Before, the K examples were one
batch in their own order, padded to the longest of all K: on 16-shot SST-2 and RTE that is ~60% padding. The
"one batch" mode here is that previous behaviour (`OneBatch` below), kept only for this comparison.

Workload: BBT's call, P random candidate prompts of n vectors at the embedding scale on the 16-per-label training
set of a seed (`train_dev_k_shot`, as `softprompt blackbox --shots 16`), through each prompt's key/value prefix.
Modes alternate within each round; the table gives the median seconds per candidate (one model call), the ratio of
medians, the positions the model runs per call, and the largest difference between the two modes' probabilities.

    python bench/eval_buckets.py                                   # SmolLM2-135M, 1 thread, SST-2/RTE/MRPC
    python bench/eval_buckets.py --model tiny --data-dir data --tasks sst2 --rounds 1   # seconds-long check
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_rounds, load_model, markdown_table, write_results

from softprompt.evaluator import LocalEvaluator
from softprompt.models.hardware import dtype_name
from softprompt.models.inputs import PromptInputs
from softprompt.models.statistics import embedding_std
from softprompt.scoring import Scorer, ScoringBatch
from softprompt.tasks.base import Example
from softprompt.tasks.builtin import get_task
from softprompt.tasks.fewshot import train_dev_k_shot


class OneBatch(LocalEvaluator):
    """The previous scoring: the examples in their own order, as parts of `chunk_size` rows padded to their longest."""

    def _encode(self, examples: Sequence[Example], per_part: int) -> list[tuple[ScoringBatch, torch.Tensor]]:
        step = self.chunk_size if self.scorer.single_token else max(1, self.chunk_size // self.scorer.num_labels)
        return [
            (self.scorer.encode(examples[i : i + step]), torch.arange(i, min(i + step, len(examples))))
            for i in range(0, len(examples), step)
        ]


def positions_per_call(evaluator: LocalEvaluator, examples: Sequence[Example], candidates: int) -> int:
    """Text positions (padding included) the model runs for one candidate."""
    parts = evaluator._encode(examples, max(1, evaluator.chunk_size // candidates))
    return sum(part.encoded.input_ids.numel() for part, _ in parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, or 'tiny' for a tiny random Llama")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--tasks", nargs="+", default=["sst2", "rte", "mrpc"])
    p.add_argument("--shots", type=int, default=16, help="examples per label (the training set BBT scores)")
    p.add_argument("--seed", type=int, default=0, help="which few-shot set")
    p.add_argument("--population", type=int, default=10, help="candidates per call of label_scores")
    p.add_argument("--prompt-len", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=64, help="rows per forward pass (the blackbox CLI's default)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model)
    gen = torch.Generator().manual_seed(0)
    scale = embedding_std(backbone)
    shape = (args.population, args.prompt_len, backbone.hidden_size)
    prompts = PromptInputs(embeds=scale * torch.randn(*shape, generator=gen))
    rows, results = [], []
    for name in args.tasks:
        task = get_task(name)
        train, _ = train_dev_k_shot(task.load("train", args.data_dir), args.shots, args.seed, len(task.labels))
        scorer = Scorer(backbone, task)
        modes = {
            "grouped": LocalEvaluator(scorer, chunk_size=args.chunk_size),
            "one batch": OneBatch(scorer, chunk_size=args.chunk_size),
        }
        calls = {mode: partial(evaluator.label_scores, train, prompts) for mode, evaluator in modes.items()}
        times, scores = interleaved_rounds(calls, args.rounds, args.seed, echo=name)
        probs = {mode: s.softmax(-1) for mode, s in scores.items()}
        grouped, one = (statistics.median(times[m]) / args.population for m in modes)
        diff = float((probs["grouped"] - probs["one batch"]).abs().max())
        real = sum(len(scorer.encode([ex]).encoded.input_ids[0]) for ex in train)
        pos = {m: positions_per_call(ev, train, args.population) for m, ev in modes.items()}
        results.append({"task": name, "examples": len(train), "real_positions": real, "positions": pos,
                        "grouped_s_per_call": grouped, "one_batch_s_per_call": one, "speedup": one / grouped,
                        "max_abs_prob_diff": diff, "rounds": times})  # fmt: skip
        rows.append([name, len(train), real, pos["one batch"], pos["grouped"], f"{one:.2f}", f"{grouped:.2f}",
                     f"{one / grouped:.2f}x", f"{diff:.1e}"])  # fmt: skip
    table = markdown_table(
        ["task", "examples", "text positions", "run, one batch", "run, grouped", "one batch s/call",
         "grouped s/call", "speed-up", "max |Δ prob|"], rows)  # fmt: skip
    setup = (f"{backbone.name} ({dtype_name(backbone.dtype)}), {args.shots}-shot training sets of "
             f"seed {args.seed} from `{args.data_dir}` (train split), {args.population} candidates of n = "
             f"{args.prompt_len} per call of `label_scores`, chunk {args.chunk_size} rows, through the key/value "
             f"prefix; {args.threads} torch thread(s), median of {args.rounds} interleaved round(s). "
             "'text positions': the examples' own tokens; 'run': positions the model runs per candidate, padding "
             "included.\n\n")  # fmt: skip
    name = "eval_buckets_tiny" if args.model == "tiny" else "eval_buckets"  # a smoke run never replaces the real result
    json_path, md_path = write_results(name, {"settings": vars(args), "results": results}, setup + table)
    print(table)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
