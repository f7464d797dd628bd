"""The gradient recipe: it learns, it logs, it keeps the best prompt, and a killed run resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.artifact import PromptArtifact
from softprompt.checkpoint import load_checkpoint
from softprompt.evaluation import evaluate
from softprompt.scoring import Scorer
from softprompt.training.batches import batch_indices
from softprompt.training.schedule import linear_warmup_decay
from softprompt.training.trainer import TrainConfig, train_prompt

SCRIPT = Path(__file__).parent / "train_script.py"


def test_schedule_warms_up_then_decays_to_zero():
    factors = [linear_warmup_decay(s, 4, 20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[-1] == pytest.approx(1 / 16)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))


def test_batches_depend_only_on_seed_and_step_and_cover_each_epoch():
    first_epoch = [i for step in range(5) for i in batch_indices(20, 4, step, seed=3)]
    assert sorted(first_epoch) == list(range(20))
    assert batch_indices(20, 4, 7, seed=3) == batch_indices(20, 4, 7, seed=3)
    assert batch_indices(20, 4, 0, seed=3) != batch_indices(20, 4, 0, seed=4)
    assert len(batch_indices(6, 4, 1, seed=0)) == 4  # wraps across the epoch boundary


@pytest.mark.parametrize("method", ["ulpt", "prompt_tuning"])
def test_training_learns_and_saves_best_artifact(tmp_path, method):
    backbone, task = learnable_backbone(), synthetic_task()
    scorer = Scorer(backbone, task)
    options = {"rank": 2} if method == "ulpt" else {}
    prompt = new_prompt(make_prompt_config(method, 4, **options), backbone, seed=0)
    test = synthetic_examples(32, 2)
    before = evaluate(scorer, test, prompt)
    config = TrainConfig(steps=80, batch_size=8, lr=0.1, eval_every=20, log_every=10)
    result = train_prompt(
        scorer,
        prompt,
        synthetic_examples(64, 0),
        synthetic_examples(32, 1),
        config,
        tmp_path,
        test=test,
        progress=False,
    )
    assert result.test["loss"] < before["loss"] - 0.05
    # the artifact holds the best-validation prompt and reproduces the reported test metrics
    artifact = PromptArtifact.from_pretrained(tmp_path, backbone)
    assert artifact.metrics["best_step"] == result.best_step
    assert evaluate(scorer, test, artifact.prompt) == pytest.approx(result.test)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("split") == "validation"] == [20, 40, 60, 80]
    assert any(r.get("split") == "test" for r in log)
    assert all("loss" in r and "lr" in r for r in log[:-1] if "split" not in r)
    assert set(log[-1]) == {"step", "run_s"} and log[-1]["run_s"] >= max(r.get("elapsed_s", 0) for r in log) > 0


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    config = TrainConfig(steps=2, batch_size=4, lr=0.1, eval_every=2)
    data = synthetic_examples(8, 0)
    for expect_error in (False, True):
        prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
        if expect_error:
            with pytest.raises(FileExistsError, match="--resume"):
                train_prompt(scorer, prompt, data, data, config, tmp_path, progress=False)
        else:
            train_prompt(scorer, prompt, data, data, config, tmp_path, progress=False)
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
    with pytest.raises(ValueError, match=r"train_config\.steps: 2 -> 4"):
        train_prompt(
            scorer,
            prompt,
            data,
            data,
            TrainConfig(steps=4, batch_size=4, lr=0.1, eval_every=2),
            tmp_path,
            resume=True,
            progress=False,
        )


def test_resume_refuses_other_data_projection_seed_or_model_listing_the_differences(tmp_path):
    """Continuing with another data file, projection seed or model would train a hybrid prompt."""
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    config = TrainConfig(steps=2, batch_size=4, lr=0.1, eval_every=2)
    data = synthetic_examples(8, 0)

    def run(data=data, projection_seed=0, model=backbone, **kw):
        prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2, projection_seed=projection_seed), model, seed=0)
        return train_prompt(Scorer(model, synthetic_task()), prompt, data, data, config, tmp_path, progress=False,
                            **kw)  # fmt: skip

    run()
    with pytest.raises(ValueError, match=r"^--resume: this run differs from the checkpoint in data: "):
        run(data=synthetic_examples(8, 1), resume=True)
    with pytest.raises(ValueError, match=r"prompt_config\.projection_seed: 0 -> 5"):
        run(projection_seed=5, resume=True)
    with pytest.raises(ValueError, match="model_fingerprint"):
        run(model=learnable_backbone(seed=1), resume=True)
    bf16 = learnable_backbone()  # the same weights in another number format: `--dtype auto` on another machine
    bf16.model.to(torch.bfloat16)
    assert bf16.fingerprint == backbone.fingerprint
    with pytest.raises(ValueError, match=r'dtype: "float32" -> "bfloat16"; .*pass --dtype float32 to continue'):
        run(model=bf16, resume=True)
    assert scorer.task.name  # the original run is intact and can still be resumed
    run(resume=True)
    config = replace(config, checkpoint_every_s=5.0)  # how often a run checkpoints is not what it trains
    run(resume=True)


def test_a_checkpoint_written_before_the_identity_named_the_dtype_still_resumes(tmp_path):
    """Checkpoints of runs started before `dtype` joined the identity (the sweeps in results/) must resume."""
    backbone = learnable_backbone()
    config = TrainConfig(steps=2, batch_size=4, lr=0.1, eval_every=2)
    data = synthetic_examples(8, 0)

    def run(**kw):
        prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
        return train_prompt(Scorer(backbone, synthetic_task()), prompt, data, data, config, tmp_path, test=data,
                            progress=False, **kw)  # fmt: skip

    first = run()
    checkpoint = tmp_path / "checkpoint"
    state_file = checkpoint / json.loads((checkpoint / "latest.json").read_text())["stem"]
    state_file = state_file.with_suffix(".json")
    state = json.loads(state_file.read_text())
    assert state["identity"].pop("dtype") == "float32"
    state_file.write_text(json.dumps(state))
    assert run(resume=True).test == first.test
    state["identity"]["model_fingerprint"] = "another model"  # the keys it has are still compared
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="model_fingerprint"):
        run(resume=True)


def test_out_holding_an_artifact_without_checkpoint_is_not_overwritten_unless_asked(tmp_path):
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    data = synthetic_examples(8, 0)
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
    PromptArtifact(prompt, backbone.describe(), synthetic_task()).save_pretrained(tmp_path)
    before = (tmp_path / "prompt.json").read_bytes()
    config = TrainConfig(steps=2, batch_size=4, lr=0.1, eval_every=2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_prompt(scorer, prompt, data, data, config, tmp_path, progress=False)
    assert (tmp_path / "prompt.json").read_bytes() == before
    train_prompt(scorer, prompt, data, data, config, tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "prompt.json").read_bytes() != before


def test_a_restart_writes_each_record_once(tmp_path):
    """Two restarts that used to duplicate log records: a run stopped before its first checkpoint (only its log is
    left) started again with --overwrite, and a run stopped after its test record (its last checkpoint at the last
    step) resumed. Each log must equal the log of the same run done in one go."""
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    data = synthetic_examples(8, 0)
    config = TrainConfig(steps=20, batch_size=4, lr=0.1, eval_every=10, log_every=5)

    def train(out, **kwargs):
        prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
        return train_prompt(scorer, prompt, data, data, config, out, test=data, progress=False, **kwargs)

    def records(out):  # without wall times
        lines = (out / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in lines]

    train(tmp_path / "once")
    once = records(tmp_path / "once")
    assert [r.get("split") for r in once].count("test") == 1

    only_log = tmp_path / "only-log"
    only_log.mkdir()
    (only_log / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in once[:2]))  # an earlier start's
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(only_log)
    train(only_log, overwrite=True)
    assert records(only_log) == once

    train(tmp_path / "ended")  # ends with a checkpoint at step 20 and the test record after it
    train(tmp_path / "ended", resume=True)  # as if killed before the caller saw it finish
    assert records(tmp_path / "ended") == once


def test_diverged_training_stops_with_a_clear_error_and_keeps_no_inf_prompt(tmp_path):
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    data = synthetic_examples(8, 0)
    prompt = new_prompt(make_prompt_config("prompt_tuning", 4), backbone, seed=0)
    with torch.no_grad():
        prompt.embedding.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"diverged at step 1 .*No prompt was saved in .*: none had been evaluated"):
        train_prompt(scorer, prompt, data, data, TrainConfig(steps=4, batch_size=4, lr=1e30, eval_every=2), tmp_path,
                     progress=False)  # fmt: skip
    assert not (tmp_path / "prompt.json").exists()


def test_training_that_diverges_after_an_evaluation_keeps_the_best_prompt_and_says_so(tmp_path):
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    data = synthetic_examples(8, 0)
    prompt = new_prompt(make_prompt_config("prompt_tuning", 4), backbone, seed=0)
    finite_loss, calls = scorer.loss, []

    def loss_that_turns_nan_at_step_3(*args, **kwargs):
        calls.append(1)
        return finite_loss(*args, **kwargs) * (float("nan") if len(calls) >= 3 else 1.0)

    scorer.loss = loss_that_turns_nan_at_step_3
    with pytest.raises(ValueError, match=r"diverged at step 3 .*The best prompt so far \(step 2\) stays in "):
        train_prompt(scorer, prompt, data, data, TrainConfig(steps=4, batch_size=4, eval_every=2), tmp_path,
                     progress=False)  # fmt: skip
    assert PromptArtifact.from_pretrained(tmp_path, backbone).metrics["best_step"] == 2


def run_script(out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), *flags], env=env)


def test_kill_minus_nine_then_resume_ends_with_the_same_prompt(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert run_script(reference).wait(timeout=120) == 0

    proc = run_script(interrupted, "--slow")
    latest = interrupted / "checkpoint" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if latest.exists() and 3 <= json.loads(latest.read_text())["step"] < 20:  # before the first evaluation
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = json.loads(latest.read_text())["step"]
    assert 3 <= killed_at < 20, "the run should have been killed before its first evaluation"

    before_s = load_checkpoint(interrupted / "checkpoint")[1]["elapsed_s"]  # the killed attempt's time, kept

    assert run_script(interrupted, "--resume").wait(timeout=120) == 0
    ref = PromptArtifact.from_pretrained(reference).prompt.state_tensors()
    got = PromptArtifact.from_pretrained(interrupted).prompt.state_tensors()
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    ref_meta = json.loads((reference / "prompt.json").read_text())
    got_meta = json.loads((interrupted / "prompt.json").read_text())
    assert got_meta["metrics"] == ref_meta["metrics"]
    # the log holds each record once, as the uninterrupted run's does (no duplicates after the restart)
    timed = ("elapsed_s", "run_s")
    ref_log = [line for line in (reference / "log.jsonl").read_text().splitlines() if not any(k in line for k in timed)]
    got_log = [
        line for line in (interrupted / "log.jsonl").read_text().splitlines() if not any(k in line for k in timed)
    ]
    keys = [(r.get("step"), r.get("split")) for r in map(json.loads, got_log)]
    assert len(keys) == len(set(keys)) and len(got_log) == len(ref_log)
    # the run's clock goes on from the checkpoint: its steps after it and its total count the killed attempt's time
    records = [json.loads(line) for line in (interrupted / "log.jsonl").read_text().splitlines()]
    (run_s,) = [r["run_s"] for r in records if "run_s" in r]
    after = [r["elapsed_s"] for r in records if "elapsed_s" in r and r["step"] > killed_at]
    assert before_s > 0 and all(t > before_s for t in after) and run_s >= max(after)
