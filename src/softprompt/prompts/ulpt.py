"""ULPT: ultra-low-dimensional prompt tuning.

    p = (z · A) ⊙ scale + shift,   z ∈ R^{n×r} learnable, A ∈ R^{r×D} frozen (seeded), scale, shift ∈ R^D learnable.

The random up-projection A is regenerated from its seed and never stored; scale and shift are shared by all prompt
positions and align the projected prompt with the model's embedding space. Trainable: n·r + 2·D (fewer with the
--no-scale / --no-shift ablations).

Variants for the paper's analyses:
    tune="projection"   z frozen (seeded N(0, 1), stored), A learnable (stored): the paper's Table 3 comparison;
                        trainable r·D + 2·D.
    neutral_init        opt-in start at the bare template's zero-shot behaviour: the authors' z behind a closed gate,
                        a learnable log-weight g added to every attention logit from the text to the prompt (all
                        layers and heads; PromptInputs.gate). At g = −∞ a decoder with rotary positions computes
                        exactly the bare template, at g = 0 exactly ULPT; it starts at `neutral_gate` (−20) and
                        opens as far as training finds useful, at its own learning rate `gate_lr` (Adam moves it
                        about that much per step; no weight decay, which would open it regardless of the data).
                        Trainable: n·r + 2·D + 1. Decoder-only models. Why a gate and not a start in prompt space:
                        no n vectors in front of the text leave it alone (sink tokens, zeros, fillers and a
                        distillation fit all lost 2.6-32 points at step 0; bench/results/ulpt_neutral_init_rejected.md),
                        and a gate of −12 still cost 14.8 points at n = 100: the first prompt position takes over the
                        attention sink, whose logits sit far above the text's (bench/results/ulpt_neutral_init.md).
                        Measured on SmolLM2/SST-2: within 0.34 points of the bare template at step 0 (n = 100 and 20),
                        but the gate did not open in 30-150 training steps, so the prompt then changed nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs
from softprompt.projection import Distribution, ProjectionSpec, SeededProjection, generate, xavier_std
from softprompt.prompts.base import ModelAccess, PromptConfig, SoftPrompt

Tuned = Literal["z", "projection"]


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
    neutral_init: bool = field(default=False, metadata={"help": "opt-in start at the bare template's zero-shot "
                               "behaviour: the prompt behind a closed, learnable gate (decoders)"})  # fmt: skip
    neutral_gate: float = field(default=-20.0, metadata={"help": "with --neutral-init: the gate's start, the "
                                "log-weight added to the text's attention logits on the prompt"})  # fmt: skip
    gate_lr: float = field(default=1.0, metadata={"help": "with --neutral-init: the gate's learning rate"})

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
        if not math.isfinite(self.neutral_gate):
            raise ValueError(f"neutral_gate must be a finite number, got {self.neutral_gate}")
        if not (math.isfinite(self.gate_lr) and self.gate_lr > 0):
            raise ValueError(f"gate_lr must be a positive number, got {self.gate_lr}")

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
        self.gate = nn.Parameter(torch.full((1,), config.neutral_gate)) if config.neutral_init else None

    def initialize(self, model: ModelAccess | None, seed: int) -> None:
        # z ~ N(0, 1) as in the authors' code; seeded so runs are reproducible.
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.z.copy_(torch.randn(self.z.shape, generator=generator))
            if self.gate is not None:
                self.gate.fill_(self.config.neutral_gate)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        groups = [{"params": [p for name, p in self.named_parameters() if p.requires_grad and name != "gate"],
                   "lr": lr}]  # fmt: skip
        if self.gate is not None:
            groups.append({"params": [self.gate], "lr": self.config.gate_lr, "weight_decay": 0.0})
        return groups

    def up(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight if self.projection is None else self.projection(z)

    def vectors(self) -> torch.Tensor:
        """The n×D prompt."""
        return self.up(self.z) * self.scale + self.shift

    def materialize(self) -> PromptInputs:
        return PromptInputs(embeds=self.vectors().unsqueeze(0), gate=self.gate)

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
