"""Residual prompt tuning (Razdaibiedina et al., 2023): the prompt is reparametrised through a shared residual MLP.

    P' = LayerNorm(MLP(P)) + P,   MLP = Linear(D→m) → ReLU → Linear(m→D), one MLP (and LayerNorm) for every
    position, as in the authors' ResMLP (LayerNorm last inside the residual branch).
    Trainable while training: n·D + (2·D·m + m + D) + 2·D.

After training the MLP folds away: `fold()` computes P' once, and the artifact stores that n×D tensor with
`folded=True` in the config, so a `residual` artifact loads as a fixed prompt (inference and storage equal prompt
tuning's; `softprompt info` says so). P starts as n sampled vocabulary embeddings, as for prompt tuning.

Our one departure: the LayerNorm's gain starts at the model's embedding std instead of 1. LayerNorm outputs unit
variance, which on T5 (embedding std ~ 10) is a modest residual but on SmolLM2 (std ~ 0.1) would bury P under
noise 10× its size at step 0; scaled, the branch starts at the embeddings' own scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt, one_row


@dataclass
class ResidualConfig(PromptConfig):
    method: ClassVar[str] = "residual"
    default_lr: ClassVar[float] = 1e-2  # as vanilla prompt tuning
    bottleneck: int = 400  # m: the authors' default for T5
    vocab_pool: int = 5000
    # set when the artifact is written: the MLP is folded into the stored n×D prompt
    folded: bool = field(default=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bottleneck <= 0:
            raise ValueError(f"bottleneck must be positive, got {self.bottleneck}")
        if self.vocab_pool <= 0:
            raise ValueError(f"vocab_pool must be positive, got {self.vocab_pool}")

    def storage_note(self) -> str | None:
        if self.folded:
            return ("folded: the residual MLP was applied once after training and dropped; the artifact stores the "
                    "n x D prompt and loads as a fixed prompt")  # fmt: skip
        return None


class ResidualPrompt(SoftPrompt):
    config: ResidualConfig

    def __init__(self, config: ResidualConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.embedding = nn.Parameter(torch.zeros(config.prompt_len, hidden_size))
        self.mlp: nn.Sequential | None = None
        if not config.folded:
            self.mlp = nn.Sequential(
                nn.Linear(hidden_size, config.bottleneck),
                nn.ReLU(),
                nn.Linear(config.bottleneck, hidden_size),
                nn.LayerNorm(hidden_size),
            )

    def initialize(self, model: ModelAccess, seed: int) -> None:
        values, _ = model.vocab_embeddings(self.prompt_len, self.config.vocab_pool, seed)
        with torch.no_grad():
            self.embedding.copy_(values)
        if self.mlp is not None:  # the Linear layers' own (PyTorch default) init, seeded
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            for layer in self.mlp:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            torch.random.set_rng_state(generator_state)
            with torch.no_grad():
                self.mlp[3].weight.fill_(model.embedding_std())

    def vectors(self) -> torch.Tensor:
        if self.mlp is None:
            return self.embedding
        return self.mlp(self.embedding) + self.embedding

    def materialize(self) -> PromptInputs:
        return one_row(self.vectors())

    def fold(self) -> ResidualPrompt:
        if self.mlp is None:
            return self
        folded = ResidualPrompt(replace(self.config, folded=True), self.hidden_size)
        with torch.no_grad():
            folded.embedding.copy_(self.vectors())
        return folded

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """A folded state (an artifact's: the n×D prompt alone) folds this module first: the MLP is dropped."""
        if self.mlp is not None and set(tensors) == {"embedding"}:
            self.mlp = None
            self.config = replace(self.config, folded=True)
        super().load_state_tensors(tensors)
