"""The analyses on the sweeps a user meets before the figure is final: runs that logged no loss (fewer steps than
log_every), runs still running (no prompt.json, no result), two models in one grid, a labelled prompt-tuning block,
and a mistyped folder. Tiny-model runs and synthetic result/log files, as in test_analyses.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_analyses import rows
from test_sweep import write_task

from softprompt.__main__ import main
from softprompt.artifact import PromptArtifact
from softprompt.experiments.analyses import _variant, describe_run
from softprompt.experiments.commands.analyze import NAMES
from softprompt.experiments.grid import parse_grid
from softprompt.experiments.worker import RESULT, execute

pytest.importorskip(
    "matplotlib", reason="plots need matplotlib (optional extra: pip install 'softprompt[experiments]')"
)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny models × ULPT ranks [2, 4], one seed, 2 steps: too few for a loss to be logged (log_every is 10)."""
    folder = tmp_path_factory.mktemp("edge")
    task = write_task(folder)
    grid = parse_grid(
        {"tasks": [str(task)], "models": ["tiny-llama", "tiny-llama-steerable"], "seeds": [0],
         "common": {"steps": 2, "eval_every": 2, "batch_size": 4, "lr": 0.1, "max_test_examples": 8},
         "runs": [{"method": "ulpt", "prompt_len": 4, "rank": [2, 4]}]},
    )  # fmt: skip
    out = folder / "sweep"
    for spec in grid.runs:
        assert execute(spec.to_dict(), out / spec.name, threads=1)["status"] == "done"
    return out, grid


def write_log(run_dir, spec, losses: dict[int, float]) -> None:
    """A run as a running sweep leaves it: its spec and a log (an evaluation record too), no artifact, no result."""
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec.to_dict()))
    records = [{"step": s, "loss": v} for s, v in losses.items()] + [{"step": 0, "split": "validation", "acc": 0.5}]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_shift_scale_keeps_the_test_metric_of_runs_that_logged_no_loss(two_models, capsys):
    out, grid = two_models
    assert main(["analyze", "shift-scale", str(out), "--out", str(out / "shift-scale")]) == 0
    table = rows(out / "shift-scale" / "shift-scale.csv")
    assert {r["rank"] for r in table} == {"2", "4"}
    # one row per model and rank: the two models' runs are not pooled into one variant's mean
    assert sorted((r["model"], r["rank"], r["seeds"]) for r in table) == [
        (model, rank, "1") for model in ("tiny-llama", "tiny-llama-steerable") for rank in ("2", "4")
    ]
    assert all(math.isfinite(float(r["test_mean"])) and math.isnan(float(r["final_train_loss"])) for r in table)
    err = capsys.readouterr().err
    assert "logged no training loss" in err and all(spec.name in err for spec in grid.runs)


def test_a_running_run_is_what_its_settings_say_and_shift_scale_leaves_it_out(two_models, tmp_path, capsys):
    # A started run has logged loss but has no prompt.json yet: its rank and variant come from its settings (shift
    # and scale on by ULPT's default here, off where the grid says so), and the analysis leaves it out, by name.
    out, _ = two_models
    sweep = tmp_path / "sweep"
    for run_dir in (spec_file.parent for spec_file in out.glob("*/spec.json")):
        (sweep / run_dir.name).mkdir(parents=True)
        for f in ("spec.json", "log.jsonl", "prompt.json", RESULT):
            (sweep / run_dir.name / f).write_bytes((run_dir / f).read_bytes())
    grid = parse_grid({"tasks": ["sst2"], "models": ["tiny-llama"], "runs": [
        {"method": "ulpt", "rank": 4, "cases": [{}, {"use_shift": False, "use_scale": False}]}]})  # fmt: skip
    for spec in grid.runs:
        write_log(sweep / spec.name, spec, {10: 0.7})
    running = [describe_run(sweep / spec.name) for spec in grid.runs]
    assert [(r["rank"], _variant(r), r["finished"]) for r in running] == [(4, "shift+scale", False), (4, "none", False)]

    assert main(["analyze", "shift-scale", str(sweep)]) == 0
    table = rows(sweep / "shift-scale.csv")
    assert [(r["variant"], r["seeds"]) for r in table] == [("shift+scale", "1")] * 4  # 2 models x ranks 2 and 4
    err = capsys.readouterr().err
    assert "2 run(s) not finished" in err and all(spec.name in err for spec in grid.runs)


