"""The forward passes the endpoint runs, as plain functions of a `Backbone` (no web framework involved).

Scoring many candidate prompts on the same K examples: row r of the flattened (P·K) problem is example r % K under
candidate r // K, the same example-major order as `ScoringBatch.repeat(P)`. Rows are scored `chunk_rows` at a time,
so memory stays bounded whatever P and K are.

The statistics follow BBT/BBTv2 (see `PromptEvaluator`): population std (numpy's, as in the authors' code), and for
hidden states 5 rounds of clipping to μ ± 3σ over the real (non-padding) positions, prompt positions included.
"""

from __future__ import annotations

import torch

from softprompt.models.backbone import Backbone, EncodedBatch


def select_rows(batch: EncodedBatch, rows: torch.Tensor) -> EncodedBatch:
    return EncodedBatch(
        batch.input_ids[rows],
        batch.attention_mask[rows],
        batch.score_index[rows],
        batch.score_mask[rows],
        {k: v[rows] for k, v in batch.extras.items()},
    )


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
    k, p = len(batch), prompts.shape[0]
    out = []
    for start in range(0, p * k, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, p * k))
        cand = rows // k
        hidden = backbone.hidden_states(
            select_rows(batch, rows % k), prompts[cand], None if deep is None else deep[:, cand]
        )
        if logprobs:
            scores = torch.log_softmax(backbone.logits(hidden).float(), dim=-1)[..., token_ids.to(hidden.device)]
        else:
            scores = backbone.logits(hidden, token_ids).float()
        out.append(scores.cpu())
    return torch.cat(out).view(p, k, *out[0].shape[1:])


def clipped_std(values: torch.Tensor, rounds: int = 5, width: float = 3.0) -> float:
    """Std after `rounds` of clipping to mean ± width·std: robust to the few huge activations some layers have."""
    x = values.double().flatten()
    for _ in range(rounds):
        mu, sigma = x.mean(), x.std(correction=0)
        x = x.clamp(mu - width * sigma, mu + width * sigma)
    return float(x.std(correction=0))


@torch.inference_mode()
def embedding_std(backbone: Backbone) -> float:
    return float(backbone.word_embeddings.weight.double().std(correction=0))


@torch.inference_mode()
def hidden_state_stds(
    backbone: Backbone, batch: EncodedBatch, prompt: torch.Tensor, chunk_rows: int = 64
) -> list[float]:
    """Per layer l: clipped std of the hidden states entering layer l (index 0: the input embeddings)."""
    prompt = prompt.reshape(1, -1, backbone.hidden_size)
    real: list[list[torch.Tensor]] = [[] for _ in range(backbone.num_layers)]
    for start in range(0, len(batch), chunk_rows):
        sub = select_rows(batch, torch.arange(start, min(start + chunk_rows, len(batch))))
        inputs = backbone.layer_inputs(sub, prompt)
        # Every adapter inserts the prompt at or after the first token, which is always real, so [ones(n); mask]
        # marks exactly the real positions of the sequence the layers see.
        mask = torch.cat([sub.attention_mask.new_ones(len(sub), prompt.shape[1]), sub.attention_mask], dim=1).bool()
        for i, hidden in inputs.items():
            real[i].append(hidden[mask.to(hidden.device)].float().cpu())
    return [clipped_std(torch.cat(parts)) for parts in real]
