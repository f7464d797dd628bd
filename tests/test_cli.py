"""The command line end to end on a tiny model saved to disk: train → info → eval → predict, and clear errors."""

import json

import pytest

from softprompt.cli import main
from softprompt.models.tiny import tiny_backbone


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own usage errors (exit 2, one line)
        code = exit_.code
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, lines, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, data_dir):
    out = tmp_path_factory.mktemp("run") / "sst2-ulpt"
    argv = [
        "train", "--task", "sst2", "--data-dir", str(data_dir), "--model", tiny_model_dir, "--method", "ulpt",
        "--rank", "2", "--prompt-len", "8", "--steps", "4", "--batch-size", "4", "--eval-every", "2",
        "--max-train-examples", "32", "--max-eval-examples", "16", "--max-test-examples", "16", "--out", str(out),
        "--compare-zero-shot", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_train_writes_artifact_logs_and_summary(trained):
    assert (trained / "prompt.safetensors").exists() and (trained / "prompt.json").exists()
    meta = json.loads((trained / "prompt.json").read_text())
    assert meta["method"] == "ulpt" and meta["task"]["name"] == "sst2"
    assert set(meta["metrics"]) >= {"validation", "test", "best_step"}
    assert meta["extra"]["data"]["sizes"] == {"train": 32, "validation": 16, "test": 16}
    assert (trained / "log.jsonl").read_text().count('"split": "validation"') == 2


def test_info_reports_method_parameters_and_sizes(capsys, trained):
    code, (info,), _ = run_cli(capsys, "info", str(trained))
    assert code == 0
    assert info["method"] == "ulpt"
    assert info["trainable_parameters"] == 8 * 2 + 2 * 32
    assert info["bytes"]["prompt.safetensors"] > 0 and info["task"] == "sst2"


def test_train_summary_counts_what_was_trained_not_what_is_stored(capsys, tmp_path, tiny_model_dir, data_dir):
    """Residual PT trains P and an MLP (n·D + 2·D·m + m + D + 2·D) and stores P' alone (n·D): the summary, which a
    sweep's table reads, gives the trained count."""
    code, (summary,), _ = run_cli(
        capsys, "train", "--task", "sst2", "--data-dir", str(data_dir), "--model", tiny_model_dir, "--method",
        "residual", "--bottleneck", "4", "--prompt-len", "4", "--steps", "1", "--batch-size", "2", "--eval-every", "1",
        "--max-train-examples", "4", "--max-eval-examples", "4", "--max-test-examples", "4",
        "--out", str(tmp_path / "residual"), "--quiet",
    )  # fmt: skip
    assert code == 0
    n, m, d = 4, 4, tiny_backbone().hidden_size  # tiny_model_dir is tiny_backbone() saved
    assert summary["trainable_parameters"] == n * d + (2 * d * m + m + d) + 2 * d


def test_eval_prints_json_metrics(capsys, trained, data_dir, tiny_model_dir):
    code, (metrics,), _ = run_cli(
        capsys, "eval", str(trained), "--data-dir", str(data_dir), "--split", "test", "--limit", "16",
        "--model", tiny_model_dir,
    )  # fmt: skip
    assert code == 0
    assert metrics["num_examples"] == 16 and 0.0 <= metrics["accuracy"] <= 1.0
    # the same numbers the training run reported for the same (seeded) test subset
    stored = json.loads((trained / "prompt.json").read_text())["metrics"]["test"]
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"])


def test_predict_needs_only_the_artifact(capsys, trained, tiny_model_dir):
    code, lines, _ = run_cli(capsys, "predict", str(trained), "a good movie", "awful", "--model", tiny_model_dir)
    assert code == 0 and len(lines) == 2
    for line in lines:
        assert line["label"] in ("negative", "positive")
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_resume_of_finished_run_and_refusal_to_overwrite(capsys, trained, data_dir, tiny_model_dir):
    argv = ["train", "--task", "sst2", "--data-dir", str(data_dir), "--model", tiny_model_dir, "--steps", "4",
            "--prompt-len", "8", "--batch-size", "4", "--eval-every", "2", "--max-train-examples", "32",
            "--max-eval-examples", "16", "--max-test-examples", "16", "--out", str(trained), "--quiet"]  # fmt: skip
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "--resume" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "nope", "--out", "x"], "unknown task"),
        (["train", "--task", "sst2", "--method", "lora", "--out", "x"], "invalid choice: 'lora'"),
        (["train", "--task", "sst2", "--method", "prompt_tuning", "--rank", "4", "--out", "x"], "does not take"),
        (["eval", "/nonexistent/artifact"], "not a softprompt artifact"),
        (["info", "/nonexistent/artifact"], "not a softprompt artifact"),
    ],
)
def test_bad_input_gives_one_clear_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err.lower() and "Traceback" not in err


def test_info_on_a_good_artifact_prints_strict_json_even_with_diverged_metrics(capsys, tmp_path):
    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.artifact import PromptArtifact

    backbone = tiny_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
    metrics = {"train_loss": float("nan"), "test": {"accuracy": 0.5}}
    folder = PromptArtifact(prompt, backbone.describe(), None, metrics).save_pretrained(tmp_path / "a")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out

    def refuse(token):
        raise AssertionError(f"invalid JSON token {token}")

    info = json.loads(out, parse_constant=refuse)
    assert info["metrics"] == {"train_loss": None, "test": {"accuracy": 0.5}} and info["method"] == "ulpt"


@pytest.mark.parametrize("damage", ["fifo", "dev-zero", "list", "deep", "tensor-bytes", "seed"])
def test_info_on_a_bad_artifact_says_what_is_wrong_in_one_line(capsys, tmp_path, damage):
    import os

    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.artifact import PromptArtifact

    backbone = tiny_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)
    folder = PromptArtifact(prompt, backbone.describe()).save_pretrained(tmp_path / "a")
    meta, tensors = folder / "prompt.json", folder / "prompt.safetensors"
    if damage == "fifo":
        tensors.unlink()
        os.mkfifo(tensors)
    elif damage == "dev-zero":
        meta.unlink()
        meta.symlink_to("/dev/zero")
    elif damage == "list":
        meta.write_text("[]")
    elif damage == "deep":
        meta.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "tensor-bytes":
        tensors.write_bytes(tensors.read_bytes()[:-1] + b"\x01")
    else:
        meta.write_text(meta.read_text().replace('"projection_seed":0', '"projection_seed":1'))
    code, lines, err = run_cli(capsys, "info", str(folder))
    assert code == 2 and lines == []
    assert err.startswith("softprompt info: error: ") and err.count("\n") == 1 and "Traceback" not in err
