"""ULPT: ultra-low-dimensional prompt tuning.

    p = (z · A) ⊙ scale + shift,   z ∈ R^{n×r} learnable, A ∈ R^{r×D} frozen (seeded), scale, shift ∈ R^D learnable.

The random up-projection A is regenerated from its seed and never stored; scale and shift are shared by all prompt
positions and align the projected prompt with the model's embedding space. Trainable: n·r + 2·D (fewer with the
--no-scale / --no-shift ablations).

Variants for the paper's analyses:
    tune="projection"   z frozen (seeded N(0, 1), stored), A learnable (stored): the paper's Table 3 comparison;
                        trainable r·D + 2·D.
    neutral_init        opt-in start that keeps the template's zero-shot behaviour as far as a prompt can:
                        p_0 = the embedding of `neutral_sink` (<|endoftext|>: what a decoder's documents follow,
                        so it takes over the first text token's attention-sink role) and p_1..p_{n-1} ≈ 0 (rms
                        1e-4: RMSNorm maps them to ~0, so they add no keys or values, only a little softmax mass),
                        expressed exactly in ULPT's form: z_0 = e_1, scale = sink ⊘ (e_1·A), shift = 0,
                        z_i = δ(1 + 0.1ε)e_1. Then `neutral_steps` (default 0) steps of the distillation fit of
                        softprompt/training/neutral.py. Why not copies or random vectors: identical vectors are n
                        attention sinks, random ones are read as text (bench/results/ulpt_neutral_init.md and
                        ulpt_neutral_init_rejected.md measure all of them against the bare template). On all 872
                        SST-2 dev sentences with SmolLM2 it is -4.01 points from the bare template at n = 100 (the
                        authors' start -5.85) and -2.64 at n = 20 (-2.18): not yet within the one point aimed at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.projection import Distribution, ProjectionSpec, SeededProjection, generate, xavier_std
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt, one_row

Tuned = Literal["z", "projection"]
NEUTRAL_RMS = 1e-4  # rms of the neutral start's positions after the first: RMSNorm (eps 1e-5) maps them near 0


@dataclass
class ULPTConfig(PromptConfig):
    method: ClassVar[str] = "ulpt"
    default_lr: ClassVar[float] = 3e-2  # best of a 40-step probe on SST-2 with SmolLM2 (1e-2, 3e-2, 1e-1)
    rank: int = 2
    projection_seed: int = 0  # seed of the frozen projection A
    distribution: Distribution = "normal"
    projection_scale: float | None = None  # default: Glorot scale for (rank, D)
    use_scale: bool = True
    use_shift: bool = True
    tune: Tuned = "z"  # "projection": z frozen, A learnable (the paper's Table 3)
    neutral_init: bool = field(default=False, metadata={"help": "opt-in start near the bare template's zero-shot "
                               "behaviour: the sink token, then near-zero vectors (not z ~ N(0, 1))"})  # fmt: skip
    neutral_steps: int = field(default=0, metadata={"help": "after the neutral start, this many steps distilling the "
                               "bare template's next-token distributions (training texts, labels unused)"})  # fmt: skip
    neutral_sink: str = field(default="<|endoftext|>", metadata={"help": "the neutral start's first position: this "
                              "token's embedding (what the model's documents follow)"})  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")
        if self.distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {self.distribution!r}")
        scale = self.projection_scale
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"projection_scale must be a positive number, got {self.projection_scale}")
        if self.projection_seed < 0:
            raise ValueError(f"projection_seed must be >= 0, got {self.projection_seed}")
        if self.tune not in ("z", "projection"):
            raise ValueError(f"tune must be 'z' or 'projection', got {self.tune!r}")
        if self.neutral_steps < 0:
            raise ValueError(f"neutral_steps must be >= 0, got {self.neutral_steps}")

    def projection_spec(self, hidden_size: int) -> ProjectionSpec:
        scale = self.projection_scale
        if scale is None:
            std = xavier_std(self.rank, hidden_size)
            # a uniform U(-b, b) with the same variance has b = std·√3 (= the authors' Xavier-uniform bound)
            scale = std if self.distribution == "normal" else std * 3**0.5
        if self.rank > hidden_size:
            raise ValueError(f"rank {self.rank} exceeds the model's hidden size {hidden_size}")
        return ProjectionSpec(self.projection_seed, self.rank, hidden_size, self.distribution, scale)


class ULPT(SoftPrompt):
    config: ULPTConfig

    def __init__(self, config: ULPTConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        spec = config.projection_spec(hidden_size)
        if config.tune == "projection":
            self.projection = None
            self.weight = nn.Parameter(generate(spec))  # starts where the seeded A is; stored, since it is tuned
        else:
            self.projection = SeededProjection(spec)
        self.z = nn.Parameter(torch.zeros(config.prompt_len, config.rank), requires_grad=config.tune == "z")
        # Disabled scale/shift stay as frozen constants so the formula (and the saved state) keeps one shape.
        self.scale = nn.Parameter(torch.ones(hidden_size), requires_grad=config.use_scale)
        self.shift = nn.Parameter(torch.zeros(hidden_size), requires_grad=config.use_shift)

    def initialize(self, model: ModelAccess | None, seed: int) -> None:
        # z ~ N(0, 1) as in the authors' code; seeded so runs are reproducible.
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.z.copy_(torch.randn(self.z.shape, generator=generator))
            if self.config.neutral_init and self.config.tune == "z" and model is not None:
                self._sink_start(model.text_embeddings(self.config.neutral_sink, 1)[0], generator)

    def _sink_start(self, sink: torch.Tensor, generator: torch.Generator) -> None:
        """p_0 = the sink token's embedding, p_i≥1 = near-zero vectors (rms NEUTRAL_RMS): z_0 = e_1 and
        scale = sink / (e_1·A) exactly, shift = 0; z_i = δ·(1 + 0.1·ε)·e_1: the sink's direction, tiny."""
        u = self.up(torch.eye(self.config.rank)[:1])[0]
        u = torch.where(u.abs() < 1e-6, torch.full_like(u, 1e-6), u)  # no division by an exact zero
        delta = NEUTRAL_RMS / float(sink.pow(2).mean().sqrt())
        z = torch.zeros(self.z.shape)
        z[:, 0] = delta * (1 + 0.1 * torch.randn(self.config.prompt_len, generator=generator))
        z[0, 0] = 1.0
        self.z.copy_(z)
        self.scale.copy_(sink / u)
        self.shift.zero_()

    def up(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight if self.projection is None else self.projection(z)

    def vectors(self) -> torch.Tensor:
        """The n×D prompt."""
        return self.up(self.z) * self.scale + self.shift

    def materialize(self) -> PromptInputs:
        return one_row(self.vectors())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        # A frozen ones/zeros vector carries no information: leave it out of the artifact.
        state = super().state_tensors()
        if not self.config.use_scale:
            del state["scale"]
        if not self.config.use_shift:
            del state["shift"]
        return state

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        full = dict(tensors)
        if not self.config.use_scale:
            full.setdefault("scale", torch.ones(self.hidden_size))
        if not self.config.use_shift:
            full.setdefault("shift", torch.zeros(self.hidden_size))
        super().load_state_tensors(full)
