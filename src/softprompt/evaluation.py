"""Evaluation and prediction with a (possibly absent) prompt: one path for every tuning method and every model
access (in-process or remote). Gradient training scores its validation split here, CMA-ES search its dev set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from softprompt.evaluator import LocalEvaluator, PromptEvaluator
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.tasks.metrics import compute_metrics


@dataclass
class Prediction:
    label: str
    scores: dict[str, float]  # label -> probability


def prompt_inputs(prompt: SoftPrompt | PromptInputs | None) -> PromptInputs:
    """One prompt row, without gradients (an empty row for no prompt: the bare template)."""
    if prompt is None:
        return PromptInputs()
    if isinstance(prompt, PromptInputs):
        return prompt.detach()
    with torch.no_grad():
        return prompt.materialize().detach()


def as_evaluator(model: PromptEvaluator | Scorer) -> PromptEvaluator:
    """A `Scorer` (an in-process model and task) is scored through a `LocalEvaluator`."""
    return LocalEvaluator(model) if isinstance(model, Scorer) else model


def label_probabilities(
    evaluator: PromptEvaluator | Scorer,
    examples: Sequence[Example],
    prompt: SoftPrompt | PromptInputs | None,
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """(N, C) label probabilities in the input order."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    inputs, evaluator = prompt_inputs(prompt), as_evaluator(evaluator)
    task = evaluator.task
    # Batching rows of similar length wastes less compute on padding; the order is restored afterwards.
    order = sorted(range(len(examples)), key=lambda i: len(task.render(examples[i])))
    out = torch.empty(len(examples), len(task.labels))
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="eval", leave=False):
        idx = order[start : start + batch_size]
        scores = evaluator.label_scores([examples[i] for i in idx], inputs)[0]
        out[idx] = torch.softmax(scores.float(), dim=-1).cpu()
    return out


def evaluate(
    evaluator: PromptEvaluator | Scorer,
    examples: Sequence[Example],
    prompt: SoftPrompt | PromptInputs | None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float]:
    """The task's metrics on `examples` (plus the loss for classification, and the example count)."""
    if not examples:
        raise ValueError("no examples to evaluate")
    evaluator = as_evaluator(evaluator)
    task = evaluator.task
    if task.kind == "generation":
        predictions = evaluator.generate(examples, prompt_inputs(prompt))
        metrics = compute_metrics(task.metrics, predictions, [ex.target or "" for ex in examples])
        return {**metrics, "num_examples": len(examples)}
    probs = label_probabilities(evaluator, examples, prompt, batch_size, progress)
    labels = torch.tensor([ex.label for ex in examples])
    metrics = compute_metrics(task.metrics, probs.argmax(-1).tolist(), labels.tolist())
    loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {**metrics, "loss": loss, "num_examples": len(examples)}


def predict(
    evaluator: PromptEvaluator | Scorer,
    examples: Sequence[Example],
    prompt: SoftPrompt | PromptInputs | None,
    batch_size: int = 32,
) -> list[Prediction]:
    evaluator = as_evaluator(evaluator)
    task = evaluator.task
    if task.kind == "generation":  # the generated answer; there are no label scores
        return [Prediction(out.strip(), {}) for out in evaluator.generate(examples, prompt_inputs(prompt))]
    probs = label_probabilities(evaluator, examples, prompt, batch_size)
    return [
        Prediction(task.labels[int(row.argmax())], {name: float(v) for name, v in zip(task.labels, row, strict=True)})
        for row in probs
    ]
