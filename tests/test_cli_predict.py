"""`softprompt predict` (and `eval`) on saved prompts of the tiny steerable Llama: the task it predicts for (stored,
--task, --task-file), inputs that fit the task's shape (single texts, sentence pairs), and text that is not UTF-8;
each refusal is exit 2 and one `error:` line, before the model loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from serving_helpers import FIXTURES

from softprompt.api import load
from softprompt.artifact import PromptArtifact
from softprompt.cli import main
from softprompt.models import load_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task
from softprompt.tasks.custom import build_custom_task, load_spec_file

MODEL = "tiny-llama-steerable"  # the model the format-1 fixture prompts were tuned on
PAIRS = Task(name="pairs", template="a : {text} b : {text_pair} . same :", labels=("no", "yes"),
             verbalizer=(" no", " yes"))  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture ULPT prompt saved three ways: with its single-text task, with a pair task, with no task."""
    root = tmp_path_factory.mktemp("predict")
    artifact = PromptArtifact.from_pretrained(FIXTURES / "ulpt")
    tasks = {"single": artifact.task, "pair": PAIRS, "taskless": None}
    for name, task in tasks.items():
        dataclasses.replace(artifact, task=task).save_pretrained(root / name)
    return {name: root / name for name in tasks}


def predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(["predict", *argv, "--model", MODEL])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line a refused prediction prints (exit 2, nothing on stdout, no model loaded)."""
    code, lines, err = predict(capsys, *argv)
    assert code == 2 and lines == [], err
    (line,) = err.splitlines()
    assert line.startswith("softprompt predict: error: ")
    return line


def test_a_pair_task_needs_a_text_pair_per_text_and_scores_the_pair(capsys, saved):
    assert "task 'pairs' scores sentence pairs: pass --text-pair SECOND once per text" in refused(
        capsys, str(saved["pair"]), "film 1"
    )
    assert "pass one --text-pair per text" in refused(capsys, str(saved["pair"]), "a", "b", "--text-pair", "c")
    code, (line,), _ = predict(capsys, str(saved["pair"]), "film 1", "--text-pair", "film 2")
    assert code == 0 and set(line["scores"]) == {"no", "yes"}
    scorer = Scorer(load_backbone(MODEL), PAIRS)
    prompt = PromptArtifact.from_pretrained(saved["pair"]).prompt.materialize()
    with torch.no_grad():
        expected = torch.softmax(scorer.label_scores(scorer.encode([Example("film 1", "film 2")]), prompt)[0], -1)
    assert line["scores"]["yes"] == pytest.approx(float(expected[1]), abs=1e-5)


def test_a_single_text_task_refuses_a_text_pair(capsys, saved):
    line = refused(capsys, str(saved["single"]), "great", "--text-pair", "x")
    assert "task 'synthetic-sentiment' scores single texts: drop --text-pair" in line


def test_a_prompt_without_a_task_takes_task_or_task_file(capsys, saved, tmp_path):
    line = refused(capsys, str(saved["taskless"]), "great")
    assert line.endswith("stores no task definition; pass --task NAME or --task-file PATH")
    code, (line,), _ = predict(capsys, str(saved["taskless"]), "great", "--task", "sst2")
    assert code == 0 and set(line["scores"]) == {"negative", "positive"}
    rows = "review,sentiment\n" + "fun,good\nboring,bad\n" * 5
    (tmp_path / "reviews.csv").write_text(rows)
    spec = {"train": "reviews.csv", "text_column": "review", "label_column": "sentiment"}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    code, (line,), _ = predict(capsys, str(saved["taskless"]), "great", "--task-file", str(tmp_path / "task.json"))
    assert code == 0 and set(line["scores"]) == {"bad", "good"}
    with pytest.raises(ValueError, match="stores no task definition; pass task="):  # the API names its argument
        load(saved["taskless"], model=MODEL)


@pytest.mark.parametrize("flag", [(), ("--text-pair",)])
def test_text_that_is_not_utf8_is_one_line_not_a_traceback(capsys, saved, flag):
    text = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of byte 0xE9 in argv: 'caf\udce9'
    argv = (str(saved["pair"]), "film", *flag, text) if flag else (str(saved["single"]), text)
    line = refused(capsys, *argv)
    assert "'caf\\udce9' is not valid Unicode: surrogates not allowed at position 3" in line
    assert "not UTF-8" in line


def test_eval_of_a_prompt_without_a_task_takes_task_or_task_file(capsys, saved, tmp_path):
    code = main(["eval", str(saved["taskless"]), "--model", MODEL])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.strip().endswith("pass --task NAME or --task-file PATH")
    rows = "review,sentiment\n" + "fun,good\nboring,bad\n" * 5
    (tmp_path / "reviews.csv").write_text(rows)
    spec = {"train": "reviews.csv", "text_column": "review", "label_column": "sentiment"}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    argv = ["eval", str(saved["taskless"]), "--model", MODEL, "--task-file", str(tmp_path / "task.json"), "--quiet"]
    argv += ["--data", str(tmp_path / "reviews.csv")]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    task, *splits = build_custom_task(load_spec_file(tmp_path / "task.json"))
    rows = [ex for split in splits for ex in split]  # every row of the file, as the task reads it
    assert sorted(ex.text for ex in rows) == sorted(["fun", "boring"] * 5)
    expected = load(saved["taskless"], model=MODEL, task=task).evaluate(examples=rows)
    assert result["accuracy"] == pytest.approx(expected["accuracy"]) and result["task"] == task.name
