"""Seeded sampling: k-shot sets (k examples per class) and held-out carves. Same input order + seed = same output.

`carve` is the one way a split missing from a task's sources is cut from its train pool, for the built-in tasks
(tasks/builtin.py) and users' files (tasks/custom/) alike."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

from softprompt.tasks.base import Example

T = TypeVar("T")


def _key(ex: Example) -> tuple[str, str | None]:
    return ex.text, ex.text_pair


def _by_label(
    examples: Iterable[Example],
    exclude: Iterable[Example],
    num_labels: int | None,
    k: int,
    sets: int,
    names: Sequence[str],
) -> dict[int, list[Example]]:
    """Examples grouped by label (labels in order), each input text kept once and excluded texts dropped; each label
    must have `sets` × `k` of them (train, or train and dev). `names` (the task's labels) name a label that has too
    few, and the error says what k the pool allows."""
    seen = {_key(ex) for ex in exclude}
    groups: dict[int, list[Example]] = {} if num_labels is None else {c: [] for c in range(num_labels)}
    for ex in examples:
        if ex.label is None:
            raise ValueError(f"{ex.source or 'example'}: k-shot sampling needs labelled examples")
        if _key(ex) in seen:  # a repeated text would be a duplicate shot, or leak between train and dev
            continue
        seen.add(_key(ex))
        groups.setdefault(ex.label, []).append(ex)
    need = sets * k
    for label, group in groups.items():
        if len(group) < need:
            name = repr(names[label]) if 0 <= label < len(names) else str(label)
            fits = min(map(len, groups.values())) // sets
            what = f"{k} shots for training and {k} for validation" if sets == 2 else f"{k} shots"
            raise ValueError(f"label {name} has {len(group)} distinct examples, need {need} ({what}); "
                             f"this pool allows at most {fits} shots")  # fmt: skip
    return dict(sorted(groups.items()))


def sample_k_shot(
    examples: Sequence[Example],
    k: int,
    seed: int,
    exclude: Iterable[Example] = (),
    num_labels: int | None = None,
    names: Sequence[str] = (),
) -> list[Example]:
    """k examples of each label, in a seeded shuffled order.

    Examples whose (text, text_pair) is in `exclude` are never picked, nor is a text twice. Pass `num_labels`
    to also fail on a label that is absent from `examples`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = random.Random(seed)
    groups = _by_label(examples, exclude, num_labels, k, 1, names).values()
    picked = [ex for group in groups for ex in rng.sample(group, k)]
    rng.shuffle(picked)
    return picked


def train_dev_k_shot(
    examples: Sequence[Example], k: int, seed: int, num_labels: int | None = None, names: Sequence[str] = ()
) -> tuple[list[Example], list[Example]]:
    """Disjoint k-per-label train and dev sets from one pool (the BBT setup: 16 + 16 per class from train)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = random.Random(seed)
    train: list[Example] = []
    dev: list[Example] = []
    for group in _by_label(examples, (), num_labels, k, 2, names).values():
        picked = rng.sample(group, 2 * k)
        train += picked[:k]
        dev += picked[k:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def split_off(examples: Sequence[T], n_or_fraction: int | float, seed: int) -> tuple[list[T], list[T]]:
    """(rest, held_out): a seeded random subset of `n` items (or a fraction in (0, 1)) is held out.

    Both parts keep the input order, so a carve is a pure function of the input order and the seed.
    """
    total = len(examples)
    if isinstance(n_or_fraction, float):
        if not 0.0 < n_or_fraction < 1.0:
            raise ValueError(f"a fraction must be in (0, 1), got {n_or_fraction}")
        n = round(n_or_fraction * total)
    else:
        n = int(n_or_fraction)
    if not 0 <= n <= total:
        raise ValueError(f"cannot hold out {n} of {total} examples")
    held = set(random.Random(seed).sample(range(total), n))
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    return rest, [examples[i] for i in sorted(held)]


def carve(pool: Sequence[T], sizes: dict[str, int], seed: int) -> dict[str, list[T]]:
    """The held-out splits named in `sizes` (split -> count), cut from `pool` in that order with `split_off`; what is
    left is "train". A pool too small to hold a split out and keep at least one train item is a ValueError."""
    parts: dict[str, list[T]] = {}
    rest = list(pool)
    for split, n in sizes.items():
        if n >= len(rest):
            raise ValueError(f"{len(pool)} rows are too few to carve a {split} split of {n} and keep some for train")
        rest, parts[split] = split_off(rest, n, seed)
    parts["train"] = rest
    return parts
