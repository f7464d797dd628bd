"""DePT, decomposed prompt tuning with a text update (Shi & Lipani, 2024): a shorter prompt plus a low-rank update
of the text's own token embeddings.

    input = [P; E(x) + A·B],   P ∈ R^{m×D},  A ∈ R^{s×r},  B ∈ R^{r×D},   s = the longest text (the model's
    --max-length): row i of A·B is added to the embedding of text token i.   Trainable: m·D + r·(s + D).

Two learning rates (`param_groups`): P at the training lr (as prompt tuning), A and B at `lr_lowrank`; the
authors' code uses a small one for the pair (1e-4; their GLUE scripts sweep around it). The update starts at zero,
LoRA style: A ~ N(0, 1/r) seeded, B = 0, so the first step sees exactly the model with an m-vector prompt.
T5-base, m = 60, r = 30, s = 256: 46,080 + 30,720 = 76,800, PT's budget at n = 100.

The text update is not an input-layer prompt: a PEFT prompt-tuning adapter cannot express it
(`beyond_input_embeds()` says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from softprompt.models.dims import ModelDims
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt


@dataclass
class DePTConfig(PromptConfig):
    method: ClassVar[str] = "dept"
    default_lr: ClassVar[float] = 1e-2  # the prompt's (as vanilla prompt tuning); the pair uses lr_lowrank
    prompt_len: int = 60  # m
    rank: int = 30  # r
    lr_lowrank: float = field(default=1e-4, metadata={"help": "learning rate of the low-rank pair A, B"})
    # s: text positions the update covers; default (None) the model's --max-length, filled in when built on a model
    text_len: int | None = None
    vocab_pool: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")
        if not self.lr_lowrank > 0:
            raise ValueError(f"lr_lowrank must be positive, got {self.lr_lowrank}")
        if self.text_len is not None and self.text_len <= 0:
            raise ValueError(f"text_len must be positive, got {self.text_len}")
        if self.vocab_pool <= 0:
            raise ValueError(f"vocab_pool must be positive, got {self.vocab_pool}")

    def for_model(self, shape: ModelDims) -> DePTConfig:
        config = super().for_model(shape)
        if config.text_len is None:
            if shape.max_length is None:
                raise ValueError("DePT's text length s is the model's max length, unknown here: set text_len")
            config.text_len = shape.max_length
        return config


class DePT(SoftPrompt):
    config: DePTConfig

    def __init__(self, config: DePTConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        if config.text_len is None:
            raise ValueError("DePT needs text_len (the longest text); build it on a model or set text_len")
        self.embedding = nn.Parameter(torch.zeros(config.prompt_len, hidden_size))
        self.lowrank_a = nn.Parameter(torch.zeros(config.text_len, config.rank))
        self.lowrank_b = nn.Parameter(torch.zeros(config.rank, hidden_size))

    def initialize(self, model: ModelAccess, seed: int) -> None:
        values, _ = model.vocab_embeddings(self.prompt_len, self.config.vocab_pool, seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.embedding.copy_(values)
            self.lowrank_a.copy_(torch.randn(self.lowrank_a.shape, generator=generator) / self.config.rank**0.5)
            self.lowrank_b.zero_()

    def text_update(self) -> torch.Tensor:
        """(s, D): added to the first s text-token embeddings."""
        return self.lowrank_a @ self.lowrank_b

    def materialize(self) -> PromptInputs:
        return PromptInputs(embeds=self.embedding.unsqueeze(0), text_delta=self.text_update().unsqueeze(0))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [self.embedding], "lr": lr},
            {"params": [self.lowrank_a, self.lowrank_b], "lr": self.config.lr_lowrank},
        ]
