"""Time one training step of soft-prompt tuning: softprompt (ULPT, vanilla prompt tuning) vs Hugging Face PEFT.

One step = zero_grad + forward + loss + backward + AdamW step on the prompt parameters (no gradient clipping, no
tokenisation: the batch is encoded once, so every step sees the same token ids). All implementations use the same
frozen weights (PEFT wraps a deep copy of softprompt's model, because `get_peft_model` modifies the model it is
given), the same sentences, the same prompt length and the same learning rate.

Implementations (what each step measures):

  softprompt-ulpt     ULPT prompt (z·A ⊙ scale + shift, rank r) through `Scorer.loss`, as the trainer runs it: the
                      prompt's n positions run once for the batch (`Backbone.as_prefix`: their keys and values, which
                      never depend on the text in a decoder, with the autograd graph), the texts attend to them; the
                      backbone runs to the final hidden states, gathered at the answer position only; logits for the
                      verbalizer tokens only (C rows of the LM head); cross-entropy over the C label scores.
  softprompt-pt       vanilla prompt tuning (an n×D matrix), same path as above.
  softprompt-pt-inserted  the same prompt tuning step with the prompt inserted before every text (n positions per
                      example, the way before the prefix; PEFT's way), so prefix/inserted is the prefix's saving.
  peft-pt-lm          PEFT PromptTuning used the way PEFT's causal-LM recipe does it: the answer token is appended
                      to each input, labels are -100 except the answer, `model(input_ids, attention_mask, labels)`
                      computes full-vocabulary logits at every position and the LM loss.  (headline baseline)
  peft-pt-verbalizer  PEFT PromptTuning with our scoring, as far as the Hugging Face API allows: same input ids as
                      softprompt, `logits_to_keep` = the answer position of each row, cross-entropy over the
                      verbalizer columns of those (full-vocabulary, B×V) logits. Same loss as softprompt-pt, so
                      comparing the two separates library overhead from the cost of the full LM head.

Rounds are interleaved (each round times every implementation once, in a fresh random order) so a change in load
on a shared machine hits all implementations alike; the report gives the median over rounds of wall-clock (and
process CPU) ms per step, the min and max, and ratios of medians together with the range of the per-round ratios.
ULPT and PT differ only in how the prompt is built, so that part is also timed on its own (microseconds, precise
even on a busy machine) to give the expected whole-step ULPT/PT.

    python bench/step_time.py --model tiny --rounds 5      # quick check on a tiny random Llama (seconds)
    python bench/step_time.py                              # the embedded SmolLM2-135M-Instruct (< 5 min)
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_results

from softprompt.api import new_prompt
from softprompt.models import DEFAULT_MODEL, Backbone, load_backbone
from softprompt.models.backbone import EncodedBatch
from softprompt.prompts import PromptTuningConfig, ULPTConfig
from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer, ScoringBatch
from softprompt.tasks.base import Example, Task

# SST-2-style movie-review snippets (written for this benchmark), label 1 = positive.
SENTENCES: list[tuple[str, int]] = [
    ("a gripping, beautifully acted drama that earns every one of its tears .", 1),
    ("the plot is so thin that even the actors seem bored by it .", 0),
    ("one of the funniest and most humane comedies of the year .", 1),
    ("a tedious , overlong mess with nothing new to say .", 0),
    ("the director keeps the tension high right up to the final frame .", 1),
    ("it 's hard to care about characters this flat and predictable .", 0),
    ("warm , clever and surprisingly moving .", 1),
    ("by the end i was checking my watch every five minutes .", 0),
    ("a small film with a big heart and a terrific lead performance .", 1),
    ("the jokes land with a thud and the story goes nowhere .", 0),
    ("an inventive , visually stunning piece of work .", 1),
    ("clumsy dialogue and lazy editing sink what could have been a decent thriller .", 0),
    ("you will leave the theater smiling .", 1),
    ("a muddled script that wastes a talented cast .", 0),
    ("smart , sharp and never less than entertaining .", 1),
    ("the film is as forgettable as its generic title .", 0),
]
TEMPLATE = "Review: {text}\nSentiment:"
VERBALIZER = (" negative", " positive")
LEARNING_RATE = 0.3  # TrainConfig's default; the same for every implementation
NOTE = (
    "The machine was shared with other developers while this ran (CPU load varies); rounds are interleaved in a "
    "random order per round so load changes affect all implementations alike, and ratios are taken from medians."
)


@dataclass
class Impl:
    name: str
    description: str
    trainable_parameters: int
    step: Callable[[], float]  # one training step; returns the loss
    losses: list[float] = field(default_factory=list)
    ms_per_step: list[float] = field(default_factory=list)  # wall clock, one entry per round
    cpu_ms_per_step: list[float] = field(default_factory=list)  # CPU time of this process (all threads), per round
    prompt: SoftPrompt | None = None  # softprompt implementations: the prompt module being trained


# --- setup ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or local path; 'tiny' = testing")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--rank", type=int, default=2, help="ULPT rank")
    parser.add_argument("--rounds", type=int, default=30, help="at most this many interleaved rounds")
    parser.add_argument("--steps-per-round", type=int, default=1, help="timed steps per implementation per round")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=200,
        help="start no round likely to end after this many seconds (0: no limit)",
    )
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per implementation first")
    parser.add_argument("--seed", type=int, default=0, help="prompt init and round order")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads (default: all CPUs; use 1 on a busy shared machine)",
    )
    parser.add_argument("--name", default=None, help="results file stem (default: step_time_<model>)")
    parser.add_argument("--note", default=NOTE, help="free text recorded with the results")
    args = parser.parse_args(argv)
    for name in ("batch_size", "prompt_len", "rank", "rounds", "steps_per_round", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def load_model(name: str) -> Backbone:
    if name == "tiny":
        from softprompt.models.tiny import tiny_backbone

        return tiny_backbone()
    return load_backbone(name)


def make_batch(scorer: Scorer, batch_size: int) -> ScoringBatch:
    examples = [Example(text=t, label=y) for t, y in (SENTENCES[i % len(SENTENCES)] for i in range(batch_size))]
    batch = scorer.encode(examples)
    if not scorer.single_token:
        raise ValueError(f"verbalizer {VERBALIZER} is not single-token for this tokenizer; the benchmark needs it")
    return batch


def with_answer_tokens(encoded: EncodedBatch, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PEFT's causal-LM recipe: [text, answer, padding] with labels -100 everywhere but the answer."""
    lengths = encoded.attention_mask.sum(1)
    size, width = encoded.input_ids.shape
    input_ids = torch.cat([encoded.input_ids, encoded.input_ids[:, -1:]], dim=1).clone()
    attention_mask = torch.zeros(size, width + 1, dtype=torch.long)
    labels = torch.full((size, width + 1), -100, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        input_ids[i, length] = answers[i]
        attention_mask[i, : length + 1] = 1
        labels[i, length] = answers[i]
    return input_ids, attention_mask, labels


# --- the implementations -------------------------------------------------------------------------------------------
def softprompt_impl(
    name: str, description: str, scorer: Scorer, batch: ScoringBatch, prompt: SoftPrompt, through_prefix: bool = True
) -> Impl:
    params = [p for p in prompt.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    prefix = scorer.backbone.as_prefix if through_prefix else lambda inputs: inputs

    def step() -> float:  # the body of the trainer's loop (grad_accum=1, no clipping)
        optimizer.zero_grad(set_to_none=True)
        loss = scorer.loss(batch, prefix(prompt.materialize()))
        loss.backward()
        optimizer.step()
        return loss.item()

    return Impl(name, description, sum(p.numel() for p in params), step, prompt=prompt)


def peft_model(backbone: Backbone, prompt_len: int, seed: int) -> torch.nn.Module:
    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import TaskType, get_peft_model

    torch.manual_seed(seed)  # PEFT's random prompt init
    config = PeftPromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prompt_len)
    return get_peft_model(copy.deepcopy(backbone.model), config)  # a copy: PEFT modifies the model it wraps


def peft_lm_impl(model: torch.nn.Module, batch: ScoringBatch, label_ids: torch.Tensor) -> Impl:
    input_ids, attention_mask, labels = with_answer_tokens(batch.encoded, label_ids[batch.labels])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        return loss.item()

    description = "PEFT PromptTuning, model(input_ids+answer, attention_mask, labels): full-vocab LM loss everywhere"
    return Impl("peft-pt-lm", description, sum(p.numel() for p in params), step)


def peft_verbalizer_impl(model: torch.nn.Module, batch: ScoringBatch, label_ids: torch.Tensor, n: int) -> Impl:
    enc = batch.encoded
    answer_position = enc.score_index[:, :1] + n  # PEFT prepends the n virtual tokens
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, logits_to_keep=answer_position)
        loss = F.cross_entropy(out.logits[:, 0, label_ids].float(), batch.labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    description = "PEFT PromptTuning, logits_to_keep=answer position, CE on the verbalizer columns (our loss)"
    return Impl("peft-pt-verbalizer", description, sum(p.numel() for p in params), step)


def build_impls(backbone: Backbone, args: argparse.Namespace) -> tuple[list[Impl], ScoringBatch, Scorer]:
    task = Task("sst2-like", TEMPLATE, labels=("negative", "positive"), verbalizer=VERBALIZER)
    scorer = Scorer(backbone, task)
    batch = make_batch(scorer, args.batch_size)

    ulpt = new_prompt(ULPTConfig(prompt_len=args.prompt_len, rank=args.rank), backbone, seed=args.seed)
    vanilla = new_prompt(PromptTuningConfig(prompt_len=args.prompt_len), backbone, seed=args.seed)
    inserted = copy.deepcopy(vanilla)  # the same start, trained the same way but for where the prompt enters

    peft = peft_model(backbone, args.prompt_len, args.seed)
    label_ids = scorer.label_ids
    impls = [
        softprompt_impl(
            "softprompt-ulpt",
            f"ULPT rank {args.rank}, Scorer.loss (verbalizer logits at the answer position only)",
            scorer,
            batch,
            ulpt,
        ),
        softprompt_impl(
            "softprompt-pt",
            "vanilla prompt tuning, Scorer.loss (verbalizer logits at the answer position only)",
            scorer,
            batch,
            vanilla,
        ),
        softprompt_impl(
            "softprompt-pt-inserted",
            "vanilla prompt tuning, Scorer.loss, the prompt inserted before every text (n positions per example)",
            scorer,
            batch,
            inserted,
            through_prefix=False,
        ),
        peft_lm_impl(peft, batch, label_ids),
        peft_verbalizer_impl(peft, batch, label_ids, args.prompt_len),
    ]
    return impls, batch, scorer


# --- timing --------------------------------------------------------------------------------------------------------
def time_steps(impl: Impl, steps: int) -> tuple[float, float]:
    """Wall-clock and process-CPU milliseconds per step over `steps` consecutive steps.

    CPU time is the steadier number on a shared machine (time spent waiting for a core is not counted), but it
    also counts threads spinning at barriers; wall clock is what a user waits for.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        impl.losses.append(impl.step())
    return (time.perf_counter() - wall) * 1000 / steps, (time.process_time() - cpu) * 1000 / steps


def run(impls: list[Impl], args: argparse.Namespace) -> None:
    """Warm up, then time interleaved rounds.

    Stops early, keeping the complete rounds, when the next round would likely end past --max-seconds (judged by
    the last round's duration) or on Ctrl-C / SIGTERM.
    """
    for impl in impls:
        for _ in range(args.warmup_steps):
            impl.losses.append(impl.step())
    order = random.Random(args.seed)
    started = last_round = time.perf_counter()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a `timeout` kill still writes the results
    try:
        for r in range(args.rounds):
            now = time.perf_counter()
            if r > 0 and args.max_seconds and (now - started) + (now - last_round) > args.max_seconds:
                print(f"--max-seconds {args.max_seconds}: stopping after {r} rounds", flush=True)
                break
            last_round = now
            for impl in order.sample(impls, len(impls)):
                wall, cpu = time_steps(impl, args.steps_per_round)
                impl.ms_per_step.append(wall)
                impl.cpu_ms_per_step.append(cpu)
            summary = ", ".join(f"{impl.name} {impl.ms_per_step[-1]:.1f}" for impl in impls)
            print(f"round {r + 1}/{args.rounds} (ms/step): {summary}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: reporting the complete rounds", flush=True)
    complete = min(len(impl.ms_per_step) for impl in impls)
    if complete == 0:
        raise SystemExit("no complete round to report")
    for impl in impls:  # drop a half-finished round so every implementation has the same rounds
        del impl.ms_per_step[complete:], impl.cpu_ms_per_step[complete:]


def prompt_side_us(prompt: SoftPrompt, repeats: int = 500, blocks: int = 5) -> float:
    """µs for the only code where ULPT and PT steps differ: build the prompt, backpropagate a fixed upstream
    gradient into its parameters, AdamW step. Best of `blocks` (the least disturbed), on a copy of the prompt.

    It takes microseconds, so unlike the whole step it can be measured precisely on a busy machine.
    """
    prompt = copy.deepcopy(prompt)
    optimizer = torch.optim.AdamW([p for p in prompt.parameters() if p.requires_grad], lr=LEARNING_RATE)
    grad = torch.randn(prompt.materialize().embeds.shape, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(repeats):
            optimizer.zero_grad(set_to_none=True)
            prompt.materialize().embeds.backward(grad)
            optimizer.step()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e6


def prefix_agreement(scorer: Scorer, batch: ScoringBatch, prompt: SoftPrompt) -> dict[str, float]:
    """Loss and prompt gradient of one batch with the prompt as its key/value prefix and inserted before every
    text, from the same start: they must agree to float tolerance."""
    out = []
    for through_prefix in (True, False):
        prompt.zero_grad(set_to_none=True)
        inputs = prompt.materialize()
        loss = scorer.loss(batch, scorer.backbone.as_prefix(inputs) if through_prefix else inputs)
        loss.backward()
        out.append((loss.item(), torch.cat([p.grad.flatten() for p in prompt.parameters() if p.grad is not None])))
    prompt.zero_grad(set_to_none=True)
    (fast_loss, fast_grad), (slow_loss, slow_grad) = out
    return {
        "loss_abs_diff": abs(fast_loss - slow_loss),
        "grad_max_abs_diff": float((fast_grad - slow_grad).abs().max()),
        "grad_max_abs": float(slow_grad.abs().max()),
        "grad_relative_l2_diff": float((fast_grad - slow_grad).norm() / slow_grad.norm()),
    }


# --- report --------------------------------------------------------------------------------------------------------
RATIOS = [  # (label, numerator, denominator, target or None)
    ("ULPT / PT (softprompt)", "softprompt-ulpt", "softprompt-pt", 1.03),
    ("PT: prompt as key/value prefix / inserted before every text", "softprompt-pt", "softprompt-pt-inserted", None),
    ("softprompt-PT / PEFT-PT, each as normally used (headline)", "softprompt-pt", "peft-pt-lm", 1.0),
    ("softprompt-PT / PEFT-PT, same verbalizer loss", "softprompt-pt", "peft-pt-verbalizer", None),
    ("PEFT verbalizer loss / PEFT LM loss", "peft-pt-verbalizer", "peft-pt-lm", None),
]


def ratios(impls: list[Impl]) -> list[dict[str, Any]]:
    by_name = {impl.name: impl for impl in impls}
    out = []
    for label, num, den, target in RATIOS:
        a, b = by_name[num], by_name[den]
        per_round = [x / y for x, y in zip(a.ms_per_step, b.ms_per_step, strict=True)]
        value = statistics.median(a.ms_per_step) / statistics.median(b.ms_per_step)
        cpu_value = statistics.median(a.cpu_ms_per_step) / statistics.median(b.cpu_ms_per_step)
        out.append(
            {
                "ratio": label,
                "numerator": num,
                "denominator": den,
                "of_medians": round(value, 4),
                "per_round_min": round(min(per_round), 4),
                "per_round_max": round(max(per_round), 4),
                "of_cpu_medians": round(cpu_value, 4),
                "target": target,
                "meets_target": None if target is None else value <= target,
            }
        )
    return out


def report(
    impls: list[Impl],
    args: argparse.Namespace,
    backbone: Backbone,
    batch: ScoringBatch,
    prompt_side: dict[str, float],
    agreement: dict[str, float],
) -> tuple[dict, str]:
    rows, impl_results = [], {}
    for impl in impls:
        med, lo, hi = statistics.median(impl.ms_per_step), min(impl.ms_per_step), max(impl.ms_per_step)
        cpu = statistics.median(impl.cpu_ms_per_step)
        impl_results[impl.name] = {
            "description": impl.description,
            "trainable_parameters": impl.trainable_parameters,
            "ms_per_step_by_round": [round(x, 3) for x in impl.ms_per_step],
            "median_ms": round(med, 3),
            "min_ms": round(lo, 3),
            "max_ms": round(hi, 3),
            "cpu_ms_per_step_by_round": [round(x, 3) for x in impl.cpu_ms_per_step],
            "median_cpu_ms": round(cpu, 3),
            "first_loss": impl.losses[0],
            "last_loss": impl.losses[-1],
        }
        loss = f"{impl.losses[0]:.3f} → {impl.losses[-1]:.3f}"
        rows.append(
            [
                impl.name,
                impl.trainable_parameters,
                f"{med:.1f}",
                f"{lo:.1f}",
                f"{hi:.1f}",
                f"{cpu:.1f}",
                loss,
                impl.description,
            ]
        )
    ratio_results = ratios(impls)
    ratio_rows = [
        [
            r["ratio"],
            f"{r['of_medians']:.3f}",
            f"{r['per_round_min']:.3f} – {r['per_round_max']:.3f}",
            f"{r['of_cpu_medians']:.3f}",
            "–" if r["target"] is None else f"≤ {r['target']}",
            "–" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO"),
        ]
        for r in ratio_results
    ]
    settings = {
        "model": backbone.name,
        "model_facts": {k: v for k, v in backbone.describe().items() if k != "fingerprint"},
        "batch_size": args.batch_size,
        "prompt_len": args.prompt_len,
        "rank": args.rank,
        "rounds": len(impls[0].ms_per_step),
        "max_rounds": args.rounds,
        "max_seconds": args.max_seconds,
        "steps_per_round": args.steps_per_round,
        "warmup_steps": args.warmup_steps,
        "seed": args.seed,
        "learning_rate": LEARNING_RATE,
        "input_tokens_per_row": batch.encoded.attention_mask.sum(1).tolist(),
        "padded_width": batch.encoded.input_ids.shape[1],
        "template": TEMPLATE,
        "verbalizer": list(VERBALIZER),
    }
    results = {
        "settings": settings,
        "note": args.note,
        "implementations": impl_results,
        "ratios": ratio_results,
        "prompt_side_us": {k: round(v, 1) for k, v in prompt_side.items()},
        "prefix_vs_inserted_first_step": agreement,
    }
    prompt_side_line = []
    if {"softprompt-ulpt", "softprompt-pt"} <= prompt_side.keys():
        extra_us = prompt_side["softprompt-ulpt"] - prompt_side["softprompt-pt"]
        fraction = extra_us / 1000 / impl_results["softprompt-pt"]["median_ms"]
        results["ulpt_extra_fraction_of_pt_step"] = fraction
        prompt_side_line = [
            "",
            f"Prompt-side cost, the only code where ULPT and PT steps differ (build the prompt, backward into its "
            f"parameters, AdamW; best of 5 × 500 repetitions): ULPT {prompt_side['softprompt-ulpt']:.0f} µs, "
            f"PT {prompt_side['softprompt-pt']:.0f} µs. ULPT adds {extra_us:.0f} µs per step = "
            f"{fraction * 100:.3f}% of the median PT step: the expected whole-step ULPT/PT is {1 + fraction:.4f}; "
            "a measured ratio further from that is machine noise (both run the same frozen-model code).",
        ]

    facts = settings["model_facts"]
    md = [
        f"Model {backbone.name} ({facts['num_layers']} layers, d={facts['hidden_size']}, "
        f"vocab {facts['vocab_size']}), batch {args.batch_size} (padded width {settings['padded_width']} tokens), "
        f"prompt length {args.prompt_len}, ULPT rank {args.rank}; {args.warmup_steps} warm-up steps per "
        f"implementation, then {len(impls[0].ms_per_step)} interleaved rounds × {args.steps_per_round} steps.",
        "",
        f"Note: {args.note}",
        "",
        "One step = zero_grad + forward + loss + backward + AdamW step on the prompt parameters (fixed pre-encoded "
        "batch, no clipping). Wall-clock ms per step: median / min / max over rounds; CPU ms: process CPU time per "
        "step (all threads), median over rounds. Targets are checked on the wall-clock ratio of medians.",
        "",
        markdown_table(
            [
                "implementation",
                "trainable",
                "median ms",
                "min ms",
                "max ms",
                "median CPU ms",
                "loss first → last",
                "what one step computes",
            ],
            rows,
        ),
        "",
        markdown_table(["ratio", "of medians", "per-round range", "of CPU-time medians", "target", "met"], ratio_rows),
        *prompt_side_line,
        "",
        f"Prompt as key/value prefix vs inserted, one step from the same start (before timing): loss differs by "
        f"{agreement['loss_abs_diff']:.2e}, the prompt gradient by at most {agreement['grad_max_abs_diff']:.2e} "
        f"(largest component {agreement['grad_max_abs']:.2e}; relative L2 {agreement['grad_relative_l2_diff']:.2e}). "
        "The timed runs' last losses can differ more: each trains its own copy at lr 0.3 (the same number of "
        "steps), and AdamW's first steps move every component by about lr whatever its size, so rounding-sized "
        "differences on near-zero components are not damped (a likely cause; not measured separately).",
    ]
    return results, "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    backbone = load_model(args.model)
    impls, batch, scorer = build_impls(backbone, args)
    inserted = next(impl for impl in impls if impl.name == "softprompt-pt-inserted")
    agreement = prefix_agreement(scorer, batch, inserted.prompt)  # before any step: the same start for both paths
    print(
        f"{backbone.name}: batch {args.batch_size}, prompt length {args.prompt_len}, "
        f"{args.rounds} rounds × {args.steps_per_round} steps, {args.threads} threads",
        flush=True,
    )
    run(impls, args)
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    prompt_side = {impl.name: prompt_side_us(impl.prompt) for impl in impls if impl.prompt is not None}
    results, markdown = report(impls, args, backbone, batch, prompt_side, agreement)
    stem = args.name or f"step_time_{'tiny' if args.model == 'tiny' else Path(args.model).name.lower()}"
    json_path, md_path = write_results(stem, results, markdown, machine=machine)
    print(markdown)
    print(f"\nwrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
