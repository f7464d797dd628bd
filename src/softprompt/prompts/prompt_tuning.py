"""Vanilla prompt tuning (Lester et al., 2021): P ∈ R^{n×D} is the parameter. n·D trainable numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn

from softprompt.prompts.base import PromptConfig, SoftPrompt

if TYPE_CHECKING:
    from softprompt.models.backbone import Backbone


@dataclass
class PromptTuningConfig(PromptConfig):
    method: ClassVar[str] = "prompt_tuning"
    # "vocab": embeddings of tokens sampled from the first `vocab_pool` ids (frequent tokens in BPE vocabularies);
    # "text": the embeddings of `init_text`, repeated to length n.
    init: Literal["vocab", "text"] = "vocab"
    init_text: str | None = None
    vocab_pool: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init == "text" and not self.init_text:
            raise ValueError("init='text' needs init_text")


def sample_vocab_embeddings(backbone: Backbone, n: int, pool: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """n rows of the word-embedding matrix, drawn without replacement from the first `pool` ids (seeded)."""
    pool = min(pool, backbone.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randperm(pool, generator=generator)[:n]
    if len(ids) < n:  # tiny vocabularies: sample with replacement
        ids = torch.randint(pool, (n,), generator=generator)
    return backbone.embed(ids.unsqueeze(0))[0].detach().clone(), ids.tolist()


def text_embeddings(backbone: Backbone, text: str, n: int) -> torch.Tensor:
    ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"init text {text!r} has no tokens")
    ids = (ids * (n // len(ids) + 1))[:n]
    return backbone.embed(torch.tensor([ids]))[0].detach().clone()


class PromptTuning(SoftPrompt):
    config: PromptTuningConfig

    def __init__(self, config: PromptTuningConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.embedding = nn.Parameter(torch.zeros(config.prompt_len, hidden_size))

    def initialize(self, backbone: Backbone, seed: int) -> None:
        if self.config.init == "text":
            values = text_embeddings(backbone, self.config.init_text or "", self.prompt_len)
        else:
            values, _ = sample_vocab_embeddings(backbone, self.prompt_len, self.config.vocab_pool, seed)
        with torch.no_grad():
            self.embedding.copy_(values)

    def forward(self) -> torch.Tensor:
        return self.embedding
