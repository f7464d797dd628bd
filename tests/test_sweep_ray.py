"""`softprompt sweep --ray`: each run a Ray task on a local Ray instance (2 CPUs), with the same results as the run
done in this process. Skipped without Ray (an optional extra: pip install 'softprompt[cluster]')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_sweep import write_task

from softprompt.artifact import PromptArtifact
from softprompt.experiments.grid import parse_grid
from softprompt.experiments.sweep import run_sweep
from softprompt.experiments.worker import execute

ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'softprompt[cluster]')")
SRC = Path(__file__).resolve().parents[1] / "src"


def test_ray_sweep_runs_each_run_as_a_task_and_matches_a_local_run(tmp_path):
    task = write_task(tmp_path)
    grid = parse_grid(
        {"tasks": [str(task)], "models": ["tiny-llama-steerable"], "seeds": [0, 1],
         "common": {"steps": 4, "eval_every": 2, "batch_size": 4, "lr": 0.1, "max_test_examples": 8},
         "runs": [{"method": "ulpt", "prompt_len": 4, "rank": 2}], "resources": {"cpus": 1}},
    )  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}})  # fmt: skip
    try:
        lines: list[str] = []
        report = run_sweep(grid, tmp_path / "sweep", ray_address="local", echo=lines.append)
    finally:
        ray.shutdown()
    assert not report.failed and len(report.results) == 2
    assert lines[0].endswith("2 runs, 0 finished before, 2 to run -> " + str(tmp_path / "sweep"))
    assert "| ulpt prompt_len=4 rank=2 | 2 | accuracy |" in (tmp_path / "sweep" / "results.md").read_text()

    spec = grid.runs[1]
    local = execute(spec.to_dict(), tmp_path / "local", threads=1)
    remote = next(r for r in report.results if r["name"] == spec.name)
    assert remote["summary"]["test"] == local["summary"]["test"]
    a = PromptArtifact.from_pretrained(tmp_path / "sweep" / spec.name).prompt.state_tensors()
    b = PromptArtifact.from_pretrained(tmp_path / "local").prompt.state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = run_sweep(grid, tmp_path / "sweep", ray_address="local", echo=lines.append)  # all finished: no Ray
    assert again.skipped == [s.name for s in grid.runs]
