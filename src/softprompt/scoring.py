"""Scoring a task's examples with a prompt: label scores, predictions and losses.

One `Scorer` serves gradient training, evaluation, prediction and black-box search, so every optimiser sees the
same numbers. Classification is scored on the verbalizer only:

* single-token label words (the fast path): one position per example, logits for the C label tokens only
  (a restricted softmax over them is the same as renormalising the full softmax);
* multi-token label words: each example is expanded once per label, the label's tokens are teacher-forced, and the
  label's score is the sum of its tokens' log-probabilities under the full vocabulary.

Generation targets are scored by token cross-entropy on the target (plus end-of-sequence) tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.inputs import PromptInputs
from softprompt.tasks.base import Example, Task


@dataclass
class ScoringBatch:
    encoded: EncodedBatch
    labels: torch.Tensor | None  # (B,) label indices (classification)
    targets: torch.Tensor | None  # (rows, S) token ids to score, -100 = ignore (multi-token and generation)
    num_examples: int
    rows_per_example: int  # C for multi-token classification, else 1

    def select(self, examples: torch.Tensor) -> ScoringBatch:
        """The examples `examples` (their rows), without the padding only the others needed."""
        per = self.rows_per_example
        rows = (examples[:, None] * per + torch.arange(per)).flatten()
        return ScoringBatch(
            self.encoded.select(rows).trimmed(),
            None if self.labels is None else self.labels[examples],
            None if self.targets is None else self.targets[rows],
            len(examples),
            per,
        )

    def lengths(self) -> torch.Tensor:
        """(examples,) each example's longest row in tokens."""
        return self.encoded.attention_mask.sum(1).view(self.num_examples, self.rows_per_example).amax(1)

    def repeat(self, times: int) -> ScoringBatch:
        """The same examples `times` over (example-major inside each copy): one copy per candidate prompt."""
        enc = self.encoded
        rep = EncodedBatch(
            enc.input_ids.repeat(times, 1),
            enc.attention_mask.repeat(times, 1),
            enc.score_index.repeat(times, 1),
            enc.score_mask.repeat(times, 1),
            {k: v.repeat(times, *([1] * (v.dim() - 1))) for k, v in enc.extras.items()},
            enc.num_truncated * times,
        )
        return ScoringBatch(
            rep,
            None if self.labels is None else self.labels.repeat(times),
            None if self.targets is None else self.targets.repeat(times, 1),
            self.num_examples * times,
            self.rows_per_example,
        )


class Scorer:
    def __init__(self, backbone: Backbone, task: Task) -> None:
        self.backbone = backbone
        self.task = task
        if task.kind == "classification":
            self.label_tokens = [backbone.tokenize(word) for word in task.verbalizer]
            for word, ids in zip(task.verbalizer, self.label_tokens, strict=True):
                if not ids:
                    raise ValueError(f"verbalizer word {word!r} has no tokens")
            self.single_token = all(len(ids) == 1 for ids in self.label_tokens)
            if self.single_token:
                self.label_ids = torch.tensor([ids[0] for ids in self.label_tokens])
                if len(set(self.label_ids.tolist())) != len(self.label_ids):
                    raise ValueError(f"verbalizer words {list(task.verbalizer)} map to the same token")
            elif len({tuple(t) for t in self.label_tokens}) != len(self.label_tokens):
                raise ValueError(f"verbalizer words {list(task.verbalizer)} tokenise identically")

    @property
    def num_labels(self) -> int:
        return len(self.task.labels)

    # --- encoding ----------------------------------------------------------------------------------------------
    def encode(self, examples: Sequence[Example]) -> ScoringBatch:
        texts = [self.task.render(ex) for ex in examples]
        if self.task.kind == "generation":
            eos = self.backbone.tokenizer.eos_token_id
            conts = [self.backbone.tokenize(ex.target or "") + ([eos] if eos is not None else []) for ex in examples]
            enc = self.backbone.encode(texts, conts)
            return ScoringBatch(enc, None, _pad_targets(conts), len(examples), 1)
        labels = torch.tensor([-1 if ex.label is None else ex.label for ex in examples])
        if self.single_token:
            return ScoringBatch(self.backbone.encode(texts), labels, None, len(examples), 1)
        c = self.num_labels
        conts = [self.label_tokens[j] for _ in examples for j in range(c)]
        enc = self.backbone.encode([t for t in texts for _ in range(c)], conts)
        return ScoringBatch(enc, labels, _pad_targets(conts), len(examples), c)

    # --- scores and losses -------------------------------------------------------------------------------------
    def label_scores(
        self,
        batch: ScoringBatch,
        prompt: PromptInputs | None,
        start: tuple[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(examples, C) label scores; softmax over them gives the label distribution.

        `start` (causal models): resume the forward pass at a layer from a precomputed hidden state."""
        hidden = self.backbone.hidden_states(batch.encoded, prompt, start=start)
        if self.single_token:
            return self.backbone.logits(hidden[:, 0], self.label_ids).float()
        token_logp = self._target_logprobs(hidden, batch)  # (rows,)
        return token_logp.view(batch.num_examples, batch.rows_per_example)

    def loss(self, batch: ScoringBatch, prompt: PromptInputs | None, kind: str = "ce") -> torch.Tensor:
        """Mean loss over the batch: cross-entropy on label scores (or target tokens for generation)."""
        if self.task.kind == "generation":
            hidden = self.backbone.hidden_states(batch.encoded, prompt)
            logits = self.backbone.logits(hidden).float()
            return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten().to(logits.device), ignore_index=-100)
        scores = self.label_scores(batch, prompt)
        return classification_loss(scores, batch.labels.to(scores.device), kind).mean()

    def _target_logprobs(self, hidden: torch.Tensor, batch: ScoringBatch) -> torch.Tensor:
        logp = torch.log_softmax(self.backbone.logits(hidden).float(), dim=-1)
        targets = batch.targets.to(logp.device)
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * (targets >= 0)).sum(-1)


def classification_loss(scores: torch.Tensor, labels: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Per-example loss from (..., C) label scores. `hinge`: margin 2 as in BBT; `neg_accuracy`: −1 if correct."""
    if kind == "ce":
        return F.cross_entropy(scores.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    if kind == "hinge":
        gold = scores.gather(-1, labels.unsqueeze(-1))
        margins = (2.0 - gold + scores).clamp(min=0)
        return margins.scatter(-1, labels.unsqueeze(-1), 0.0).sum(-1)
    if kind == "neg_accuracy":
        return -(scores.argmax(-1) == labels).float()
    raise ValueError(f"unknown loss {kind!r}; expected ce, hinge or neg_accuracy")


def _pad_targets(conts: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(1, max(len(c) for c in conts))
    out = torch.full((len(conts), width), -100, dtype=torch.long)
    for i, c in enumerate(conts):
        out[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
    return out
