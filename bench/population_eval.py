"""Wall time of one CMA-ES generation: the population scored in batched forward passes vs candidate by candidate.

Same model, same data (the 16-shot SST-2 train set: 32 examples), same candidates. Each generation asks CMA-ES
(BBT: d=500, n=50, popsize 20 by default) for its population and scores it twice, in a random order per generation:

  batched      `LocalEvaluator.label_scores`: examples encoded once, repeated per candidate, `--chunk-size` rows per
               forward pass, verbalizer logits only (what `softprompt blackbox` does);
  one-by-one   one forward pass per candidate over the 32 pre-encoded examples (the authors' loop), same scorer.

Both must give the same scores (max |Δ| is reported). The ES is then told the batched fitness. Reported: median
seconds per generation for each (ask + projection + scoring + tell), the speedup, and the share of a batched
generation spent outside the model (ask, tell, projecting the population) — targets ≥ 5× and < 5%.

    python bench/population_eval.py --model tiny      # quick check on a tiny random Llama
    python bench/population_eval.py                   # SmolLM2-135M-Instruct; stops after --time-limit seconds
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_results

from softprompt.blackbox.cmaes import new_es, single_threaded_numpy_blas
from softprompt.blackbox.search import SearchConfig, schedule
from softprompt.blackbox.spaces import create_prompt, make_space
from softprompt.evaluator import LocalEvaluator
from softprompt.models import DEFAULT_MODEL, Backbone, load_backbone
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.bbt import BBTv2
from softprompt.scoring import Scorer, ScoringBatch, classification_loss
from softprompt.tasks.base import Example

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or local path; 'tiny' = testing")
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR") or str(DEFAULT_DATA))
    p.add_argument("--method", default="bbt", choices=["bbt", "bbtv2"])
    p.add_argument("--shots", type=int, default=16, help="per label: 16-shot SST-2 = 32 train examples")
    p.add_argument("--popsize", type=int, default=20)
    p.add_argument("--dim", type=int, default=500)
    p.add_argument("--prompt-len", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=64, help="rows per batched forward pass")
    p.add_argument("--generations", type=int, default=2, help="timed generations (bbtv2: layers spread over the stack)")
    p.add_argument("--one-by-one-sample", type=int, default=5, help="candidates timed one by one, scaled (0: all)")
    p.add_argument("--time-limit", type=float, default=240.0, help="stop after this many seconds (≥ 1 generation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all CPUs)")
    p.add_argument("--name", help="results file stem (default: population_eval_<model>)")
    return p.parse_args(argv)


def load_model(name: str) -> Backbone:
    if name == "tiny":
        from softprompt.models.tiny import tiny_backbone

        return tiny_backbone()
    return load_backbone(name)


def few_shot_train(args: argparse.Namespace) -> tuple[Any, list[Example]]:
    from softprompt.tasks.builtin import get_task
    from softprompt.tasks.fewshot import train_dev_k_shot

    task = get_task("sst2")
    train, _ = train_dev_k_shot(task.load("train", args.data_dir), args.shots, args.seed, len(task.labels))
    return task, train


def one_by_one(scorer: Scorer, encoded: ScoringBatch, prompts: PromptInputs) -> torch.Tensor:
    """(P, K, C): one forward pass per candidate row of `prompts` over the pre-encoded examples."""
    with torch.inference_mode():
        rows = [scorer.label_scores(encoded, prompts.select(torch.tensor([p]))) for p in range(prompts.num_rows)]
    return torch.stack(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model)
    task, train = few_shot_train(args)
    scorer = Scorer(backbone, task)
    evaluator = LocalEvaluator(scorer, chunk_size=args.chunk_size)
    layers = {"num_layers": backbone.num_layers} if args.method == "bbtv2" else {}
    config = SearchConfig.from_flat(args.method, dim=args.dim, prompt_len=args.prompt_len, popsize=args.popsize,
                                    budget=args.popsize * backbone.num_layers * args.generations, seed=args.seed,
                                    **layers)  # fmt: skip
    prompt = create_prompt(evaluator, config.prompt, train, config.seed)
    if isinstance(prompt, BBTv2):  # as `run_search` does: all projections cached only when small
        prompt.cache_projections = prompt.config.num_layers * prompt.config.dim * prompt.base.numel() <= 2**27
    space = make_space(prompt)
    plan = schedule(config, space.num_es)
    es_list = [new_es(space.x0(i), config.step_size, config.popsize, config.seed, i, plan.count(i), config.bounds,
                      space.stds(i))
               for i in range(space.num_es)]  # fmt: skip
    labels = torch.tensor([ex.label for ex in train])
    encoded = scorer.encode(train)
    order_rng = random.Random(args.seed)
    print(f"{backbone.name}: {len(train)} examples, popsize {args.popsize}, d={args.dim}, n={args.prompt_len}, "
          f"chunk {args.chunk_size} rows; up to {args.generations} generations or {args.time_limit:.0f} s")  # fmt: skip

    # warm-up (allocator, lazy init) outside the timings: one candidate
    with torch.no_grad():
        warm = space.candidates(0, torch.zeros(1, args.dim))
    one_by_one(scorer, encoded, warm)
    sample = min(args.one_by_one_sample or args.popsize, args.popsize)

    records: list[dict[str, float]] = []
    started = time.perf_counter()
    # BBTv2: time layers spread over the stack (the saving from reusing the lower layers grows with the layer index)
    if args.method == "bbtv2":
        timed_es = [int(x) for x in np.linspace(0, space.num_es - 1, args.generations).round()]
    else:
        timed_es = plan[: args.generations]
    modes = ["batched", "one_by_one"] + (["batched_no_reuse"] if args.method == "bbtv2" else [])
    with single_threaded_numpy_blas(), torch.no_grad():
        for generation, es_index in enumerate(timed_es):
            es = es_list[es_index]
            rec: dict[str, float] = {"es": es_index}
            t = time.perf_counter()
            solutions = es.ask()
            rec["ask_s"] = time.perf_counter() - t
            t = time.perf_counter()
            prompts = space.candidates(es_index, torch.from_numpy(np.stack(solutions)).float())
            rec["project_s"] = time.perf_counter() - t
            scores = {}
            for mode in order_rng.sample(modes, len(modes)):
                t = time.perf_counter()
                if mode == "batched":
                    before = evaluator.forward_passes
                    shared = es_index if args.method == "bbtv2" else 0  # what `softprompt blackbox` does
                    scores[mode] = evaluator.label_scores(train, prompts, shared_layers=shared)
                    rec["batched_passes"] = evaluator.forward_passes - before
                elif mode == "batched_no_reuse":
                    scores[mode] = evaluator.label_scores(train, prompts)
                else:  # a sample of the candidates; one forward each, so time scales linearly
                    scores[mode] = one_by_one(scorer, encoded, prompts.select(torch.arange(sample)))
                rec[f"{mode}_score_s"] = time.perf_counter() - t
            rec["one_by_one_score_s"] *= args.popsize / sample
            rec["max_abs_diff"] = (scores["batched"][:sample] - scores["one_by_one"]).abs().max().item()
            t = time.perf_counter()
            losses = classification_loss(scores["batched"], labels.expand(len(solutions), -1)).mean(-1)
            es.tell(solutions, [float(v) for v in losses.double()])
            space.commit(es_index, es.result.xbest)
            rec["tell_s"] = time.perf_counter() - t
            overhead = rec["ask_s"] + rec["project_s"] + rec["tell_s"]
            rec["batched_s"] = overhead + rec["batched_score_s"]
            rec["one_by_one_s"] = overhead + rec["one_by_one_score_s"]
            if "batched_no_reuse_score_s" in rec:
                rec["batched_no_reuse_s"] = overhead + rec["batched_no_reuse_score_s"]
            records.append(rec)
            print(f"generation {generation + 1}: batched {rec['batched_s']:.3f} s, one-by-one "
                  f"{rec['one_by_one_s']:.3f} s, ask+tell+projection {overhead * 1e3:.1f} ms, "
                  f"loss min {losses.min().item():.4f}, max |Δscore| {rec['max_abs_diff']:.2e}")  # fmt: skip
            if time.perf_counter() - started > args.time_limit:
                print(f"time limit reached after {generation + 1} generation(s)")
                break
    results, markdown = report(records, args, backbone, len(train))
    name = args.name or f"population_eval_{Path(args.model).name}"
    json_path, md_path = write_results(name, results, markdown, machine_info())
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


def report(records: list[dict[str, float]], args: argparse.Namespace, backbone: Backbone, k: int) -> tuple[dict, str]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in records)

    batched, single = med("batched_s"), med("one_by_one_s")
    overhead = statistics.median((r["ask_s"] + r["tell_s"] + r["project_s"]) / r["batched_s"] for r in records)
    speedup = single / batched
    passes = int(med("batched_passes"))
    results = {
        "model": backbone.describe(),
        "settings": {k_: v for k_, v in vars(args).items()},
        "examples": k,
        "forward_passes_per_generation": {"batched": passes, "one_by_one": args.popsize},
        "one_by_one_measured_candidates": min(args.one_by_one_sample or args.popsize, args.popsize),
        "generations": records,
        "median_s_per_generation": {"batched": batched, "one_by_one": single},
        "speedup": speedup,
        "ask_tell_overhead_share": overhead,
        "median_ms": {key: med(key) * 1e3 for key in ("ask_s", "tell_s", "project_s")},
        "max_abs_score_diff": max(r["max_abs_diff"] for r in records),
        "targets": {"speedup": 5.0, "overhead_share": 0.05},
    }
    if "batched_no_reuse_s" in records[0]:
        no_reuse = med("batched_no_reuse_s")
        results["median_s_per_generation"]["batched_no_reuse"] = no_reuse
        results["speedup_without_layer_reuse"] = single / no_reuse
    label = "batched + shared lower layers" if args.method == "bbtv2" else "batched"
    rows = [
        [label, passes, f"{batched:.3f}", f"{min(r['batched_s'] for r in records):.3f}",
         f"{max(r['batched_s'] for r in records):.3f}"],
        ["one-by-one", args.popsize, f"{single:.3f}", f"{min(r['one_by_one_s'] for r in records):.3f}",
         f"{max(r['one_by_one_s'] for r in records):.3f}"],
    ]  # fmt: skip
    if "batched_no_reuse_s" in records[0]:
        rows.insert(1, ["batched, every layer per candidate", passes, f"{no_reuse:.3f}",
                        f"{min(r['batched_no_reuse_s'] for r in records):.3f}",
                        f"{max(r['batched_no_reuse_s'] for r in records):.3f}"])  # fmt: skip
    summary = [
        ["speedup (one-by-one / batched, medians)", f"{speedup:.2f}×", "≥ 5×", "yes" if speedup >= 5 else "NO"],
        ["ask + tell + projection share of a batched generation", f"{overhead:.2%}", "< 5%",
         "yes" if overhead < 0.05 else "NO"],
    ]  # fmt: skip
    markdown = "\n\n".join(
        [
            f"Model {backbone.name} ({backbone.num_layers} layers, D={backbone.hidden_size}); {args.method}, "
            f"{k} examples (SST-2, {args.shots}-shot), popsize {args.popsize}, d={args.dim}, n={args.prompt_len}, "
            f"chunk {args.chunk_size} rows; {len(records)} generation(s), scoring order random per generation; "
            f"one-by-one timed on {results['one_by_one_measured_candidates']} of {args.popsize} candidates per "
            "generation and scaled to the population. "
            f"ask {results['median_ms']['ask_s']:.1f} ms, tell {results['median_ms']['tell_s']:.1f} ms, "
            f"projection {results['median_ms']['project_s']:.1f} ms (medians); "
            f"max |batched − one-by-one| score {results['max_abs_score_diff']:.2e}.",
            markdown_table(["scoring", "forward passes", "median s / generation", "min s", "max s"], rows),
            markdown_table(["ratio", "value", "target", "met"], summary),
        ]
    )
    return results, markdown


if __name__ == "__main__":
    main()
