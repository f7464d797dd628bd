"""The built-in tasks' default templates are the ones bench/templates.py measured best (bench/results/templates.json):
a candidate replaces a task's original template only when it won by more than one point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from softprompt.tasks.builtin import get_task, list_tasks

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
templates = pytest.importorskip("templates")  # bench/templates.py
RESULTS = json.loads((BENCH / "results" / "templates.json").read_text())["tasks"]


def test_every_builtin_task_has_candidates_with_its_original_first():
    assert set(templates.CANDIDATES) == set(list_tasks()) == set(templates.ORDER)
    assert all(next(iter(c)) == "original" for c in templates.CANDIDATES.values())


@pytest.mark.parametrize("name", sorted(templates.CANDIDATES))
def test_default_template_follows_the_measurement(name):
    task = get_task(name)
    if name not in RESULTS:  # not measured: the template it always had
        assert task.template == templates.CANDIDATES[name]["original"]
        return
    result = RESULTS[name]
    assert result["templates"] == templates.CANDIDATES[name]  # the table measured today's candidates
    chosen = templates.default_candidate(result["scores"], result["metric"])
    assert task.template == result["templates"][chosen]
    assert result["metric"] == task.primary_metric
    assert result["verbalizer"] == dict(zip(task.labels, task.verbalizer, strict=True))


def test_default_candidate_needs_more_than_one_point():
    scores = {"original": {"accuracy": 0.700}, "plain": {"accuracy": 0.709}, "other": {"accuracy": 0.690}}
    assert templates.default_candidate(scores, "accuracy") == "original"
    scores["plain"]["accuracy"] = 0.711
    assert templates.default_candidate(scores, "accuracy") == "plain"
