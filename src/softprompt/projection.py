"""The seeded random projection shared by ULPT and BBT/BBTv2.

A projection is a frozen matrix A ∈ R^{in_dim × out_dim} that is never stored: an artifact records its
`ProjectionSpec` (seed, shape, distribution, scale) and the matrix is regenerated on load.

Bit-exactness: numbers come from NumPy's PCG64 bit generator (its raw stream is fixed by the algorithm, not by the
CPU or library build). Uniform draws are integer-to-float conversions, exact everywhere; normal draws use NumPy's
ziggurat sampler in float64, which only calls libm in its rare tail branch, and the result is rounded to float32.
`tests/test_projection.py` pins values for a fixed seed so any drift is caught.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Distribution = Literal["normal", "uniform"]
GENERATOR = "numpy-pcg64-v1"  # bump if the way numbers are drawn ever changes


@dataclass(frozen=True)
class ProjectionSpec:
    seed: int
    in_dim: int
    out_dim: int
    distribution: Distribution = "normal"
    # normal: standard deviation; uniform: half-width of U(-scale, +scale)
    scale: float = 1.0
    generator: str = GENERATOR

    def __post_init__(self) -> None:
        if self.in_dim <= 0 or self.out_dim <= 0:
            raise ValueError(f"projection shape must be positive, got {self.in_dim}x{self.out_dim}")
        if self.distribution not in ("normal", "uniform"):
            raise ValueError(f"unknown projection distribution {self.distribution!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"projection seed must be in [0, 2**63), got {self.seed}")
        if self.generator != GENERATOR:
            raise ValueError(f"projection generator {self.generator!r} is not supported (this build: {GENERATOR})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProjectionSpec:
        return cls(**d)


def xavier_std(in_dim: int, out_dim: int) -> float:
    """Glorot std: the variance of the ULPT authors' Xavier-uniform init, as a Gaussian."""
    return (2.0 / (in_dim + out_dim)) ** 0.5


def generate(spec: ProjectionSpec) -> torch.Tensor:
    """Regenerate A (float32, in_dim × out_dim) from its spec, bit-exact across runs and machines."""
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    shape = (spec.in_dim, spec.out_dim)
    if spec.distribution == "normal":
        values = rng.standard_normal(shape, dtype=np.float64) * spec.scale
    else:
        values = (rng.random(shape, dtype=np.float64) * 2.0 - 1.0) * spec.scale
    return torch.from_numpy(values.astype(np.float32))


class SeededProjection(nn.Module):
    """x ↦ x @ A with A frozen and regenerated from `spec`; A is a non-persistent buffer (never saved)."""

    def __init__(self, spec: ProjectionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("weight", generate(spec), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    def extra_repr(self) -> str:
        s = self.spec
        return f"{s.in_dim}x{s.out_dim}, {s.distribution}(scale={s.scale:.4g}), seed={s.seed}"
