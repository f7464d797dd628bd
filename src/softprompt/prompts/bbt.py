"""BBT and BBTv2 prompts: a frozen start P₀ plus seeded random projections of searched low-dimensional vectors.

    BBT:    prompt = P₀ + (z · A).view(n, D)                     z ∈ R^d,   A ∈ R^{d × n·D}
    BBTv2:  prompt = P₀,  deep[l] = (z_l · A_l).view(n, D)        z_l ∈ R^d, one A_l per layer (deep[0]: embeddings)

A ~ N(0, std²) with std = alpha·σ̂ / (√d·sigma) (Sun et al.): σ̂ is the word-embedding std (input layer) or the
clipped std of the hidden states entering layer l (BBTv2). The std is computed once when a search starts and
stored in the config, so A regenerates bit-exactly from (seed, shape, std) without the model.

P₀ (n×D) is stored in the artifact as a frozen tensor (SmolLM2, n=50: 28,800 floats = 115 KB) because an artifact
is rebuilt without a model; the vocabulary ids it came from are kept in the config for the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from softprompt.projection import ProjectionSpec, SeededProjection, generate
from softprompt.prompts.base import PromptConfig, SoftPrompt
from softprompt.prompts.prompt_tuning import sample_vocab_embeddings

if TYPE_CHECKING:
    from softprompt.models.backbone import Backbone

BaseInit = Literal["vocab", "normal"]  # P₀: sampled vocabulary embeddings, or seeded N(0, σ̂²) (no weights needed)
VOCAB_POOL = 5000  # P₀ tokens are drawn from the first ids, as for vanilla prompt tuning


def projection_std(std_hat: float, dim: int, alpha: float, sigma: float) -> float:
    """BBT's projection std: z ~ N(0, sigma²) then gives A·z entries with std alpha·σ̂ at the start of the search."""
    return alpha * std_hat / (math.sqrt(dim) * sigma)


def derived_seed(seed: int, *keys: int) -> int:
    """An independent seed for a sub-stream (a layer's projection, a random P₀), stable across numpy versions."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))  # ProjectionSpec wants [0, 2**63)


def normal_base(seed: int, prompt_len: int, hidden_size: int, std: float) -> torch.Tensor:
    """A seeded random P₀ with the embeddings' scale (for evaluators that cannot embed tokens)."""
    return generate(ProjectionSpec(derived_seed(seed, 2), prompt_len, hidden_size, "normal", std))


@dataclass
class BBTConfig(PromptConfig):
    method: ClassVar[str] = "bbt"
    prompt_len: int = 50
    dim: int = 500
    seed: int = 0  # seed of A (and of the P₀ sample)
    projection_std: float | None = None  # None: set from the model's embedding std in `initialize` (alpha=sigma=1)
    init: BaseInit = "vocab"
    base_token_ids: list[int] | None = None  # vocabulary ids whose embeddings are P₀ (init="vocab")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim <= 0:
            raise ValueError(f"dim must be positive, got {self.dim}")

    def projection_spec(self, hidden_size: int) -> ProjectionSpec:
        if self.projection_std is None:
            raise ValueError("BBT projection std is not set (initialize the prompt on a model first)")
        return ProjectionSpec(self.seed, self.dim, self.prompt_len * hidden_size, "normal", self.projection_std)


def _vocab_base(backbone: Backbone, config: BBTConfig | BBTv2Config, seed: int) -> torch.Tensor:
    values, ids = sample_vocab_embeddings(backbone, config.prompt_len, VOCAB_POOL, seed)
    config.base_token_ids = ids
    return values


def _embedding_std(backbone: Backbone) -> float:
    return float(backbone.word_embeddings.weight.double().std(correction=0))


