"""BBT and BBTv2 prompts: a frozen start P₀ plus seeded random projections of searched low-dimensional vectors.

    BBT:    prompt = P₀ + (z · A).view(n, D)                     z ∈ R^d,   A ∈ R^{d × n·D}
    BBTv2:  prompt = P₀,  deep[l] = (z_l · A_l).view(n, D)        z_l ∈ R^d, one A_l per layer (deep[0]: embeddings)

A ~ N(0, std²) with std = alpha·σ̂ / (√d·sigma) (Sun et al.): with z ~ N(0, sigma²) at the start of a search, A·z has
entries of std alpha·σ̂. σ̂ is the word-embedding std (input layer) or the clipped std of the hidden states entering
layer l with P₀ in place (BBTv2). `calibrate` measures it once, for gradient training and CMA-ES search alike, and
stores the resulting std in the config, so A regenerates bit-exactly from (seed, shape, std) without the model.

P₀ (n×D) is stored in the artifact as a frozen tensor (SmolLM2, n=50: 28,800 floats = 115 KB) because an artifact
is rebuilt without a model; the vocabulary ids it came from are kept in the config for the record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.projection import ProjectionSpec, SeededProjection, generate
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt, one_row

if TYPE_CHECKING:
    from softprompt.tasks.base import Example

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
    """A seeded random P₀ with the embeddings' scale (for models whose tokens cannot be embedded, e.g. remote)."""
    return generate(ProjectionSpec(derived_seed(seed, 2), prompt_len, hidden_size, "normal", std))


@dataclass
class _BBTCommon(PromptConfig):
    prompt_len: int = 50
    dim: int = 500  # d (per layer for BBTv2)
    projection_seed: int = 0  # seed of A (BBTv2: layer l uses derived_seed(seed, 1, l)) and of a random P₀
    alpha: float = 1.0  # projection std factor (see the formula above)
    sigma: float = 1.0  # the search's initial step size the projection std is scaled for
    init: BaseInit = field(
        default="vocab",
        metadata={
            "help": "P₀: embeddings of random vocabulary tokens (vocab) "
            "or a normal draw (normal; the default of `blackbox --endpoint`, which has no embeddings)"
        },
    )
    # vocabulary ids whose embeddings are P₀ (init="vocab"); set by `initialize`, not an option
    base_token_ids: list[int] | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim <= 0:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if not all(math.isfinite(v) and v > 0 for v in (self.alpha, self.sigma)):
            raise ValueError(f"alpha and sigma must be positive numbers, got {self.alpha}, {self.sigma}")
        if self.projection_seed < 0:
            raise ValueError(f"projection_seed must be >= 0, got {self.projection_seed}")
        if self.init not in ("vocab", "normal"):
            raise ValueError(f"init must be 'vocab' or 'normal', got {self.init!r}")


@dataclass
class BBTConfig(_BBTCommon):
    method: ClassVar[str] = "bbt"
    projection_std: float | None = field(default=None, metadata={"cli": False})  # set by `calibrate`

    def projection_spec(self, hidden_size: int) -> ProjectionSpec:
        if self.projection_std is None:
            raise ValueError("BBT projection std is not set (calibrate the prompt on a model first)")
        return ProjectionSpec(self.projection_seed, self.dim, self.prompt_len * hidden_size, "normal",
                              self.projection_std)  # fmt: skip


@dataclass
class BBTv2Config(_BBTCommon):
    method: ClassVar[str] = "bbtv2"
    alpha: float = 0.2  # the BBTv2 command in the authors' README
    sigma: float = 0.2
    num_layers: int = field(default=1, metadata={"cli": False})  # the model's; set when the prompt is built
    projection_stds: list[float] | None = field(default=None, metadata={"cli": False})  # one per layer, `calibrate`

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {self.num_layers}")
        if self.projection_stds is not None and len(self.projection_stds) != self.num_layers:
            raise ValueError(f"{len(self.projection_stds)} projection stds for {self.num_layers} layers")

    def layer_spec(self, layer: int, hidden_size: int) -> ProjectionSpec:
        if self.projection_stds is None:
            raise ValueError("BBTv2 projection stds are not set (calibrate the prompt on a model first)")
        std = self.projection_stds[layer]
        seed = derived_seed(self.projection_seed, 1, layer)
        return ProjectionSpec(seed, self.dim, self.prompt_len * hidden_size, "normal", std)


