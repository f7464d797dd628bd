"""The forward passes the endpoint runs, as plain functions of a `Backbone` (no web framework involved).

Scoring many candidate prompts on the same K rows: the rows are sorted by length and cut into parts of
⌊chunk_rows / P⌋ (at least one), each trimmed to its own longest row, and each forward pass scores one part under as
many candidates as fit in `chunk_rows` rows, so memory stays bounded whatever P and K are and little of the work is
padding: the plan `softprompt.evaluator.LocalEvaluator` follows too (`softprompt.models.population`).

The statistics are the library's own (softprompt.models.statistics), so a remote search starts from the same numbers
a local one does.
"""

from __future__ import annotations

import torch

from softprompt.models import population, statistics
from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.inputs import PromptInputs

LOGPROB_VALUES = 2**24  # full-vocabulary log-probabilities held at once (64 MB of float32): bounds a chunk's rows


def wire_prompts(prompts: torch.Tensor, deep: torch.Tensor | None = None) -> PromptInputs:
    """The wire's (P, n, D) candidate prompts and (L, P, n, D) deep prompts as one `PromptInputs` of P rows."""
    return PromptInputs(embeds=prompts, deep=deep)


@torch.inference_mode()
def candidate_scores(
    backbone: Backbone,
    batch: EncodedBatch,
    token_ids: torch.Tensor,
    prompts: torch.Tensor,
    deep: torch.Tensor | None = None,
    logprobs: bool = False,
    chunk_rows: int = 64,
    shared_layers: int = 0,
) -> torch.Tensor:
    """(P, K, S, C) float32: for each candidate prompt, example and score position, the logits of `token_ids`
    (or, with `logprobs`, their log-probabilities under the full vocabulary, for multi-token label words).

    shared_layers = l > 0 (BBTv2): the candidates agree on everything but the deep prompts of layers >= l, so the
    layers below l run once per part of rows, as in `LocalEvaluator.label_scores` (the caller checks the promise)."""
    k, p = len(batch), prompts.shape[0]
    if logprobs:  # every scored position of every row holds a whole vocabulary's log-probabilities
        chunk_rows = max(1, min(chunk_rows, LOGPROB_VALUES // (batch.score_index.shape[1] * backbone.vocab_size)))
    token_ids = token_ids.to(backbone.device)
    out = torch.empty(p, k, batch.score_index.shape[1], len(token_ids))
    indices = population.by_length(batch.attention_mask.sum(1), chunk_rows // p)
    parts = [batch.select(index).trimmed() for index in indices]  # rows of similar length, without others' padding
    for step in population.passes(backbone, parts, wire_prompts(prompts, deep), chunk_rows, shared_layers):
        rows, c = parts[step.part], len(step.candidates)
        copies = rows.select(torch.arange(len(rows)).repeat(c))  # candidate-major, as ScoringBatch.repeat
        hidden = backbone.hidden_states(copies, step.prompts, start=step.start)
        if logprobs:
            scores = torch.log_softmax(backbone.logits(hidden).float(), dim=-1)[..., token_ids]
        else:
            scores = backbone.logits(hidden, token_ids).float()
        out[step.candidates[:, None], indices[step.part]] = scores.view(c, len(rows), *scores.shape[1:]).cpu()
    return out


def embedding_std(backbone: Backbone) -> float:
    return statistics.embedding_std(backbone)


def hidden_state_stds(
    backbone: Backbone, batch: EncodedBatch, prompt: torch.Tensor, chunk_rows: int = 64
) -> list[float]:
    """Per layer: the clipped std of the hidden states entering it, with the (n, D) prompt in place."""
    one = PromptInputs(embeds=prompt.reshape(1, -1, backbone.hidden_size))
    return statistics.hidden_state_stds(backbone, batch, one, chunk_rows)
