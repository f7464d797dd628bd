"""`softprompt sweep`: grid expansion, the command each run gets, the results table, and kill -9 then restart (on the
tiny models, with the synthetic task written to files)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from synthetic import synthetic_examples

from softprompt.artifact import PromptArtifact
from softprompt.checkpoint import has_checkpoint, load_checkpoint
from softprompt.cli import build_parser
from softprompt.experiments.grid import load_grid, parse_grid
from softprompt.experiments.results import group_rows, markdown, read_runs, run_row
from softprompt.experiments.worker import execute, read_result

SRC = Path(__file__).resolve().parents[1] / "src"


def write_task(folder: Path) -> Path:
    """The synthetic sentiment task as jsonl files plus a task file (what `--task-file` reads)."""
    for split, n, seed in (("train", 48, 0), ("validation", 16, 1), ("test", 16, 2)):
        rows = [{"text": e.text, "label": ("negative", "positive")[e.label]} for e in synthetic_examples(n, seed)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "synthetic", "train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl",
            "label_column": "label", "template": "review : {text} . sentiment :"}  # fmt: skip
    path = folder / "synthetic.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expands_axes_cases_and_seeds_with_stable_names(tmp_path):
    grid = parse_grid(
        {
            "tasks": ["sst2", "rte"],
            "models": ["tiny-llama"],
            "seeds": [0, 1],
            "common": {"steps": 30, "max_eval_examples": 50, "budget": 100},
            "runs": [
                {"method": "ulpt", "rank": [2, 64], "use_shift": [True, False]},
                {"method": "ulpt", "cases": [{"rank": 4, "prompt_len": 10}, {"rank": 8, "prompt_len": 5}]},
                {"method": "prompt_tuning"},
                {"method": "bbt", "popsize": 4},
            ],
        },
        tmp_path,
    )
    # 2 tasks x (4 + 2 + 1 + 1 settings) x 2 seeds
    assert len(grid.runs) == 2 * 8 * 2
    assert len({r.name for r in grid.runs}) == len(grid.runs)
    assert [r.seed for r in grid.runs[:4]] == [0, 1, 0, 1]  # a group's seeds are adjacent
    cases = [(r.settings["rank"], r.settings["prompt_len"]) for r in grid.runs if "prompt_len" in r.settings]
    assert set(cases) == {(4, 10), (8, 5)}
    bbt = next(r for r in grid.runs if r.method == "bbt")
    assert bbt.command == "blackbox" and bbt.common == {"budget": 100}  # steps/max_eval_examples are train's only
    ulpt = grid.runs[0]
    assert ulpt.command == "train" and ulpt.common == {"steps": 30, "max_eval_examples": 50}
    again = parse_grid(grid.source, tmp_path)
    assert [r.name for r in again.runs] == [r.name for r in grid.runs]  # the same folder names every start
    changed = parse_grid({**grid.source, "common": {"steps": 31, "max_eval_examples": 50, "budget": 100}}, tmp_path)
    assert {r.name for r in changed.runs if r.command == "train"}.isdisjoint(r.name for r in grid.runs)


GRIDS = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_grid_file_expands_to_command_lines_the_cli_accepts(path, tmp_path, monkeypatch):
    """The papers' grids (some sized for a GPU, never run here) must at least be runs softprompt would start. Their
    paths are from the repository root, where they are swept; a grid that reads real data outside the repository
    (`../shared/data`) is checked where that data is (CI), as the real-data tests are."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    data_dir = (yaml.safe_load(path.read_text()).get("common") or {}).get("data_dir")
    if isinstance(data_dir, str) and not (root / data_dir).is_dir():
        pytest.skip(f"{path.name} reads {data_dir}, which is not here")
    grid = load_grid(path)
    assert grid.runs and len({r.name for r in grid.runs}) == len(grid.runs)
    parser = build_parser()
    for run in grid.runs:
        args = parser.parse_args(run.argv(tmp_path / run.name))
        task = Path(args.task_file).stem if args.task_file else args.task  # a grid may name task files
        assert task == run.task_name and args.seed == run.seed


def test_each_run_is_the_command_line_its_settings_say():
    grid = parse_grid(  # (the grid's data folder is checked to exist only for a grid about to be swept)
        {
            "tasks": ["sst2"],
            "seeds": [3],
            "common": {"data_dir": "/data", "steps": 7},
            "runs": [{"method": "ulpt", "rank": 4, "use_scale": False, "lr": 0.3}],
        },  # fmt: skip
        check_values=False,
    )
    (run,) = grid.runs
    args = build_parser().parse_args(run.argv("/tmp/x"))
    assert (args.command, args.task, args.method, args.seed, args.out) == ("train", "sst2", "ulpt", 3, "/tmp/x")
    assert (args.rank, args.use_scale, args.lr, args.steps, args.data_dir) == (4, False, 0.3, 7, "/data")


