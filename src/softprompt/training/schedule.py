"""Learning-rate schedule as a pure function of the step: resuming needs no scheduler object state."""

from __future__ import annotations


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier on the peak learning rate: 0 → 1 over `warmup_steps`, then linearly back to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - warmup_steps
    return max(0.0, (total_steps - step) / remaining) if remaining > 0 else 1.0
