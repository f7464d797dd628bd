"""Vanilla prompt tuning (Lester et al., 2021): P ∈ R^{n×D} is the parameter. n·D trainable numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt, one_row


@dataclass
class PromptTuningConfig(PromptConfig):
    method: ClassVar[str] = "prompt_tuning"
    default_lr: ClassVar[float] = 1e-2  # best of a 40-step probe on SST-2 with SmolLM2 (3e-3, 1e-2)
    # "vocab": embeddings of tokens sampled from the first `vocab_pool` ids (frequent tokens in BPE vocabularies);
    # "text": the embeddings of `init_text`, repeated to length n.
    init: Literal["vocab", "text"] = "vocab"
    init_text: str | None = None
    vocab_pool: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("vocab", "text"):
            raise ValueError(f"prompt tuning init must be 'vocab' or 'text', got {self.init!r}")
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init='text' needs a non-empty init_text")
        if self.vocab_pool <= 0:
            raise ValueError(f"vocab_pool must be positive, got {self.vocab_pool}")


class PromptTuning(SoftPrompt):
    config: PromptTuningConfig

    def __init__(self, config: PromptTuningConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.embedding = nn.Parameter(torch.zeros(config.prompt_len, hidden_size))

    def initialize(self, model: ModelAccess, seed: int) -> None:
        if self.config.init == "text":
            values = model.text_embeddings(self.config.init_text or "", self.prompt_len)
        else:
            values, _ = model.vocab_embeddings(self.prompt_len, self.config.vocab_pool, seed)
        with torch.no_grad():
            self.embedding.copy_(values)

    def materialize(self) -> PromptInputs:
        return one_row(self.embedding)