def test_task_files_name_their_runs_by_content_and_table_names_must_differ(tmp_path):
    task = write_task(tmp_path)
    grid = {"tasks": [str(task)], "runs": [{"method": "ulpt"}]}
    before = parse_grid(grid).runs[0]
    assert parse_grid(grid).runs[0].name == before.name  # stable from one start to the next
    task.write_text(task.read_text().replace("review :", "film review :"))
    after = parse_grid(grid).runs[0]
    assert after.name != before.name and after.task_digest != before.task_digest  # an edited task is a new run
    assert "task_digest" not in parse_grid({"tasks": ["sst2"], "runs": [{"method": "ulpt"}]}).runs[0].identity()
    other = tmp_path / "other"
    other.mkdir()
    (other / task.name).write_text(task.read_text())
    with pytest.raises(ValueError, match=f"would both be called '{task.stem}'"):
        parse_grid({**grid, "tasks": [str(task), str(other / task.name)]})


def test_a_sweep_folder_that_is_a_file_is_refused_before_anything_runs(tmp_path):
    from softprompt.experiments.sweep import run_sweep

    (tmp_path / "afile").write_text("mine")
    grid = parse_grid({"tasks": ["sst2"], "runs": [{"method": "zero-shot"}]})
    with pytest.raises(ValueError, match="afile is a file"):
        run_sweep(grid, tmp_path / "afile", echo=lambda line: None)
    assert (tmp_path / "afile").read_text() == "mine"


def test_grid_out_is_the_default_sweep_folder(tmp_path):
    runs = [{"method": "ulpt"}]
    assert parse_grid({"name": "g", "tasks": ["sst2"], "runs": runs}).out == Path("runs/sweeps/g")
    assert parse_grid({"name": "g", "out": str(tmp_path / "here"), "tasks": ["sst2"], "runs": runs}).out == (
        tmp_path / "here"
    )


