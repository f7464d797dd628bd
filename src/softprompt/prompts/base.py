"""The interface every prompt parametrisation implements.

A `SoftPrompt` is a small module that produces the n×D prompt matrix that is prepended to the input embeddings
(and, for deep prompts, per-layer additions). It knows its trainable-parameter count and which tensors make up
its saved state; how it enters a model is `softprompt.models`' job, how it is stored is `softprompt.artifact`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from softprompt.models.backbone import Backbone


@dataclass
class PromptConfig:
    """Base config; each method subclasses it with its own fields (PEFT style)."""

    method: ClassVar[str] = ""
    prompt_len: int = 100

    def __post_init__(self) -> None:
        if self.prompt_len <= 0:
            raise ValueError(f"prompt_len must be positive, got {self.prompt_len}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


class SoftPrompt(nn.Module):
    """Produces the prompt; subclasses define the parametrisation."""

    config: PromptConfig

    def __init__(self, config: PromptConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    @property
    def prompt_len(self) -> int:
        return self.config.prompt_len

    def forward(self) -> torch.Tensor:
        """The n×D input-layer prompt."""
        raise NotImplementedError

    def deep_prompts(self) -> torch.Tensor | None:
        """L×n×D additions to the hidden states entering each layer at the prompt positions, or None (shallow)."""
        return None

    def initialize(self, backbone: Backbone, seed: int) -> None:
        """Set initial values that depend on the model (e.g. sampled vocabulary embeddings). Default: nothing."""

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What an artifact stores: every persistent tensor (frozen random projections are non-persistent)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict())
        if set(tensors) != expected:
            raise ValueError(f"{self.config.method} prompt expects tensors {sorted(expected)}, got {sorted(tensors)}")
        for name, value in tensors.items():
            have = self.state_dict()[name].shape
            if value.shape != have:
                raise ValueError(f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(have)}")
        self.load_state_dict(tensors, strict=True)
