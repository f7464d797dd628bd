"""The GPU path: each command the 16-shot table runs gives on CUDA what it gives on the CPU (tiny model, float32).

CI has no GPU, so these skip there. On a GPU machine they run first (`scripts/gpu_table.sh check`): a device
placement bug then costs seconds, not a table. `SOFTPROMPT_TEST_DEVICE=cpu` runs the same comparison CPU against
CPU, which checks the test itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softprompt.cli import main

DEVICE = os.environ.get("SOFTPROMPT_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device on this machine"
)

SEARCH = ["--shots", "4", "--budget", "40", "--popsize", "10", "--prompt-len", "4", "--eval-every", "20"]
COMMANDS = {
    "bbt": ["blackbox", "--method", "bbt", "--dim", "8", *SEARCH],
    "bbtv2": ["blackbox", "--method", "bbtv2", "--dim", "8", *SEARCH],
    "ulpt-cmaes": ["blackbox", "--method", "ulpt", "--rank", "2", *SEARCH],
    "ulpt": ["train", "--method", "ulpt", "--rank", "2", "--prompt-len", "4", "--shots", "4", "--steps", "4",
             "--batch-size", "4", "--eval-every", "2"],
}  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], argv: list[str], device: str) -> dict:
    assert main([*argv, "--device", device, "--dtype", "float32", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def close(a: object, b: object) -> bool:
    """Equal structures, numbers within float32 rounding of a different kernel."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a if k not in ("seconds", "wall_s", "device"))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-5)
    return a == b


@pytest.mark.parametrize("name", list(COMMANDS))
def test_tuning_on_the_device_ends_with_the_cpu_prompt(name, tmp_path: Path, data_dir, capsys):
    common = ["--task", "sst2", "--data-dir", str(data_dir), "--model", "tiny-llama-steerable",
              "--max-test-examples", "24"]  # fmt: skip
    summaries, prompts = [], []
    for folder, device in (("cpu", "cpu"), ("device", DEVICE)):
        out = tmp_path / folder
        summaries.append(run(capsys, [*COMMANDS[name], *common, "--out", str(out)], device))
        prompts.append(load_file(out / "prompt.safetensors"))
    assert prompts[0].keys() == prompts[1].keys()
    for key in prompts[0]:
        assert prompts[1][key].device.type == "cpu"  # the artifact holds CPU tensors whatever ran the model
        torch.testing.assert_close(prompts[1][key], prompts[0][key], rtol=1e-4, atol=1e-5, msg=key)
    assert summaries[0]["test"]["loss"] == pytest.approx(summaries[1]["test"]["loss"], rel=1e-4)


def test_zero_shot_scores_on_the_device_equal_the_cpu(data_dir, capsys):
    argv = ["eval", "--zero-shot", "--task", "sst2", "--data-dir", str(data_dir), "--model", "tiny-llama-steerable",
            "--split", "test", "--limit", "24"]  # fmt: skip
    on_cpu, on_device = run(capsys, argv, "cpu"), run(capsys, argv, DEVICE)
    assert close(on_cpu, on_device), (on_cpu, on_device)