def test_similarity_pairs_ranks_within_each_model(two_models):
    out, grid = two_models
    assert main(["analyze", "similarity", str(out)]) == 0
    table = rows(out / "similarity.csv")
    models = ["tiny-llama", "tiny-llama-steerable"]
    assert sorted((r["model"], r["vector"], r["rank_a"], r["rank_b"], r["seeds"]) for r in table) == sorted(
        (m, v, "2", "4", "1") for m in models for v in ("shift", "scale - 1")
    )

    def shift(model: str, rank: int) -> torch.Tensor:
        spec = next(s for s in grid.runs if s.model == model and s.settings["rank"] == rank)
        return PromptArtifact.from_pretrained(out / spec.name).prompt.state_tensors()["shift"]

    for r in (r for r in table if r["vector"] == "shift"):
        want = torch.nn.functional.cosine_similarity(shift(r["model"], 2), shift(r["model"], 4), dim=0)
        assert float(r["cosine"]) == pytest.approx(float(want), abs=1e-6)


def test_main_table_finds_prompt_tuning_by_method_whatever_its_label(tmp_path):
    from softprompt.experiments.analyses import main_table

    blocks = [{"method": "prompt_tuning", "label": "PT baseline"}, {"method": "ulpt", "rank": 2}]
    grid = parse_grid({"tasks": ["sst2"], "models": ["tiny-llama"], "runs": blocks})
    numbers = {"PT baseline": (0.80, 100), "ulpt rank=2": (0.60, 2)}
    for spec in grid.runs:
        test, parameters = numbers[spec.group]
        summary = {"test": {"accuracy": test}, "trainable_parameters": parameters}
        (tmp_path / spec.name).mkdir()
        result = {"name": spec.name, "spec": spec.to_dict(), "status": "done", "metric": "accuracy", "summary": summary}
        (tmp_path / spec.name / RESULT).write_text(json.dumps(result))
    main_table(tmp_path)
    table = {r["method"]: r for r in rows(tmp_path / "main-table.csv")}
    assert table["PT baseline"]["average % of PT"] == "100.0"
    assert table["ulpt rank=2"]["average % of PT"] == "75.0" and table["ulpt rank=2"]["parameters % of PT"] == "2.0"


def test_plot_names_the_runs_with_no_loss_and_refuses_a_sweep_with_none(tmp_path, capsys):
    grid = parse_grid({"tasks": ["sst2", "rte"], "models": ["tiny-llama"], "runs": [{"method": "ulpt"}]})
    drawn, empty = grid.runs
    write_log(tmp_path / drawn.name, drawn, {10: 0.7, 20: 0.6})
    write_log(tmp_path / empty.name, empty, {})
    assert main(["plot", str(tmp_path)]) == 0
    assert {r["task"] for r in rows(tmp_path / "curves.csv")} == {"sst2"}  # no empty rte panel
    assert empty.name in capsys.readouterr().err

    nothing = tmp_path / "nothing"
    write_log(nothing / empty.name, empty, {})
    assert main(["plot", str(nothing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and empty.name in err[0] and "no run has logged a training loss" in err[1]
    assert not list(nothing.glob("curves.*"))


def test_a_run_just_started_does_not_cut_its_groups_curve(tmp_path):
    # Seed 1 has logged one step of three: the group's curve stays seed 0's whole curve, a mean over 1 run, until
    # seed 1 catches up (then the mean of both), instead of being cut down to the one step they share.
    grid = parse_grid({"tasks": ["sst2"], "models": ["tiny-llama"], "seeds": [0, 1], "runs": [{"method": "ulpt"}]})
    ahead, behind = grid.runs
    write_log(tmp_path / ahead.name, ahead, {5: 0.9, 10: 0.8, 15: 0.7})
    write_log(tmp_path / behind.name, behind, {5: 1.0})
    assert main(["plot", str(tmp_path)]) == 0
    table = rows(tmp_path / "curves.csv")
    assert [(int(r["step"]), float(r["loss_mean"]), r["runs"]) for r in table] == [(5, 0.9, "1"), (10, 0.8, "1"),
                                                                                    (15, 0.7, "1")]  # fmt: skip
    write_log(tmp_path / "caught-up", behind, {5: 1.0, 10: 0.6, 15: 0.5})  # the same seed, now at step 15
    (tmp_path / behind.name / "log.jsonl").unlink()
    assert main(["plot", str(tmp_path)]) == 0
    table = rows(tmp_path / "curves.csv")
    assert [(int(r["step"]), r["runs"]) for r in table] == [(5, "2"), (10, "2"), (15, "2")]
    assert float(table[-1]["loss_mean"]) == pytest.approx(0.6)


@pytest.mark.parametrize("command", [["analyze", name] for name in NAMES] + [["plot"]])
def test_a_missing_folder_is_said_to_be_missing(command, tmp_path, capsys):
    assert main([*command, str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothere: no such" in err[0]