def test_block_order_runs_every_task_of_a_block_before_the_next_block_with_the_same_runs(tmp_path):
    source = {"tasks": ["sst2", "rte"], "seeds": [0, 1], "common": {"steps": 3},
              "runs": [{"method": "zero-shot"}, {"method": "ulpt", "rank": [2, 64]}]}  # fmt: skip
    by_task = parse_grid(source, tmp_path).runs
    by_block = parse_grid({**source, "order": "blocks"}, tmp_path).runs
    assert [(r.task, r.method) for r in by_task[:6]] == [("sst2", "zero-shot")] * 2 + [("sst2", "ulpt")] * 4
    zero_shot = [(r.task, r.method, r.seed) for r in by_block[:4]]
    assert zero_shot == [(task, "zero-shot", seed) for task in ("sst2", "rte") for seed in (0, 1)]
    ranks = [(r.task, r.settings["rank"]) for r in by_block[4:] if r.seed == 0]
    assert ranks == [("sst2", 2), ("rte", 2), ("sst2", 64), ("rte", 64)]
    assert sorted(r.name for r in by_block) == sorted(r.name for r in by_task)  # the same runs, the same folders


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "rnak": 2}]}, "no option 'rnak'"),
        ({"tasks": ["sst2"], "runs": [{"method": "nope"}]}, "unknown method 'nope'; a grid's methods: .*zero-shot"),
        ({"tasks": ["sst2"], "runs": [{"method": "prefix", "optimizer": "cmaes"}]}, "blackbox does not run method"),
        ({"tasks": ["sst2"], "name": ["a", "b"], "runs": [{"method": "ulpt"}]}, "name must be a word"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "budget": 5}]}, "no option 'budget'"),
        ({"tasks": ["sst2"], "common": {"stepz": 1}, "runs": [{"method": "ulpt"}]}, "'stepz' is not an option"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt"}, {"method": "ulpt"}]}, "same settings"),
        ({"runs": [{"method": "ulpt"}]}, "at least one task"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "seed": 1}]}, "no option 'seed'"),
        ({"tasks": ["sst2"], "order": "methods", "runs": [{"method": "ulpt"}]}, "order must be one of"),
        ({"tasks": ["sst2"], "common": {"dtype": "bogus"}, "runs": [{"method": "ulpt"}]}, "--dtype: invalid choice"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "steps": "ten"}]}, "--steps: invalid int value: 'ten'"),
        ({"tasks": ["sst2"], "runs": [{"method": "zero-shot"}], "common": {"dtype": "fp8"}}, "--dtype: invalid"),
        # the commands' own checks of their settings, before any run starts
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "steps": -5}]}, r"ulpt.*\(softprompt train\): steps must be"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "lr": -1.0}]}, "lr must be a positive number"),
        ({"tasks": ["sst2"], "runs": [{"method": "ulpt", "rank": [2, 0]}]}, "rank0.*rank"),
        ({"tasks": ["sst2"], "runs": [{"method": "bbt", "budget": 0}]}, r"\(softprompt blackbox\): budget must be"),
        ({"tasks": ["sst2", "nope"], "runs": [{"method": "ulpt"}]}, "unknown task 'nope'"),
        ({"tasks": ["sst2"], "seeds": [], "runs": [{"method": "ulpt"}]}, "seeds is empty"),
        ({"tasks": ["sst2"], "models": [], "runs": [{"method": "ulpt"}]}, "models is empty"),
        ({"tasks": ["sst2"], "out": 3, "runs": [{"method": "ulpt"}]}, "out must be a folder path"),
        ({"tasks": ["missing/task.yaml"], "runs": [{"method": "ulpt"}]}, "task file missing/task.yaml not found"),
        (
            {"tasks": ["sst2"], "common": {"data_dir": "no/such/dir"}, "runs": [{"method": "ulpt"}]},
            "data_dir no/such/dir: no such folder",
        ),
        (
            {"tasks": ["sst2"], "runs": [{"method": "ulpt", "data": "nothere.jsonl"}]},
            r"no such file .*nothere.jsonl \(its data",
        ),
    ],
)
def test_bad_grids_are_refused_with_a_clear_message(grid, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(grid)


def test_a_block_that_only_spells_out_defaults_is_refused_as_the_same_run():
    """Two folders for one computation would be a run done twice and a table row that looks like a second setting."""
    from softprompt.blackbox.search import SearchConfig
    from softprompt.prompts import REGISTRY

    ulpt = REGISTRY["ulpt"][0]()
    spelled = {"method": "ulpt", "rank": ulpt.rank, "lr": ulpt.default_lr, "use_scale": True}
    with pytest.raises(ValueError, match="compute the same thing"):
        parse_grid({"tasks": ["sst2"], "runs": [{"method": "ulpt"}, spelled]})
    budget = SearchConfig.__dataclass_fields__["budget"].default
    with pytest.raises(ValueError, match=r"bbt-seed0-\w+ and .*bbt-budget\d+-seed0"):
        parse_grid({"tasks": ["sst2"], "runs": [{"method": "bbt"}, {"method": "bbt", "budget": budget}]})
    # a value that differs from the default, another seed, or the same block on another task: distinct runs
    grid = parse_grid({"tasks": ["sst2", "rte"], "seeds": [0, 1],
                       "runs": [{"method": "ulpt"}, {**spelled, "lr": ulpt.default_lr / 3}]})  # fmt: skip
    assert len({r.name for r in grid.runs}) == len(grid.runs) == 8


@pytest.mark.parametrize("model, error", [("tiny-lama", ValueError), ("/no/such/model", FileNotFoundError)])
def test_a_model_that_cannot_load_stops_the_sweep_before_its_first_run(tmp_path, model, error):
    """Not once per run (a hub lookup of a mistyped name takes ~25 s offline) and not after writing the folder."""
    from softprompt.experiments.sweep import run_sweep

    grid = parse_grid({"tasks": ["sst2"], "models": ["tiny-llama", model], "seeds": [0, 1],
                       "runs": [{"method": "zero-shot"}]}, tmp_path)  # fmt: skip
    with pytest.raises(error, match="tiny-lama" if error is ValueError else "cannot load model"):
        run_sweep(grid, tmp_path / "out", echo=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_results_table_groups_seeds_with_mean_and_sample_std():
    def result(seed: int, rank: int, test: float) -> dict:
        grid = parse_grid({"tasks": ["sst2"], "seeds": [seed], "runs": [{"method": "ulpt", "rank": rank}]})
        spec = grid.runs[0]
        summary = {"test": {"accuracy": test}, "validation": {"accuracy": test / 2}, "trainable_parameters": rank}
        return {"name": spec.name, "spec": spec.to_dict(), "status": "done", "metric": "accuracy",
                "summary": summary, "wall_s": 1.0}  # fmt: skip

    tests = {2: [0.5, 0.7, 0.9], 64: [0.8, 0.6]}
    rows = [run_row(result(seed, rank, t)) for rank, values in tests.items() for seed, t in enumerate(values)]
    # a resumed run's wall time is its last attempt's: its run time is `run_s` (over all attempts), else not known
    resumed = run_row({**result(3, 2, 0.7), "wall_s": 0.25, "resumed": True})
    assert resumed["resumed"] and not rows[0]["resumed"] and math.isnan(resumed["run_s"])
    assert group_rows([*rows[:3], resumed])[0]["run_s_mean"] == 1.0
    timed = run_row({**result(3, 2, 0.7), "wall_s": 0.25, "resumed": True, "run_s": 5.0})
    assert group_rows([*rows[:3], timed])[0]["run_s_mean"] == pytest.approx(2.0)
    groups = group_rows(rows)
    assert [(g["group"], g["seeds"]) for g in groups] == [("ulpt rank=2", 3), ("ulpt rank=64", 2)]
    for g, values in zip(groups, tests.values(), strict=True):
        assert g["test_mean"] == pytest.approx(statistics.fmean(values))
        assert g["test_std"] == pytest.approx(statistics.stdev(values))
        assert g["validation_mean"] == pytest.approx(statistics.fmean(values) / 2)
    # the number format each group's runs ran in, both where a group mixes them (`dtype auto` on two machines)
    formats = [{**result(seed, 2, 0.5), "dtype": dtype} for seed, dtype in enumerate(["bfloat16", "float32", None])]
    assert group_rows([run_row(r) for r in formats])[0]["dtype"] == "bfloat16, float32"
    assert "| bfloat16, float32 |" in markdown(group_rows([run_row(r) for r in formats]))


def sweep_grid(folder: Path, steps: int) -> Path:
    task = write_task(folder)
    grid = {
        "name": "tiny",
        "tasks": [str(task)],
        "models": ["tiny-llama-steerable"],
        "common": {"batch_size": 4, "lr": 0.1, "log_every": 5, "checkpoint_every_s": 0.01, "max_test_examples": 8},
        "runs": [
            {"method": "bbt", "budget": 16, "popsize": 4, "prompt_len": 4, "dim": 8, "shots": 4, "eval_every": 8},
            {"method": "ulpt", "prompt_len": 4, "rank": 2, "steps": steps, "eval_every": steps // 2},
        ],
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def start_sweep(grid: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "softprompt", "sweep", str(grid), "--out", str(out)]
    # SIGINT as a terminal gives it, even where these tests were started in the background (which ignores it)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def test_time_left_counts_each_run_at_its_own_groups_wall_time_not_one_mean_over_all_runs():
    from softprompt.experiments.sweep import _TimeLeft

    grid = parse_grid({"tasks": ["sst2", "rte"], "seeds": [0, 1, 2],
                       "runs": [{"method": "zero-shot"}, {"method": "bbt", "budget": 100}]})  # fmt: skip
    run = {(r.task_name, r.method, r.seed): r for r in grid.runs}
    left = [r for r in grid.runs if r.seed != 0 or r.task_name == "rte"]  # sst2's seed-0 runs have finished
    time_left = _TimeLeft(slots=2)
    # a run in one attempt: its command's wall time (model loading included), not its run folder's run_s
    time_left.add(run["sst2", "zero-shot", 0], {"status": "done", "wall_s": 10.0, "run_s": 8.0})
    time_left.add(run["sst2", "bbt", 0], {"status": "done", "wall_s": 1000.0})
    # a resumed run: its time over all attempts (wall_s is its last part only); one of old results with none: skipped
    time_left.add(run["sst2", "bbt", 1], {"status": "done", "wall_s": 7.0, "run_s": 1000.0, "resumed": True})
    time_left.add(run["sst2", "bbt", 1], {"status": "done", "wall_s": 7.0, "resumed": True})
    time_left.add(run["sst2", "bbt", 2], {"status": "failed", "wall_s": 3.0})
    # sst2: 2 zero-shot runs x 10 s + 2 searches x 1000 s, on 2 slots; rte's 6 runs belong to no timed group
    assert time_left.text(left) == "eta 1010 s + 6 run(s) of groups not yet timed"
    assert _TimeLeft(slots=0, walls=time_left.walls).text(left).startswith("eta 2020 s one at a time")  # Ray
    assert _TimeLeft(slots=2).text(left) == "eta unknown"
    assert time_left.text([run["sst2", "bbt", 1]]) == "eta 1000 s"  # one run left: one slot busy
    assert time_left.text([]) == "done"


def test_sweep_killed_mid_run_then_restarted_loses_nothing_and_runs_nothing_twice(tmp_path):
    grid_file = sweep_grid(tmp_path, steps=400)
    grid = load_grid(grid_file)
    out = tmp_path / "sweep"
    first, second = (out / run.name for run in grid.runs)
    proc = start_sweep(grid_file, out)
    deadline = time.time() + 600
    while not ((first / "result.json").exists() and has_checkpoint(second / "checkpoint")):
        assert proc.poll() is None, f"the sweep ended before it could be killed:\n{proc.stdout.read()}"
        assert time.time() < deadline, "the sweep made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (second / "result.json").exists(), "the second run should have been killed mid-run"
    time.sleep(1.0)  # the worker dies with the sweep (PR_SET_PDEATHSIG); nothing may write after this
    before_s = load_checkpoint(second / "checkpoint")[1]["elapsed_s"]  # the killed attempt's time, to its checkpoint

    restarted = start_sweep(grid_file, out)
    output, _ = restarted.communicate(timeout=900)
    assert restarted.returncode == 0, output
    assert "2 runs, 1 finished before, 1 to run" in output

    # Nothing twice: the finished run was not started again; the interrupted one was resumed once.
    assert [json.loads(line)["resume"] for line in (first / "attempts.jsonl").read_text().splitlines()] == [False]
    assert [json.loads(line)["resume"] for line in (second / "attempts.jsonl").read_text().splitlines()] == [
        False,
        True,
    ]
    steps = [r["step"] for r in map(json.loads, (second / "log.jsonl").read_text().splitlines()) if "loss" in r
             and "split" not in r]  # fmt: skip
    assert steps == list(range(5, 401, 5))  # one training-loss record per logged step, none lost or repeated

    # Nothing lost: the resumed run ends with the prompt and metrics of the same run done in one go.
    spec = grid.runs[1]
    reference = execute(spec.to_dict(), tmp_path / "reference", threads=1)
    resumed = read_result(second)
    assert resumed["summary"]["test"] == reference["summary"]["test"]
    # its time counts both attempts (the first up to its checkpoint), not only the last one's wall time
    assert resumed["resumed"] and before_s > 0 and before_s < resumed["run_s"] < before_s + resumed["wall_s"]
    a = PromptArtifact.from_pretrained(second).prompt.state_tensors()
    b = PromptArtifact.from_pretrained(tmp_path / "reference").prompt.state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)

    table = (out / "results.md").read_text()
    assert f"| synthetic | tiny-llama-steerable | {spec.group} | 1 |" in table and spec.group.startswith("ulpt ")
    assert "bbt budget=16" in table


def test_ctrl_c_stops_the_running_run_and_starts_no_more(tmp_path):
    """SIGINT to the sweep alone (as `kill -INT`; a terminal's Ctrl-C also reaches the workers): it stops its worker,
    starts none of the queued runs, writes the table and says how to go on; the stopped run resumes later."""
    grid_file = sweep_grid(tmp_path, steps=4000)
    source = yaml.safe_load(grid_file.read_text())
    source["seeds"] = [0, 1, 2]
    source["runs"] = source["runs"][1:]  # three long ULPT runs
    grid_file.write_text(yaml.safe_dump(source))
    out = tmp_path / "sweep"
    first, *queued = (out / run.name for run in load_grid(grid_file).runs)
    proc = start_sweep(grid_file, out)
    try:
        deadline = time.time() + 300
        while not has_checkpoint(first / "checkpoint"):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the first run made no checkpoint"
            time.sleep(0.05)
        worker = json.loads((first / "attempts.jsonl").read_text().splitlines()[-1])["pid"]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a sweep that ignored the signal must not outlive the test (its worker dies with it)
    assert proc.returncode == 130, output
    assert "interrupted with 0/3 runs finished" in output and "resumes the others" in output
    assert not any((q / "attempts.jsonl").exists() for q in queued)  # nothing queued was started
    assert (out / "results.md").exists() and not (first / "result.json").exists()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the worker was stopped, not left running
        os.kill(worker, 0)


def test_a_failing_run_is_reported_not_recorded_as_finished(tmp_path):
    task = write_task(tmp_path)
    grid = parse_grid({"tasks": [str(task)], "models": ["tiny-llama"], "runs": [{"method": "ulpt"}]})
    # A setting the grid refuses (lr -1) stands for what only fails at run time (a full disk, a model download)
    spec = dataclasses.replace(grid.runs[0], settings={"lr": -1.0})
    result = execute(spec.to_dict(), tmp_path / spec.name, threads=1)
    assert result["status"] == "failed" and "lr must be a positive number" in result["error"]
    assert read_result(tmp_path / spec.name) is None  # a later start of the sweep tries it again


def test_zero_shot_block_runs_eval_on_the_test_subset_train_uses():
    grid = parse_grid(
        {
            "tasks": ["sst2"],
            "seeds": [3],
            "common": {
                "data_dir": "/data",
                "steps": 7,
                "batch_size": 8,
                "eval_batch_size": 16,
                "max_test_examples": 200,
                "dtype": "auto",
            },
            "runs": [{"method": "zero-shot"}, {"method": "prompt_tuning"}],
        },  # fmt: skip
        check_values=False,
    )
    zero, tuned = grid.runs
    assert (zero.group, zero.command, tuned.command) == ("zero-shot", "eval", "train")
    args = build_parser().parse_args(zero.argv("/tmp/x"))
    assert (args.command, args.zero_shot, args.split, args.task, args.seed) == ("eval", True, "test", "sst2", 3)
    # train's test subset (max_test_examples, seed) and eval batch under eval's names; train's batch is not given
    assert (args.limit, args.batch_size, args.data_dir, args.dtype) == (200, 16, "/data", "auto")
    train = build_parser().parse_args(tuned.argv("/tmp/y"))
    assert (train.max_test_examples, train.seed, train.batch_size) == (200, 3, 8)


@pytest.mark.parametrize(
    "block, common, message",
    [
        ({"method": "zero-shot", "steps": 3}, {}, "zero-shot run has no option 'steps'"),
        ({"method": "zero-shot", "optimizer": "cmaes"}, {}, "no optimizer"),
        ({"method": "ulpt", "optimizer": "none"}, {}, "optimizer must be gradient or cmaes"),
        ({"method": "zero-shot"}, {"data": "train.csv"}, "own files \\(data\\)"),
    ],
)
def test_bad_zero_shot_blocks_are_refused(block, common, message):
    with pytest.raises(ValueError, match=message):
        parse_grid({"tasks": ["sst2"], "common": common, "runs": [block]})


def test_zero_shot_row_is_the_bare_template_on_the_same_test_subset_as_trained_runs(tmp_path):
    import random

    from softprompt.evaluation import evaluate
    from softprompt.experiments.sweep import run_sweep
    from softprompt.models.tiny import tiny_backbone_named
    from softprompt.scoring import Scorer
    from softprompt.tasks.custom.build import build_custom_task
    from softprompt.tasks.custom.spec import load_spec_file

    task_file, seed, n = write_task(tmp_path), 1, 8
    grid = parse_grid(
        {
            "name": "tiny",
            "tasks": [str(task_file)],
            "models": ["tiny-llama-steerable"],
            "seeds": [seed],
            "common": {"batch_size": 4, "steps": 4, "eval_every": 2, "max_test_examples": n},
            "runs": [{"method": "zero-shot"}, {"method": "ulpt", "prompt_len": 4, "rank": 2}],
        },
        tmp_path,
    )
    report = run_sweep(grid, tmp_path / "sweep", echo=lambda line: None)
    assert not report.failed, report.failed
    zero, tuned = report.results

    # Ground truth: the seeded subset drawn here, scored with no prompt / with the trained prompt in this process.
    task, _, _, full_test = build_custom_task(load_spec_file(task_file))
    test = [full_test[i] for i in sorted(random.Random(seed).sample(range(len(full_test)), n))]
    assert test != [full_test[i] for i in sorted(random.Random(0).sample(range(len(full_test)), n))]
    # in the number format the runs used (`dtype auto`: bfloat16 on a CPU with AVX512-BF16), which they record
    announced = re.search(
        r"^dtype: (\w+) \(auto", (tmp_path / "sweep" / tuned["name"] / "output.log").read_text(), re.M
    )
    assert announced and zero["dtype"] == tuned["dtype"] == announced.group(1)
    assert read_runs(tmp_path / "sweep")[0]["dtype"] == announced.group(1)
    scorer = Scorer(tiny_backbone_named("tiny-llama-steerable", dtype=getattr(torch, tuned["dtype"])), task)
    bare = evaluate(scorer, test, None)
    trained = evaluate(scorer, test, PromptArtifact.from_pretrained(tmp_path / "sweep" / tuned["name"]).prompt)
    metric = zero["metric"]
    assert metric == tuned["metric"] == "accuracy"
    assert zero["summary"]["test"]["num_examples"] == tuned["summary"]["test"]["num_examples"] == n
    assert zero["summary"]["test"][metric] == bare[metric]
    assert zero["summary"]["test"]["loss"] == pytest.approx(bare["loss"], rel=1e-5)
    assert tuned["summary"]["test"]["loss"] == pytest.approx(trained["loss"], rel=1e-5)  # train scored this subset
    assert tuned["summary"]["test"]["loss"] != pytest.approx(bare["loss"], rel=1e-5)  # (and the prompt mattered)

    rows = {row["group"]: row for row in group_rows([run_row(r) for r in report.results])}
    assert rows["zero-shot"]["parameters_mean"] == 0 and rows["zero-shot"]["test_mean"] == bare[metric]
    row = f"| synthetic | tiny-llama-steerable | zero-shot | 1 | accuracy | {bare[metric]:.4f} ± 0.0000 | - | 0 |"
    assert row in (tmp_path / "sweep" / "results.md").read_text()

    # The main table (softprompt analyze main-table): one row per method in the grid's order, test metric x 100.
    import csv

    from softprompt.experiments.analyses import main_table

    main_table(tmp_path / "sweep")
    tuned_group = grid.runs[1].group
    table = list(csv.DictReader((tmp_path / "sweep" / "main-table.csv").open()))
    assert [(r["method"], r["parameters"]) for r in table] == [
        ("zero-shot", "0"),
        (tuned_group, f"{tuned['summary']['trainable_parameters']:,}"),
    ]
    for r, score in zip(table, (bare[metric], tuned["summary"]["test"][metric]), strict=True):
        assert r["synthetic (accuracy)"] == r["average (1 tasks)"] == f"{100 * score:.1f}"


def test_tables_and_analyses_are_of_the_grid_as_it_is_now(tmp_path, capsys):
    """A sweep folder keeps the runs of an earlier version of its grid; the table, `analyze` and `plot` leave them
    out, and a block's new label reaches finished runs without running them again."""
    from softprompt.__main__ import main
    from softprompt.experiments.sweep import run_sweep

    task = write_task(tmp_path)
    source = {"name": "g", "tasks": [str(task)], "models": ["tiny-llama"], "seeds": [0],
              "common": {"batch_size": 4, "eval_every": 10, "max_test_examples": 8},
              "runs": [{"method": "ulpt", "prompt_len": 4, "rank": 2, "steps": 10}]}  # fmt: skip
    out = tmp_path / "sweep"
    for steps in (10, 20):  # the user edits steps and sweeps again into the same folder
        source["runs"][0]["steps"] = steps
        (spec,) = parse_grid(source, tmp_path).runs
        assert execute(spec.to_dict(), out / spec.name, threads=1)["status"] == "done"
        run_sweep(parse_grid(source, tmp_path), out, echo=lambda line: None)
    assert len(list(out.glob("*/result.json"))) == 2
    assert [r["name"] for r in read_runs(out)] == [spec.name]  # the steps-20 run only
    assert main(["analyze", "main-table", str(out)]) == 0
    (row,) = [r for r in csv.DictReader((out / "main-table.csv").open()) if r.get("seeds")]
    assert row["seeds"] == "1"
    assert main(["plot", str(out)]) == 0
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert {c["group"] for c in curves} == {spec.group} and {c["runs"] for c in curves} == {"1"}

    source["runs"][0]["label"] = "ULPT r=2"
    lines: list[str] = []
    report = run_sweep(parse_grid(source, tmp_path), out, echo=lines.append)
    assert report.skipped == [spec.name] and "1 finished before, 0 to run" in lines[0]
    assert "| ULPT r=2 |" in (out / "results.md").read_text()
    assert [r["group"] for r in read_runs(out)] == ["ULPT r=2"]


def test_a_sweep_folder_reads_the_same_from_any_folder_and_is_not_taken_over_by_another_grid(
    tmp_path, monkeypatch, capsys
):
    """Its grid names a task file by a relative path (part of the runs' names), so reading it from another folder
    that has a different file of that name must still find its runs; a grid of another name is refused; a failed
    run is listed under the table."""
    from softprompt.__main__ import main
    from softprompt.experiments.sweep import run_sweep

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    write_task(here), write_task(elsewhere)
    (elsewhere / "synthetic.yaml").write_text((elsewhere / "synthetic.yaml").read_text().replace("sentiment", "mood"))
    source = {"name": "g", "tasks": ["synthetic.yaml"], "models": ["tiny-llama"], "seeds": [0, 1],
              "common": {"max_test_examples": 8}, "runs": [{"method": "zero-shot"}]}  # fmt: skip
    monkeypatch.chdir(here)
    report = run_sweep(parse_grid(source), "sweep", echo=lambda line: None)
    assert not report.failed
    expected = [r["name"] for r in read_runs("sweep")]
    assert len(expected) == 2
    monkeypatch.chdir(elsewhere)  # the same name, another task: other run names if parsed from here
    assert [r["name"] for r in read_runs(here / "sweep")] == expected
    assert main(["analyze", "main-table", str(here / "sweep"), "--out", str(tmp_path / "table")]) == 0
    assert "does not parse" not in capsys.readouterr().err

    unnamed = here / "unnamed.yaml"  # a grid file without `name` is named by its file, start after start
    unnamed.write_text(yaml.safe_dump({k: v for k, v in source.items() if k != "name"}))
    for _ in range(2):
        assert run_sweep(load_grid(unnamed), here / "unnamed", echo=lambda line: None).results

    other = {**source, "name": "h"}
    with pytest.raises(ValueError, match="holds the sweep 'g'.*not 'h'"):
        run_sweep(parse_grid(other), here / "sweep", echo=lambda line: None)
    assert [r["name"] for r in read_runs(here / "sweep")] == expected  # its grid.json and tables are as they were

    (elsewhere / "test.jsonl").unlink()  # a file the task names is missing: refused before any run
    with pytest.raises(ValueError, match=r"no such file .*test.jsonl \(named by task file synthetic.yaml"):
        parse_grid(other)
    (elsewhere / "test.jsonl").write_text("{not json\n")  # runs that fail: listed under the table, with why
    report = run_sweep(parse_grid(other), elsewhere / "sweep", echo=lambda line: None)
    assert len(report.failed) == 2
    table = (elsewhere / "sweep" / "results.md").read_text()
    assert "2 run(s) failed" in table and all(f"- {r['name']}: " in table for r in report.failed)
    assert "test.jsonl" in table

    # data edited after its runs finished: they are kept (not run again), and the sweep says so
    lines: list[str] = []
    again = run_sweep(parse_grid(source, here), here / "sweep", echo=lines.append)
    assert len(again.skipped) == 2 and not any(line.startswith("warning") for line in lines)
    (here / "test.jsonl").write_text((here / "test.jsonl").read_text().replace("positive", "negative", 1))
    lines.clear()
    again = run_sweep(parse_grid(source, here), here / "sweep", echo=lines.append)
    assert len(again.skipped) == 2 and [r["name"] for r in read_runs(here / "sweep")] == expected
    (warning,) = [line for line in lines if line.startswith("warning")]
    assert f"2 finished run(s) read data files that have changed since ({here / 'test.jsonl'} among them)" in warning


def test_a_built_in_tasks_files_under_data_dir_are_checked_first_and_their_changes_reported(tmp_path, monkeypatch):
    """Under a grid's `data_dir` a built-in task reads the files its splits name: a folder without them stops the
    grid before any run starts; a finished run whose file changed is kept and reported, a file it does not read
    (zero-shot reads the test split only) is not."""
    from softprompt.experiments.sweep import run_sweep

    sst2 = tmp_path / "data" / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):  # the repository's own SST-2 slice
        (sst2 / name).write_bytes((SRC.parent / "data" / "glue" / "SST-2" / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    source = {"name": "b", "tasks": ["sst2"], "models": ["tiny-llama"], "runs": [{"method": "zero-shot"}],
              "common": {"data_dir": "data", "max_test_examples": 8}}  # fmt: skip
    with pytest.raises(ValueError, match=r"no such file .*RTE/dev.tsv \(read by task rte under data_dir data"):
        parse_grid({**source, "tasks": ["sst2", "rte"]})
    assert not (tmp_path / "sweep").exists()

    (result,) = run_sweep(parse_grid(source), "sweep", echo=lambda line: None).results
    assert [Path(p).resolve() for p in result["data_files"]] == [(sst2 / "dev.tsv").resolve()]

    def warnings() -> list[str]:
        lines: list[str] = []
        report = run_sweep(parse_grid(source), "sweep", echo=lines.append)
        assert report.skipped == [result["name"]]
        return [line for line in lines if line.startswith("warning")]

    (sst2 / "train.tsv").write_text((sst2 / "train.tsv").read_text() + "a new row\t1\n")
    assert warnings() == []
    (sst2 / "dev.tsv").write_text((sst2 / "dev.tsv").read_text() + "a new row\t1\n")
    (warning,) = warnings()
    assert "1 finished run(s) read data files that have changed since" in warning and "dev.tsv" in warning
