"""The forward passes the endpoint runs, as plain functions of a `Backbone` (no web framework involved).

Scoring many candidate prompts on the same K rows: the rows are sorted by length and cut into parts of
⌊chunk_rows / P⌋ (at least one), each trimmed to its own longest row, and each forward pass scores one part under as
many candidates as fit in `chunk_rows` rows, so memory stays bounded whatever P and K are and little of the work is
padding (as `softprompt.evaluator.LocalEvaluator` does).

The statistics are the library's own (softprompt.models.statistics), so a remote search starts from the same numbers
a local one does.
"""

from __future__ import annotations

import torch

from softprompt.models import statistics
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
    candidates = wire_prompts(prompts, deep)
    reuse = shared_layers > 0 and deep is not None and backbone.can_start_at_layer
    try:  # the prompt's positions never attend to the text: run them once per candidate, as LocalEvaluator does
        candidates = backbone.as_prefix(candidates)
    except ValueError:  # no exact prefix (a sliding window shorter than the prompt): the prompt goes in every row
        pass
    k, p = len(batch), candidates.num_rows
    if logprobs:  # every scored position of every row holds a whole vocabulary's log-probabilities
        chunk_rows = max(1, min(chunk_rows, LOGPROB_VALUES // (batch.score_index.shape[1] * backbone.vocab_size)))
    token_ids = token_ids.to(backbone.device)
    out = torch.empty(p, k, batch.score_index.shape[1], len(token_ids))
    by_length = torch.argsort(batch.attention_mask.sum(1), stable=True)
    for part in by_length.split(max(1, chunk_rows // p)):  # rows of similar length, without the others' padding
        rows = batch.select(part).trimmed()
        per_pass = max(1, chunk_rows // len(part))  # candidates per forward pass
        shared = None
        if reuse:  # the input of layer `shared_layers`, once, with candidate 0's (shared) lower prompts
            first = candidates.select(torch.zeros(1, dtype=torch.long))
            shared = backbone.layer_inputs(rows, first, layers=[shared_layers])[shared_layers]
        for start in range(0, p, per_pass):
            idx = torch.arange(start, min(start + per_pass, p))
            copies = rows.select(torch.arange(len(part)).repeat(len(idx)))  # candidate-major, as ScoringBatch.repeat
            resume_at = None if shared is None else (shared_layers, shared.repeat(len(idx), 1, 1))
            row_prompts = candidates.select(idx.repeat_interleave(len(part)))
            hidden = backbone.hidden_states(copies, row_prompts, start=resume_at)
            if logprobs:
                scores = torch.log_softmax(backbone.logits(hidden).float(), dim=-1)[..., token_ids]
            else:
                scores = backbone.logits(hidden, token_ids).float()
            out[start : start + len(idx), part] = scores.view(len(idx), len(part), *scores.shape[1:]).cpu()
    return out


def embedding_std(backbone: Backbone) -> float:
    return statistics.embedding_std(backbone)


def hidden_state_stds(
    backbone: Backbone, batch: EncodedBatch, prompt: torch.Tensor, chunk_rows: int = 64
) -> list[float]:
    """Per layer: the clipped std of the hidden states entering it, with the (n, D) prompt in place."""
    one = PromptInputs(embeds=prompt.reshape(1, -1, backbone.hidden_size))
    return statistics.hidden_state_stds(backbone, batch, one, chunk_rows)
