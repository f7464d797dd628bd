"""What gradient-free search needs from a model: forward passes that score many candidate prompts at once.

Black-box tuning only ever calls this interface. `LocalEvaluator` implements it on an in-process `Backbone`;
`softprompt.remote.client.RemoteEvaluator` implements it over HTTP against `softprompt serve-lm`, with no access
to weights or gradients. Both must return the same numbers for the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from softprompt.tasks.base import Example


class PromptEvaluator(Protocol):
    @property
    def hidden_size(self) -> int: ...

    @property
    def num_layers(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """Model identity (name, kind, hidden size, layers, fingerprint) for the artifact."""
        ...

    def embedding_std(self) -> float:
        """Std of all word-embedding entries (BBT's σ̂ for the input-layer projection)."""
        ...

    def hidden_state_stds(self, examples: Sequence[Example], prompt: torch.Tensor) -> list[float]:
        """Per layer l: std of the hidden states entering layer l on these inputs with `prompt` (n×D) in place,
        after 5 rounds of clipping to μ ± 3σ (BBTv2's σ̂_l). Index 0 is the input embeddings."""
        ...

    def label_scores(
        self,
        examples: Sequence[Example],
        prompts: torch.Tensor,
        deep: torch.Tensor | None = None,
        shared_layers: int = 0,
    ) -> torch.Tensor:
        """(P, K, C) label scores of K examples under each of P candidate prompts.

        prompts: (P, n, D) input-layer prompts; deep: (L, P, n, D) per-layer additions or None.
        shared_layers: a promise that prompts and deep[:shared_layers] are equal across candidates, which an
        implementation may exploit (compute the lower layers once); it must not change the result.
        """
        ...
