"""Evaluation and prediction with a (possibly absent) prompt: the same code for every tuning method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.tasks.metrics import compute_metrics


@dataclass
class Prediction:
    label: str
    scores: dict[str, float]  # label -> probability


def prompt_tensors(prompt: SoftPrompt | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if prompt is None:
        return None, None
    with torch.no_grad():
        return prompt().detach(), prompt.deep_prompts()


def _length_order(scorer: Scorer, examples: Sequence[Example]) -> list[int]:
    # Batching rows of similar length wastes less compute on padding; order is restored afterwards.
    return sorted(range(len(examples)), key=lambda i: len(scorer.task.render(examples[i])))


@torch.no_grad()
def label_probabilities(
    scorer: Scorer,
    examples: Sequence[Example],
    prompt: SoftPrompt | None,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """(N, C) label probabilities in the input order, and how many rows had to be truncated."""
    p, deep = prompt_tensors(prompt)
    order = _length_order(scorer, examples)
    out = torch.empty(len(examples), scorer.num_labels)
    truncated = 0
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="eval", leave=False):
        idx = order[start : start + batch_size]
        batch = scorer.encode([examples[i] for i in idx])
        truncated += batch.encoded.num_truncated
        out[idx] = torch.softmax(scorer.label_scores(batch, p, deep), dim=-1).cpu()
    return out, truncated


def evaluate(
    scorer: Scorer,
    examples: Sequence[Example],
    prompt: SoftPrompt | None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float]:
    """The task's metrics on `examples` (plus loss for classification, and the example count)."""
    if not examples:
        raise ValueError("no examples to evaluate")
    task = scorer.task
    if task.kind == "generation":
        p, _ = prompt_tensors(prompt)
        predictions = scorer.backbone.generate([task.render(ex) for ex in examples], p)
        references = [ex.target or "" for ex in examples]
        metrics = compute_metrics(task.metrics, predictions, references)
        return {**metrics, "num_examples": len(examples)}
    probs, truncated = label_probabilities(scorer, examples, prompt, batch_size, progress)
    labels = torch.tensor([ex.label for ex in examples])
    predictions = probs.argmax(-1)
    metrics = compute_metrics(task.metrics, predictions.tolist(), labels.tolist())
    loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {**metrics, "loss": loss, "num_examples": len(examples), "num_truncated": truncated}


def predict(
    scorer: Scorer, texts: Sequence[Example], prompt: SoftPrompt | None, batch_size: int = 32
) -> list[Prediction]:
    task = scorer.task
    if task.kind == "generation":  # the generated answer; there are no label scores
        p, _ = prompt_tensors(prompt)
        return [Prediction(out.strip(), {}) for out in scorer.backbone.generate([task.render(ex) for ex in texts], p)]
    probs, _ = label_probabilities(scorer, texts, prompt, batch_size)
    return [
        Prediction(task.labels[int(row.argmax())], {name: float(v) for name, v in zip(task.labels, row, strict=True)})
        for row in probs
    ]
