"""The forward passes the endpoint runs, as plain functions of a `Backbone` (no web framework involved).

Scoring many candidate prompts on the same K examples: row r of the flattened (P·K) problem is example r % K under
candidate r // K, the same example-major order as `ScoringBatch.repeat(P)`. Rows are scored `chunk_rows` at a time,
so memory stays bounded whatever P and K are. The statistics are the library's own (softprompt.models.statistics),
so a remote search starts from the same numbers a local one does.
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
) -> torch.Tensor:
    """(P, K, S, C) float32: for each candidate prompt, example and score position, the logits of `token_ids`
    (or, with `logprobs`, their log-probabilities under the full vocabulary, for multi-token label words)."""
    candidates = wire_prompts(prompts, deep)
    k, p = len(batch), candidates.num_rows
    if logprobs:  # every scored position of every row holds a whole vocabulary's log-probabilities
        chunk_rows = max(1, min(chunk_rows, LOGPROB_VALUES // (batch.score_index.shape[1] * backbone.vocab_size)))
    out = []
    for start in range(0, p * k, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, p * k))
        hidden = backbone.hidden_states(batch.select(rows % k), candidates.select(rows // k))
        if logprobs:
            scores = torch.log_softmax(backbone.logits(hidden).float(), dim=-1)[..., token_ids.to(hidden.device)]
        else:
            scores = backbone.logits(hidden, token_ids).float()
        out.append(scores.cpu())
    return torch.cat(out).view(p, k, *out[0].shape[1:])


def embedding_std(backbone: Backbone) -> float:
    return statistics.embedding_std(backbone)


def hidden_state_stds(
    backbone: Backbone, batch: EncodedBatch, prompt: torch.Tensor, chunk_rows: int = 64
) -> list[float]:
    """Per layer: the clipped std of the hidden states entering it, with the (n, D) prompt in place."""
    one = PromptInputs(embeds=prompt.reshape(1, -1, backbone.hidden_size))
    return statistics.hidden_state_stds(backbone, batch, one, chunk_rows)
