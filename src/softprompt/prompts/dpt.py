"""DPT, decomposed prompt tuning (Xiao et al., 2023): the prompt is a learnable low-rank product.

    P = U · V,   U ∈ R^{n×r}, V ∈ R^{r×D}, both learnable.   Trainable: n·r + r·D.

Initialisation (our choice; the paper starts from a random prompt): the best rank-r approximation of vanilla
prompt tuning's start, i.e. P₀ = n sampled vocabulary embeddings (or `init_text`'s), P₀ ≈ U_r S_r W_rᵀ by SVD,
U = U_r·√S_r and V = √S_r·W_rᵀ, so DPT starts where PT would, as far as rank r allows, with both factors balanced.
A rank above n (the paper counts r = 256 at n = 100) keeps the surplus columns of U at zero and the surplus rows of
V small and random, so P is still the rank-n start and every parameter gets a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt, one_row


@dataclass
class DPTConfig(PromptConfig):
    method: ClassVar[str] = "dpt"
    default_lr: ClassVar[float] = 1e-2  # as vanilla prompt tuning (the product's scale starts at PT's)
    rank: int = 10  # the ULPT paper's DPT row
    init: Literal["vocab", "text"] = "vocab"
    init_text: str | None = None
    vocab_pool: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")
        if self.init not in ("vocab", "text"):
            raise ValueError(f"DPT init must be 'vocab' or 'text', got {self.init!r}")
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init='text' needs a non-empty init_text")
        if self.vocab_pool <= 0:
            raise ValueError(f"vocab_pool must be positive, got {self.vocab_pool}")


class DPT(SoftPrompt):
    config: DPTConfig

    def __init__(self, config: DPTConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        if config.rank > hidden_size:
            raise ValueError(f"DPT rank {config.rank} exceeds the model's hidden size {hidden_size}")
        self.u = nn.Parameter(torch.zeros(config.prompt_len, config.rank))
        self.v = nn.Parameter(torch.zeros(config.rank, hidden_size))

    def initialize(self, model: ModelAccess, seed: int) -> None:
        if self.config.init == "text":
            start = model.text_embeddings(self.config.init_text or "", self.prompt_len)
        else:
            start, _ = model.vocab_embeddings(self.prompt_len, self.config.vocab_pool, seed)
        u, s, wt = torch.linalg.svd(start.float(), full_matrices=False)
        k = min(self.config.rank, len(s))  # a rank above n (the paper's r=256 at n=100) has n useful directions
        root = s[:k].sqrt()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.u.zero_()
            self.u[:, :k] = u[:, :k] * root
            # the surplus rows of V are small and random (their zero U columns still get gradients); P is unchanged
            self.v.copy_(torch.randn(self.v.shape, generator=generator) * float(start.std()) * 1e-2)
            self.v[:k] = root[:, None] * wt[:k]

    def vectors(self) -> torch.Tensor:
        return self.u @ self.v

    def materialize(self) -> PromptInputs:
        return one_row(self.vectors())