class BBT(SoftPrompt):
    """Trainable: z (d numbers). Stored: z and P₀; A is regenerated from the config."""

    config: BBTConfig

    def __init__(self, config: BBTConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.z = nn.Parameter(torch.zeros(config.dim))
        self.register_buffer("base", torch.zeros(config.prompt_len, hidden_size))  # P₀, saved
        self.projection = (
            SeededProjection(config.projection_spec(hidden_size)) if config.projection_std is not None else None
        )

    def initialize(self, backbone: Backbone, seed: int) -> None:
        std_hat = _embedding_std(backbone)
        if self.config.projection_std is None:
            self.config.projection_std = projection_std(std_hat, self.config.dim, 1.0, 1.0)
            self.projection = SeededProjection(self.config.projection_spec(self.hidden_size))
        _start_at_base(self, backbone, seed, std_hat)

    def prompts(self, z: torch.Tensor) -> torch.Tensor:
        """(P, d) candidates -> (P, n, D) prompts with one matmul."""
        if self.projection is None:
            raise ValueError("BBT projection std is not set (initialize the prompt on a model first)")
        return self.base + self.projection(z.to(self.base.dtype)).view(-1, self.prompt_len, self.hidden_size)

    def forward(self) -> torch.Tensor:
        return self.prompts(self.z.unsqueeze(0))[0]


@dataclass
class BBTv2Config(PromptConfig):
    method: ClassVar[str] = "bbtv2"
    prompt_len: int = 50
    dim: int = 500  # per layer
    num_layers: int = 1
    seed: int = 0  # layer l's A uses derived_seed(seed, 1, l)
    projection_stds: list[float] | None = None  # one per layer, set when the search starts
    init: BaseInit = "vocab"
    base_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim <= 0 or self.num_layers <= 0:
            raise ValueError(f"dim and num_layers must be positive, got {self.dim}, {self.num_layers}")
        if self.projection_stds is not None and len(self.projection_stds) != self.num_layers:
            raise ValueError(f"{len(self.projection_stds)} projection stds for {self.num_layers} layers")

    def layer_spec(self, layer: int, hidden_size: int) -> ProjectionSpec:
        if self.projection_stds is None:
            raise ValueError("BBTv2 projection stds are not set (initialize the prompt on a model first)")
        std = self.projection_stds[layer]
        return ProjectionSpec(derived_seed(self.seed, 1, layer), self.dim, self.prompt_len * hidden_size, "normal", std)


class BBTv2(SoftPrompt):
    """Trainable: z (L×d). Stored: z and P₀.

    All L projections together are L·d·n·D floats (SmolLM2, n=50, d=500: 1.7 GB), so A_l is regenerated when needed
    and cached only if `cache_projections` is set; the deep prompts (L×n×D, small) are cached per value of z.
    """

    config: BBTv2Config

    def __init__(self, config: BBTv2Config, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.z = nn.Parameter(torch.zeros(config.num_layers, config.dim))
        self.register_buffer("base", torch.zeros(config.prompt_len, hidden_size))
        self.cache_projections = False
        self._projections: dict[int, torch.Tensor] = {}
        self._deep: tuple[tuple[int, int], torch.Tensor] | None = None

    def initialize(self, backbone: Backbone, seed: int) -> None:
        """Fresh prompt on a local model; the per-layer stds need train inputs, so only the input layer's
        (embedding) std is known here and deeper layers reuse it unless the config already carries stds."""
        std_hat = _embedding_std(backbone)
        if self.config.projection_stds is None:
            self.config.projection_stds = [projection_std(std_hat, self.config.dim, 1.0, 1.0)] * self.config.num_layers
        _start_at_base(self, backbone, seed, std_hat)

    def projection(self, layer: int) -> torch.Tensor:
        """A_l (d × n·D)."""
        if layer in self._projections:
            return self._projections[layer]
        weight = generate(self.config.layer_spec(layer, self.hidden_size))
        if self.cache_projections:
            self._projections[layer] = weight
        return weight

    def layer_prompts(self, layer: int, z: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(P, d) candidates for one layer -> (P, n, D) additions."""
        weight = self.projection(layer) if weight is None else weight
        return (z.to(weight.dtype) @ weight).view(-1, self.prompt_len, self.hidden_size)

    def forward(self) -> torch.Tensor:
        return self.base

    def deep_prompts(self) -> torch.Tensor:
        key = (self.z.data_ptr(), self.z._version)
        if self._deep is not None and self._deep[0] == key and not torch.is_grad_enabled():
            return self._deep[1]
        deep = torch.cat([self.layer_prompts(layer, self.z[layer : layer + 1]) for layer in range(len(self.z))])
        if not torch.is_grad_enabled():
            self._deep = (key, deep)
        return deep


def _start_at_base(prompt: BBT | BBTv2, backbone: Backbone, seed: int, std_hat: float) -> None:
    """P₀ from vocabulary embeddings (or seeded noise of the embeddings' scale), and z = 0: the search starts at P₀."""
    config = prompt.config
    if config.init == "vocab":
        base = _vocab_base(backbone, config, seed)
    else:
        base = normal_base(config.seed, prompt.prompt_len, prompt.hidden_size, std_hat)
    with torch.no_grad():
        prompt.base.copy_(base)
        prompt.z.zero_()
