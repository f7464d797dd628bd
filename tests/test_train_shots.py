"""`softprompt train --shots K` trains and validates on exactly the K-per-label sets `softprompt blackbox --shots K`
searches on (same seed), so a few-shot table compares gradient and gradient-free methods on the same data."""

import csv
import json

import pytest

from softprompt.cli import build_parser, main
from softprompt.cli.common import load_splits, resolve_task
from softprompt.tasks.fewshot import train_dev_k_shot

ROWS = [
    {
        "text": f"the movie {'was' if i % 2 else 'is'} {'good' if i % 3 else 'bad'} {i}",
        "label": "positive" if i % 3 else "negative",
    }
    for i in range(60)
]  # fmt: skip (words the tiny model knows)


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(ROWS)
    return str(path)


def splits(*argv: str):
    args = build_parser().parse_args(["train", "--out", "unused", "--label-column", "label", *argv])
    task = resolve_task(args)
    return task, args, load_splits(args, task, seed=int(args.seed or 0))


@pytest.mark.parametrize("seed", [0, 3])
def test_shots_are_blackbox_k_shot_sets(data, seed):
    task, args, (train, validation, test, record) = splits("--data", data, "--shots", "4", "--seed", str(seed))
    expected = train_dev_k_shot(task.load("train", None), 4, seed, len(task.labels))
    assert (train, validation) == expected
    assert sorted(ex.label for ex in train) == [0] * 4 + [1] * 4 == sorted(ex.label for ex in validation)
    assert not {ex.text for ex in train} & {ex.text for ex in validation}
    assert record["shots"] == 4 and record["sizes"]["train"] == 8
    _, _, (train_other, *_rest) = splits("--data", data, "--shots", "4", "--seed", str(seed + 1))
    assert train_other != train  # the seed picks the sets


def test_without_shots_the_splits_are_unchanged(data):
    _, _, (train, validation, _, record) = splits("--data", data)
    assert len(train) > 8 and "shots" not in record


def test_shots_with_subset_limits_is_a_clear_error(data, capsys, tiny_model_dir, tmp_path):
    argv = ["train", "--data", data, "--label-column", "label", "--model", tiny_model_dir, "--out",
            str(tmp_path / "run"), "--quiet", "--method", "ulpt", "--prompt-len", "2", "--steps", "1"]  # fmt: skip
    assert main([*argv, "--shots", "2", "--max-train-examples", "10"]) == 2
    assert "--shots picks the train and validation examples" in capsys.readouterr().err
    assert main([*argv, "--shots", "2", "--batch-size", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["validation"]["num_examples"] == 4  # 2 per label
