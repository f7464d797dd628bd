"""Deterministic mini-batch order: the examples of step s depend only on (seed, s), never on earlier state.

That makes resuming trivial and exact: a run restarted at step s draws the same batches an uninterrupted run draws.
"""

from __future__ import annotations

import torch


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the (micro-)batch number `step`: epochs are seeded permutations, batches wrap across epochs."""
    if num_examples <= 0:
        raise ValueError("no training examples")
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_examples)
        perm = _permutation(num_examples, seed, epoch)
        take = min(batch_size - len(out), num_examples - offset)
        out.extend(perm[offset : offset + take])
    return out


_cache: dict[tuple[int, int, int], list[int]] = {}


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    key = (n, seed, epoch)
    if key not in _cache:
        if len(_cache) > 4:
            _cache.clear()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _cache[key] = torch.randperm(n, generator=generator).tolist()
    return _cache[key]
