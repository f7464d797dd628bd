"""Scoring P candidate prompts on the same rows in few forward passes: the one plan local and remote scoring share.

Rows of similar length go together: they are sorted by length and cut into parts of ⌊chunk / P⌋ (at least one), each
padded only to its own longest, and each forward pass holds one part under as many candidates as fit in `chunk`
rows (candidate-major, as `ScoringBatch.repeat`). On a decoder each candidate's prompt first becomes its key/value
prefix (`Backbone.as_prefix`), so its n positions run once rather than once per row. With `shared_layers` = l
(BBTv2: the candidates differ only in the deep prompts of layers >= l) the layers below l run once per part, from
candidate 0's prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.inputs import PromptInputs


def by_length(lengths: torch.Tensor, per_part: int) -> tuple[torch.Tensor, ...]:
    """Indices sorted by `lengths` (stable), in parts of at most `per_part` (at least one)."""
    return torch.argsort(lengths, stable=True).split(max(1, per_part))


@dataclass
class Pass:
    """One forward pass: part `part`'s rows, repeated once per candidate in `candidates`."""

    part: int
    candidates: torch.Tensor  # (c,) candidate indices
    prompts: PromptInputs  # c · rows rows: each candidate's prompt for each of the part's rows
    start: tuple[int, torch.Tensor] | None  # `Backbone.hidden_states(start=...)`: the shared lower layers' output


def passes(
    backbone: Backbone,
    parts: Sequence[EncodedBatch],
    prompts: PromptInputs,
    chunk_rows: int,
    shared_layers: int = 0,
    prefix: bool = True,
) -> Iterator[Pass]:
    """The forward passes that score every part under every candidate row of `prompts`. `prefix=False` keeps the
    prompts inserted in every row (as does a model that cannot hold an exact prefix, e.g. a short sliding window)."""
    reuse = shared_layers > 0 and prompts.deep is not None and backbone.can_start_at_layer
    if prefix:
        try:
            prompts = backbone.as_prefix(prompts)
        except ValueError:
            pass
    num = prompts.num_rows
    for i, part in enumerate(parts):
        per_pass = max(1, chunk_rows // len(part))  # candidates per forward pass
        shared = None
        if reuse:  # the input of layer `shared_layers`, once, with candidate 0's (shared) lower prompts
            first = prompts.select(torch.zeros(1, dtype=torch.long))
            shared = backbone.layer_inputs(part, first, layers=[shared_layers])[shared_layers]
        for start in range(0, num, per_pass):
            idx = torch.arange(start, min(start + per_pass, num))
            resume_at = None if shared is None else (shared_layers, shared.repeat(len(idx), 1, 1))
            yield Pass(i, idx, prompts.select(idx.repeat_interleave(len(part))), resume_at)