MAX_PROJECTION_NUMBERS = 2**30  # a bigger projection would exhaust memory before the search starts


class _WithBase(SoftPrompt):
    """P₀ (saved, frozen) and z (searched): shared start of BBT and BBTv2."""

    config: BBTConfig | BBTv2Config
    base: torch.Tensor
    z: nn.Parameter

    def __init__(self, config: BBTConfig | BBTv2Config, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        numbers = config.dim * config.prompt_len * hidden_size  # A is (d, n·D), made in one piece (per layer)
        if numbers > MAX_PROJECTION_NUMBERS:
            raise ValueError(f"dim {config.dim} x prompt_len {config.prompt_len} x hidden size {hidden_size}: the "
                             f"projection would hold {numbers:,} numbers (limit {MAX_PROJECTION_NUMBERS:,}, 4 GiB in "
                             "float32); use a smaller --dim or --prompt-len")  # fmt: skip

    def initialize(self, model: ModelAccess, seed: int) -> None:
        """P₀ from vocabulary embeddings (or seeded noise of the embeddings' scale), and z = 0: tuning starts at P₀."""
        config = self.config
        if config.init == "vocab":
            base, config.base_token_ids = model.vocab_embeddings(config.prompt_len, VOCAB_POOL, seed)
        else:
            base = normal_base(config.projection_seed, self.prompt_len, self.hidden_size, model.embedding_std())
        with torch.no_grad():
            self.base.copy_(base)
            self.z.zero_()


class BBT(_WithBase):
    """Trainable: z (d numbers). Stored: z and P₀; A is regenerated from the config."""

    config: BBTConfig

    def __init__(self, config: BBTConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.z = nn.Parameter(torch.zeros(config.dim))
        self.register_buffer("base", torch.zeros(config.prompt_len, hidden_size))  # P₀, saved
        self.projection = (
            SeededProjection(config.projection_spec(hidden_size)) if config.projection_std is not None else None
        )

    def calibrate(self, model: ModelAccess, examples: Sequence[Example]) -> None:
        if self.config.projection_std is None:
            c = self.config
            c.projection_std = projection_std(model.embedding_std(), c.dim, c.alpha, c.sigma)
            self.projection = SeededProjection(c.projection_spec(self.hidden_size))

    def prompts(self, z: torch.Tensor) -> torch.Tensor:
        """(P, d) candidates -> (P, n, D) prompts with one matmul."""
        if self.projection is None:
            raise ValueError("BBT projection std is not set (calibrate the prompt on a model first)")
        return self.base + self.projection(z.to(self.base.dtype)).view(-1, self.prompt_len, self.hidden_size)

    def materialize(self) -> PromptInputs:
        return one_row(self.prompts(self.z.unsqueeze(0))[0])


class BBTv2(_WithBase):
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

    def calibrate(self, model: ModelAccess, examples: Sequence[Example]) -> None:
        """σ̂_0: the word embeddings (as the authors); σ̂_l: the clipped std of the hidden states entering layer l
        on `examples` with P₀ in place (one forward pass)."""
        c = self.config
        if c.num_layers != model.num_layers:
            raise ValueError(f"BBTv2 prompt has {c.num_layers} layers, the model {model.num_layers}")
        if c.projection_stds is None:
            hidden = model.hidden_state_stds(examples, one_row(self.base)) if c.num_layers > 1 else []
            stds = [model.embedding_std(), *hidden[1:]]
            c.projection_stds = [projection_std(s, c.dim, c.alpha, c.sigma) for s in stds]
            self._projections.clear()
            self._deep = None

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

    def deep_prompts(self) -> torch.Tensor:
        """(L, n, D): A_l·z_l for every layer."""
        key = (self.z.data_ptr(), self.z._version)
        if self._deep is not None and self._deep[0] == key and not torch.is_grad_enabled():
            return self._deep[1]
        deep = torch.cat([self.layer_prompts(layer, self.z[layer : layer + 1]) for layer in range(len(self.z))])
        if not torch.is_grad_enabled():
            self._deep = (key, deep)
        return deep

    def materialize(self) -> PromptInputs:
        return one_row(self.base, self.deep_prompts())
