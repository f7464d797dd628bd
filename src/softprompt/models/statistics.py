"""Statistics of a frozen model that prompts are initialised and calibrated from.

    embedding_std        σ̂ of all word-embedding entries (BBT's input-layer projection scale)
    hidden_state_stds    σ̂_l of the hidden states entering each layer l on some inputs, after 5 rounds of clipping
                         to μ ± 3σ over the real (non-padding) positions, prompt positions included (BBTv2)
    vocab_embeddings     n rows of the embedding matrix from seeded ids (prompt tuning's and BBT's start)

Population std (numpy's, as in the BBT authors' code). Local evaluators and the remote endpoint both call these,
so a search starts from the same numbers wherever the model runs.
"""

from __future__ import annotations

import torch

from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.inputs import PromptInputs


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
    backbone: Backbone, batch: EncodedBatch, prompt: PromptInputs, chunk_rows: int = 64
) -> list[float]:
    """Per layer l: clipped std of the hidden states entering layer l (index 0: the input embeddings)."""
    real: list[list[torch.Tensor]] = [[] for _ in range(backbone.num_layers)]
    for start in range(0, len(batch), chunk_rows):
        sub = batch.select(torch.arange(start, min(start + chunk_rows, len(batch))))
        x = backbone.insert(sub, prompt)  # the same layout the layers see, and its mask of real positions
        inputs = backbone.layer_inputs(sub, prompt)
        mask = x.mask[:, x.mask.shape[1] - x.embeds.shape[1] :].bool()
        for i, hidden in inputs.items():
            real[i].append(hidden[mask.to(hidden.device)].float().cpu())
    return [clipped_std(torch.cat(parts)) for parts in real]


def vocab_embeddings(backbone: Backbone, n: int, pool: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """n rows of the word-embedding matrix, drawn without replacement from the first `pool` ids (seeded)."""
    pool = min(pool, backbone.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randperm(pool, generator=generator)[:n]
    if len(ids) < n:  # tiny vocabularies: sample with replacement
        ids = torch.randint(pool, (n,), generator=generator)
    return backbone.embed(ids.unsqueeze(0))[0].detach().float().clone(), ids.tolist()


def text_embeddings(backbone: Backbone, text: str, n: int) -> torch.Tensor:
    """The embeddings of `text`'s tokens, repeated to length n."""
    ids = backbone.tokenize(text)
    if not ids:
        raise ValueError(f"init text {text!r} has no tokens")
    ids = (ids * (n // len(ids) + 1))[:n]
    return backbone.embed(torch.tensor([ids]))[0].detach().float().clone()
