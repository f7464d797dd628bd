"""The analyses (`softprompt analyze NAME`, `softprompt plot`) on a small sweep of tiny-model runs run in this
process: each writes a PNG and a table whose numbers are those of the runs' own artifacts and logs."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import torch
from test_sweep import write_task

from softprompt.__main__ import main
from softprompt.artifact import PromptArtifact
from softprompt.experiments.grid import parse_grid
from softprompt.experiments.worker import execute

pytest.importorskip(
    "matplotlib", reason="plots need matplotlib (optional extra: pip install 'softprompt[experiments]')"
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyses")
    task = write_task(folder)
    grid = parse_grid(
        {"tasks": [str(task)], "models": ["tiny-llama-steerable"], "seeds": [0, 1],
         "common": {"steps": 6, "eval_every": 3, "log_every": 2, "batch_size": 4, "lr": 0.1, "max_test_examples": 8},
         "runs": [{"method": "ulpt", "prompt_len": 4, "rank": [2, 4],
                   "cases": [{"use_shift": False, "use_scale": False}, {"use_shift": True, "use_scale": True}]},
                  {"method": "prompt_tuning", "prompt_len": 2}]},
    )  # fmt: skip
    out = folder / "sweep"
    for spec in grid.runs:
        assert execute(spec.to_dict(), out / spec.name, threads=1)["status"] == "done"
    return out, grid


def rows(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_plot_draws_the_mean_training_curve_of_each_group(sweep):
    out, grid = sweep
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == PNG
    table = rows(out / "curves.csv")
    assert len({r["group"] for r in table}) == 5
    spec0, spec1 = grid.runs[0], grid.runs[1]  # the two seeds of the first group
    logs = [map(json.loads, (out / s.name / "log.jsonl").read_text().splitlines()) for s in (spec0, spec1)]
    losses = [[r["loss"] for r in log if "split" not in r and "loss" in r] for log in logs]  # training records
    mine = [r for r in table if r["group"] == spec0.group]
    assert [int(r["step"]) for r in mine] == [2, 4, 6]
    for r, a, b in zip(mine, *losses, strict=True):
        assert float(r["loss_mean"]) == pytest.approx((a + b) / 2)
        assert float(r["loss_std"]) == pytest.approx(statistics.stdev([a, b]))
    assert main(["plot", str(out / spec0.name)]) == 0  # one run
    assert (out / spec0.name / "curves.png").exists()


def test_shift_scale_compares_variants_per_rank(sweep):
    out, grid = sweep
    assert main(["analyze", "shift-scale", str(out)]) == 0
    assert (out / "shift-scale.png").read_bytes()[:8] == PNG
    table = rows(out / "shift-scale.csv")
    assert [(r["rank"], r["variant"]) for r in table] == [("2", "none"), ("2", "shift+scale"), ("4", "none"),
                                                           ("4", "shift+scale")]  # fmt: skip
    tests = [json.loads((out / s.name / "result.json").read_text())["summary"]["test"]["accuracy"]
             for s in grid.runs if s.settings.get("rank") == 2 and not s.settings["use_shift"]]  # fmt: skip
    assert float(table[0]["test_mean"]) == pytest.approx(statistics.fmean(tests))
    assert "shift-scale.png" in (out / "shift-scale.md").read_text()


def test_similarity_is_the_cosine_of_the_learned_vectors_matched_by_seed(sweep):
    out, grid = sweep
    assert main(["analyze", "similarity", str(out)]) == 0
    table = rows(out / "similarity.csv")
    pairs = {(r["vector"], r["rank_a"], r["rank_b"]) for r in table}
    assert pairs == {(v, a, b) for v in ("shift", "scale - 1") for a, b in (("2", "2"), ("2", "4"), ("4", "4"))}

    def state(rank: int, seed: int) -> dict[str, torch.Tensor]:
        spec = next(s for s in grid.runs if s.settings.get("rank") == rank and s.seed == seed
                    and s.settings.get("use_shift"))  # fmt: skip
        return PromptArtifact.from_pretrained(out / spec.name).prompt.state_tensors()

    for r in table:
        key, offset = ("shift", 0.0) if r["vector"] == "shift" else ("scale", 1.0)
        a, b = int(r["rank_a"]), int(r["rank_b"])
        if a == b:  # the diagonal: one rank, its two seeds
            want = torch.nn.functional.cosine_similarity(state(a, 0)[key] - offset, state(a, 1)[key] - offset, dim=0)
        else:  # two ranks, matched by seed
            want = sum(torch.nn.functional.cosine_similarity(state(a, s)[key] - offset, state(b, s)[key] - offset,
                                                             dim=0) for s in (0, 1)) / 2  # fmt: skip
        assert float(r["cosine"]) == pytest.approx(float(want), abs=1e-6)
        assert r["seeds"] == "2"


def test_rank_length_and_bars_report_parameters_and_metrics(sweep):
    out, grid = sweep
    assert main(["analyze", "rank-length", str(out), "--out", str(out / "figures")]) == 0
    table = rows(out / "figures" / "rank-length.csv")
    pt = next(r for r in table if r["method"] == "prompt_tuning")
    assert int(pt["parameters"]) == 2 * 32  # n·D on the tiny model (D=32)
    ulpt = sorted(int(r["parameters"]) for r in table if r["method"] == "ulpt" and r["rank"] == "2")
    assert ulpt == [4 * 2, 4 * 2 + 2 * 32]  # n·r without shift and scale; n·r + 2·D with them
    assert main(["analyze", "tune-projection", str(out)]) == 0
    bars = rows(out / "tune-projection.csv")
    assert len(bars) == 5 and all(math.isfinite(float(b["test_mean"])) for b in bars)


def test_analyze_refuses_a_folder_without_runs(tmp_path, capsys):
    assert main(["analyze", "shift-scale", str(tmp_path)]) == 2
    assert "neither a run folder nor a sweep folder" in capsys.readouterr().err


def test_main_table_picks_each_tasks_learning_rate_by_validation_and_compares_with_that_pt(tmp_path):
    # The table logic alone, on result files written here: per task, the "(lr by validation)" row takes the test
    # score of the lr whose validation score is best, and "% of PT" is taken against that row.
    from softprompt.experiments.analyses import main_table
    from softprompt.experiments.worker import RESULT

    grid = parse_grid(
        {"tasks": ["sst2", "rte"], "models": ["tiny-llama"], "seeds": [0],
         "runs": [{"method": "zero-shot"}, {"method": "prompt_tuning"}, {"method": "prompt_tuning", "lr": 0.003},
                  {"method": "ulpt", "rank": 2}]},
    )  # fmt: skip
    (tmp_path / "grid.json").write_text(json.dumps(grid.source))
    # (test, validation, parameters) per group and task; rte's default-lr PT has the better validation, sst2's not
    numbers = {
        ("zero-shot", "sst2"): (0.70, math.nan, 0), ("zero-shot", "rte"): (0.50, math.nan, 0),
        ("prompt_tuning", "sst2"): (0.55, 0.60, 100), ("prompt_tuning", "rte"): (0.58, 0.70, 100),
        ("prompt_tuning lr=0.003", "sst2"): (0.85, 0.90, 100), ("prompt_tuning lr=0.003", "rte"): (0.62, 0.65, 100),
        ("ulpt rank=2", "sst2"): (0.80, 0.85, 2), ("ulpt rank=2", "rte"): (0.57, 0.60, 2),
    }  # fmt: skip
    for spec in grid.runs:
        test, validation, parameters = numbers[(spec.group, spec.task)]
        summary = {"test": {"accuracy": test}, "trainable_parameters": parameters}
        if math.isfinite(validation):
            summary["validation"] = {"accuracy": validation}
        (tmp_path / spec.name).mkdir()
        result = {"name": spec.name, "spec": spec.to_dict(), "status": "done", "metric": "accuracy", "summary": summary}
        (tmp_path / spec.name / RESULT).write_text(json.dumps(result))

    main_table(tmp_path)
    table = {r["method"]: r for r in rows(tmp_path / "main-table.csv")}
    chosen = "prompt_tuning (lr by validation)"
    assert list(table) == ["zero-shot", "prompt_tuning", "prompt_tuning lr=0.003", chosen, "ulpt rank=2"]
    assert table[chosen]["sst2 (accuracy)"] == "85.0" and table[chosen]["rte (accuracy)"] == "58.0"
    assert table[chosen]["chosen"] == "sst2: prompt_tuning lr=0.003; rte: prompt_tuning"
    assert table[chosen]["average (2 tasks)"] == "71.5" and table[chosen]["average % of PT"] == "100.0"
    assert table["ulpt rank=2"]["average % of PT"] == f"{100 * (80 + 57) / (85 + 58):.1f}"  # 95.8, not vs 56.5
    assert table["ulpt rank=2"]["parameters % of PT"] == "2.0"

    # An lr that has not finished on a task leaves that task unchosen (and the row without an average)
    missing = next(s for s in grid.runs if s.group == "prompt_tuning lr=0.003" and s.task == "rte")
    (tmp_path / missing.name / RESULT).unlink()
    main_table(tmp_path)
    table = {r["method"]: r for r in rows(tmp_path / "main-table.csv")}
    assert table[chosen]["rte (accuracy)"] == "-" and table[chosen]["average (2 tasks)"] == "-"
    assert table["ulpt rank=2"]["average (2 tasks)"] == "68.5"  # a finished row keeps its average over both
    assert table["ulpt rank=2"]["average % of PT"] == f"{100 * 80 / 85:.1f}"
    assert table["ulpt rank=2"]["tasks vs PT"] == "1"

    # "% of PT" pairs a row with prompt tuning over the tasks those two have finished, whatever other rows lack
    (tmp_path / missing.name / RESULT).write_text(json.dumps({"name": missing.name, "spec": missing.to_dict(),
                                                              "status": "done", "metric": "accuracy",
                                                              "summary": {"test": {"accuracy": 0.62},
                                                                          "validation": {"accuracy": 0.65},
                                                                          "trainable_parameters": 100}}))  # fmt: skip
    zero_shot_rte = next(s for s in grid.runs if s.group == "zero-shot" and s.task == "rte")
    (tmp_path / zero_shot_rte.name / RESULT).unlink()
    main_table(tmp_path)
    table = {r["method"]: r for r in rows(tmp_path / "main-table.csv")}
    assert table["zero-shot"]["average (2 tasks)"] == "-"
    assert table["ulpt rank=2"]["average % of PT"] == f"{100 * (80 + 57) / (85 + 58):.1f}"  # both tasks, 95.8
    assert table["ulpt rank=2"]["tasks vs PT"] == "2" and table["zero-shot"]["tasks vs PT"] == "1"


def test_curves_of_a_sweep_over_tasks_average_seeds_within_a_task_never_across_tasks(tmp_path):
    # Two tasks, one group, two seeds: each task gets its own panel and rows, the mean of its own two seeds' losses.
    from softprompt.experiments.analyses import curves

    grid = parse_grid({"tasks": ["sst2", "rte"], "models": ["tiny-llama"], "seeds": [0, 1],
                       "runs": [{"method": "ulpt", "rank": 2}]})  # fmt: skip
    losses = {}
    for i, spec in enumerate(grid.runs):
        (tmp_path / spec.name).mkdir()
        (tmp_path / spec.name / "spec.json").write_text(json.dumps(spec.to_dict()))
        losses[(spec.task, spec.seed)] = [1.0 + i, 0.5 + i]
        log = [{"step": s, "loss": v} for s, v in zip((5, 10), losses[(spec.task, spec.seed)], strict=True)]
        (tmp_path / spec.name / "log.jsonl").write_text("\n".join(map(json.dumps, log)) + "\n")
    curves(tmp_path)
    table = rows(tmp_path / "curves.csv")
    assert sorted({r["task"] for r in table}) == ["rte", "sst2"]
    for task in ("sst2", "rte"):
        mine = [r for r in table if r["task"] == task]
        assert [int(r["step"]) for r in mine] == [5, 10] and {r["runs"] for r in mine} == {"2"}
        for k, r in enumerate(mine):
            assert float(r["loss_mean"]) == pytest.approx(statistics.fmean(losses[(task, s)][k] for s in (0, 1)))


@pytest.mark.parametrize("n", [3, 10, 12, 20, 31])
def test_figures_give_each_line_its_own_colour(n):
    # matplotlib's default cycle repeats after 10 colours; the main table has 12 rows
    from softprompt.experiments.analyses import _colors

    assert len(set(_colors(n))) == n


def test_main_table_says_when_a_cell_is_the_mean_of_fewer_seeds_than_its_row(tmp_path):
    from softprompt.experiments.analyses import main_table
    from softprompt.experiments.worker import RESULT

    grid = parse_grid({"tasks": ["sst2", "rte"], "models": ["tiny-llama"], "seeds": [0, 1, 2],
                       "runs": [{"method": "prompt_tuning"}]})  # fmt: skip
    tests = {"sst2": [0.80, 0.90, 0.70], "rte": [0.50, 0.60]}  # rte's seed 2 has not finished
    for spec in grid.runs:
        if spec.seed >= len(tests[spec.task]):
            continue
        summary = {"test": {"accuracy": tests[spec.task][spec.seed]}, "trainable_parameters": 100}
        (tmp_path / spec.name).mkdir()
        result = {"name": spec.name, "spec": spec.to_dict(), "status": "done", "metric": "accuracy", "summary": summary}
        (tmp_path / spec.name / RESULT).write_text(json.dumps(result))
    main_table(tmp_path)
    (row,) = rows(tmp_path / "main-table.csv")
    assert row["seeds"] == "3" and row["sst2 (accuracy)"] == "80.0"
    assert row["rte (accuracy)"] == "55.0 (2 of 3 seeds)"
