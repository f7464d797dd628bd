from __future__ import annotations

from collections import Counter

import pytest

from softprompt.tasks.base import Example
from softprompt.tasks.fewshot import carve, sample_k_shot, split_off, train_dev_k_shot


def pool(sizes: dict[int, int]) -> list[Example]:
    return [Example(f"text {c}-{i}", label=c, source=f"pool:{c}-{i}") for c, n in sizes.items() for i in range(n)]


POOL = pool({0: 40, 1: 25, 2: 33})


def test_k_shot_counts_and_determinism():
    shots = sample_k_shot(POOL, k=16, seed=3)
    assert Counter(ex.label for ex in shots) == {0: 16, 1: 16, 2: 16}
    assert len(set(shots)) == len(shots)
    assert sample_k_shot(POOL, k=16, seed=3) == shots  # same seed, same order
    assert sample_k_shot(POOL, k=16, seed=4) != shots
    assert [ex.label for ex in shots] != sorted(ex.label for ex in shots)  # shuffled, not grouped by class


def test_k_shot_exclude_and_duplicates():
    test_set = POOL[:30]  # 30 of class 0's 40 examples
    shots = sample_k_shot(POOL, k=10, seed=0, exclude=test_set)
    assert not {ex.text for ex in shots} & {ex.text for ex in test_set}
    assert Counter(ex.label for ex in shots)[0] == 10
    with pytest.raises(ValueError, match="label 0 has 10"):
        sample_k_shot(POOL, k=11, seed=0, exclude=test_set)
    # the same text twice (another line, same input) is one candidate, never two shots
    doubled = POOL + [Example(ex.text, label=ex.label, source="copy") for ex in POOL]
    assert len({ex.text for ex in sample_k_shot(doubled, k=25, seed=0)}) == 75


def test_k_shot_errors():
    with pytest.raises(ValueError, match="label 1 has 25 distinct examples, need 26"):
        sample_k_shot(POOL, k=26, seed=0)
    with pytest.raises(ValueError, match="label 3 has 0"):
        sample_k_shot(POOL, k=2, seed=0, num_labels=4)  # a class missing from the pool
    with pytest.raises(ValueError, match="labelled"):
        sample_k_shot([Example("x")], k=1, seed=0)
    with pytest.raises(ValueError):
        sample_k_shot(POOL, k=0, seed=0)


def test_train_dev_k_shot_disjoint_and_deterministic():
    train, dev = train_dev_k_shot(POOL, k=12, seed=1)
    assert Counter(ex.label for ex in train) == Counter(ex.label for ex in dev) == {0: 12, 1: 12, 2: 12}
    assert not {ex.text for ex in train} & {ex.text for ex in dev}
    assert train_dev_k_shot(POOL, k=12, seed=1) == (train, dev)
    assert train_dev_k_shot(POOL, k=12, seed=2) != (train, dev)
    with pytest.raises(ValueError, match="need 26"):
        train_dev_k_shot(POOL, k=13, seed=0)  # class 1 has 25 < 2 * 13
    message = "^label 'neutral' has 25 distinct examples, need 26 .13 shots for training and 13 for validation.; "
    with pytest.raises(ValueError, match=message + "this pool allows at most 12 shots$"):
        train_dev_k_shot(POOL, k=13, seed=0, names=("negative", "neutral", "positive"))  # named as the task names it


def test_split_off():
    items = list(range(100))
    rest, held = split_off(items, 30, seed=0)
    assert len(held) == 30 and len(rest) == 70
    assert sorted(rest + held) == items
    assert held == sorted(held) and rest == sorted(rest)  # both keep the input order
    assert split_off(items, 30, seed=0) == (rest, held)
    assert split_off(items, 30, seed=1)[1] != held
    assert len(split_off(items, 0.25, seed=0)[1]) == 25
    assert split_off(items, 0, seed=0) == (items, [])
    for bad in (101, -1, 1.0, 0.0):
        with pytest.raises(ValueError):
            split_off(items, bad, seed=0)


def test_carve_is_split_off_in_order_and_keeps_train():
    items = list(range(50))
    parts = carve(items, {"test": 10, "validation": 5}, seed=3)
    rest, test = split_off(items, 10, seed=3)
    rest, validation = split_off(rest, 5, seed=3)
    assert parts == {"test": test, "validation": validation, "train": rest}
    with pytest.raises(ValueError, match="too few to carve a validation split of 40"):
        carve(items, {"test": 10, "validation": 40}, seed=3)  # would leave no train row
