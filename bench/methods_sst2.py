"""SST-2 on the embedded SmolLM2 under one budget: every prompt method the ULPT paper compares (issue 9).

Rows: the bare template (zero-shot), prompt tuning, DPT r=10 and r=64, DePT, residual prompt tuning, deep prefix
(P-tuning v2, direct), ULPT r=2 and r=64, and ULPT with the projection tuned instead of z (the paper's Table 3).
Every trained row goes through the library's one training scaffold (`train_prompt`) with the same model, template,
verbalizer, training batches (same seed, so the same examples in the same order), number of steps, batch size,
prompt length n (prefix: n key/value slots per layer), validation subset (best-step selection) and test examples;
each method trains at its own default learning rate (`PromptConfig.default_lr`). DePT, whose point is a shorter
prompt plus a low-rank update of the text embeddings, gets m = 0.6·n prompt vectors and the rank r that brings it to
PT's parameter budget, as in the paper (T5-base: m = 60, r = 30 for n = 100).

Columns: trainable parameters while training, test accuracy (SST-2 dev, the task's test split, its first
`--max-test-examples` sentences), validation accuracy (the best step's, on a seeded subset of the validation split
the task carves from train), the median wall time of one training step (from the run log, one record per step) and
the row's wall time (training, evaluations and test). Results are rewritten after every row, so a cut-short run
leaves the rows it finished.

    python bench/methods_sst2.py                                                # the committed table
    python bench/methods_sst2.py --rerender bench/results/methods_sst2.json   # markdown again from the JSON
    python bench/methods_sst2.py --model tiny-llama --steps 2 --max-test-examples 8 --max-eval-examples 8  # smoke

Target relations (the paper's): ULPT r=2 >= 95% of PT's accuracy with <= 2% of its parameters; ULPT r=64 >= PT;
DePT >= PT. The budget here is a few dozen steps on a 135M decoder; the paper trains T5/Bloomz for thousands.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import machine_info, markdown_table, write_results

from softprompt.api import make_prompt_config, new_prompt
from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models import DEFAULT_MODEL
from softprompt.models.hardware import dtype_name
from softprompt.prompts import DePTConfig
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.training.trainer import TrainConfig, train_prompt

METHODS = ("zero-shot", "pt", "dpt10", "dpt64", "dept", "residual", "prefix", "ulpt2", "ulpt64", "ulpt-projection")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="holds glue/SST-2 (default: the repo's quick-start slice)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name/path (tiny-llama etc. for a smoke run)")
    p.add_argument("--dtype", default="auto", help="frozen weights' dtype (auto: the hardware's fast one)")
    p.add_argument("--prompt-len", type=int, default=20, help="n for every method (prefix: slots per layer)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=30, help="validation (best-step selection) every N steps")
    p.add_argument("--max-eval-examples", type=int, default=100, help="seeded subset of the validation split")
    p.add_argument("--max-test-examples", type=int, default=200, help="the first N test (SST-2 dev) sentences")
    p.add_argument("--dept-prompt-len", type=int, help="DePT's m (default: 0.6·n, the paper's 60 of 100)")
    p.add_argument("--dept-rank", type=int, help="DePT's r (default: the rank that matches PT's parameter count)")
    p.add_argument("--projection-rank", type=int, default=2, help="r of the ULPT tune=projection row")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steady on a busy shared CPU)")
    p.add_argument("--template", help="the task's prompt template (default: the built-in sst2 task's own)")
    p.add_argument("--rerender", metavar="JSON", help="only rewrite that results file's markdown from its numbers")
    p.add_argument("--name", help="results file stem in bench/results/ (default: methods_sst2, _tiny for tiny-*)")
    args = p.parse_args()
    if args.name is None:
        args.name = "methods_sst2_tiny" if Path(args.model).name.startswith("tiny") else "methods_sst2"
    return args


def runs(args: argparse.Namespace, hidden: int, max_length: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """row key -> (label, method, config options); DePT's m and r are derived from n and the model's sizes. Ranks
    above the hidden size (only the tiny smoke models have D < 64) are capped at it, and the label says so."""
    n = args.prompt_len
    m = args.dept_prompt_len or max(1, round(0.6 * n))
    r = args.dept_rank or max(1, round((n - m) * hidden / (max_length + hidden)))
    dpt10, dpt64, ulpt2, ulpt64, proj = (min(k, hidden) for k in (10, 64, 2, 64, args.projection_rank))
    return {
        "pt": ("prompt tuning", "prompt_tuning", {"prompt_len": n}),
        "dpt10": (f"DPT r={dpt10}", "dpt", {"prompt_len": n, "rank": dpt10}),
        "dpt64": (f"DPT r={dpt64}", "dpt", {"prompt_len": n, "rank": dpt64}),
        "dept": (f"DePT m={m} r={r}", "dept", {"prompt_len": m, "rank": r}),
        "residual": ("residual", "residual", {"prompt_len": n}),
        "prefix": ("prefix (P-tuning v2)", "prefix", {"prompt_len": n}),
        "ulpt2": (f"ULPT r={ulpt2}", "ulpt", {"prompt_len": n, "rank": ulpt2}),
        "ulpt64": (f"ULPT r={ulpt64}", "ulpt", {"prompt_len": n, "rank": ulpt64}),
        "ulpt-projection": (
            f"ULPT r={proj} tune=projection",
            "ulpt",
            {"prompt_len": n, "rank": proj, "tune": "projection"},
        ),
    }


def step_times(log_path: Path) -> list[float]:
    """Seconds between consecutive per-step records of the run log (a step after an evaluation includes it; the
    median ignores those few)."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    elapsed = [r["elapsed_s"] for r in records if "loss" in r and "elapsed_s" in r]
    return [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's target relations, each stated with what was measured."""
    by_key = {r["key"]: r for r in rows}
    pt = by_key.get("pt")
    if pt is None:
        return []
    out = []
    if "ulpt2" in by_key:
        u = by_key["ulpt2"]
        acc, par = u["test_accuracy"] / pt["test_accuracy"], u["params"] / pt["params"]
        met = acc >= 0.95 and par <= 0.02
        verdict = "met" if met else "NOT met"
        out.append(f"{u['label']} >= 95% of PT's test accuracy with <= 2% of its parameters: **{verdict}** "
                   f"({100 * acc:.1f}% of the accuracy with {100 * par:.2f}% of the parameters).")  # fmt: skip
    for key in ("ulpt64", "dept"):
        if key in by_key:
            d = 100 * (by_key[key]["test_accuracy"] - pt["test_accuracy"])
            verdict = "met" if d >= 0 else "NOT met"
            out.append(f"{by_key[key]['label']} >= PT: **{verdict}** ({d:+.1f} points of test accuracy).")
    return out


def notes(settings: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Why these numbers may differ from the paper's, stated from this run's own settings and rows."""
    by_key = {r["key"]: r for r in rows}
    pt, n = by_key.get("pt"), settings["prompt_len"]
    tests = settings["max_test_examples"]
    out = [
        f"Budget: {settings['steps']} steps × batch {settings['batch_size']} = "
        f"{settings['steps'] * settings['batch_size']:,} training examples seen, one seed, each method at its "
        "default learning rate (no per-method sweep). The paper trains T5-base / Bloomz for thousands of steps "
        "with tuned learning rates; a 135M decoder after a few dozen steps is a snapshot of early training, where "
        "methods that move the prompt fastest lead, not those that end highest.",
    ]
    if pt is not None:
        p = pt["test_accuracy"]
        se = 100 * (p * (1 - p) / tests) ** 0.5
        out.append(f"Resolution: one test sentence is {100 / tests:.1f} points; at PT's {100 * p:.1f} the standard "
                   f"error of an accuracy on {tests} sentences is about {se:.1f} points, so gaps below ~{2 * se:.0f} "
                   "points are within noise.")  # fmt: skip
    if pt is not None and "ulpt2" in by_key:
        u = by_key["ulpt2"]
        hidden = pt["params"] // n
        reach = f"≤ 2% needs n ≥ {math.ceil(2 / (0.02 - 2 / hidden))}" if 2 / hidden < 0.02 else "no n reaches ≤ 2%"
        out.append(f"ULPT r=2's parameter share at n = {n}: {u['params']:,} = n·r + 2·D with D = {hidden}, of which "
                   f"the shared scale and shift are 2·D; PT has n·D = {pt['params']:,}, so the share is r/D + 2/n "
                   f"whatever the training, and {reach} (bench/sst2_quality.py uses n = 128 for "
                   "that; here n is kept short so every method's steps fit the time budget).")  # fmt: skip
    if "dept" in by_key:
        d = by_key["dept"]
        out.append(f"DePT ({d['label']}): the low-rank text update starts at zero and trains at its own small "
                   f"learning rate (lr_lowrank {DePTConfig.lr_lowrank:g}, the authors'), so after a short run it is "
                   f"likely still small and DePT close to prompt tuning with {d['options']['prompt_len']} instead of "
                   f"{n} vectors (not measured here); the paper's DePT results come from long training.")  # fmt: skip
    if "prefix" in by_key and pt is not None and "median_step_s" in by_key["prefix"]:
        ratio = by_key["prefix"]["median_step_s"] / pt["median_step_s"]
        out.append(f"Prefix tuning trains keys and values at every layer ({by_key['prefix']['params']:,} parameters "
                   f"at n = {n}) and adds no positions to the text, only to attention; its median step is "
                   f"{ratio:.2f}× PT's here.")  # fmt: skip
    return "\n\nWhy this may differ from the paper:\n\n" + "\n".join(f"- {line}" for line in out)


def report(
    args: argparse.Namespace, setup: str, rows: list[dict[str, Any]], done: bool, machine: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    pt = next((r for r in rows if r["key"] == "pt"), None)
    table = markdown_table(
        ["method", "trainable params", "% of PT params", "test accuracy", "validation accuracy", "best step",
         "median step (s)", "wall (s)"],
        [[r["label"], f"{r['params']:,}", f"{100 * r['params'] / pt['params']:.2f}%" if pt else "-",
          f"{100 * r['test_accuracy']:.1f}", f"{100 * r['validation_accuracy']:.1f}", r.get("best_step", "-"),
          f"{r['median_step_s']:.3f}" if "median_step_s" in r else "-", r["wall_s"]] for r in rows],
    )  # fmt: skip
    status = "" if done else "\n\n**Partial:** the run had not finished every row when this was written.\n"
    lines = verdicts(rows)
    targets = "\n\nTarget relations (the ULPT paper's):\n\n" + "\n".join(f"- {v}" for v in lines) if lines else ""
    markdown = setup + table + status + targets + notes(vars(args), rows)
    results = {"settings": vars(args), "setup": setup, "complete": done, "rows": rows, "targets": lines}
    return write_results(args.name, results, markdown, machine or machine_info())


def rerender(path: Path, template: str | None) -> None:
    """Rewrite a results file's markdown from its JSON (no model runs): the recorded command and machine are kept.
    For a JSON written before `setup` was stored, the setup paragraph is taken from the existing markdown."""
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**{**saved["settings"], "rerender": None})
    setup = saved.get("setup")
    if setup is None:
        md = path.with_suffix(".md").read_text()
        setup = md[md.index("\nSST-2") + 1 : md.index("| method |")]
    if saved["settings"].get("template") is None and template is not None:
        args.template = template
        setup = setup.replace("SST-2, ", f"SST-2 (template {template!r}, stated at --rerender: this run predates "
                              "the script recording it), ", 1)  # fmt: skip
    sys.argv = shlex.split(saved["command"])[1:]  # write_results stamps the command that made the numbers
    json_path, md_path = report(args, setup, saved["rows"], saved["complete"], saved["machine"])
    print(md_path.read_text())


def main() -> None:
    args = parse_args()
    if args.rerender:
        rerender(Path(args.rerender), args.template)
        return
    torch.set_num_threads(args.threads)
    if args.model.startswith("tiny-"):  # softprompt.models.tiny's tiny random models: a seconds-long smoke run
        from softprompt.models.tiny import tiny_backbone

        backbone = tiny_backbone(args.model.removeprefix("tiny-"))
    else:
        from softprompt.models import load_backbone

        backbone = load_backbone(args.model, dtype=args.dtype)
    task = get_task("sst2")
    if args.template:
        task = replace(task, template=args.template)
    args.template = task.template  # recorded: the default template has changed between versions
    train = task.load("train", args.data_dir)
    validation = subset(task.load("validation", args.data_dir), args.max_eval_examples, args.seed)
    test = task.load("test", args.data_dir)[: args.max_test_examples]
    scorer = Scorer(backbone, task)
    max_length = backbone.dims.max_length
    plan = runs(args, backbone.hidden_size, max_length)
    setup = (
        f"SST-2 (template {task.template!r}), {backbone.name} ({dtype_name(backbone.dtype)}), "
        f"{args.threads} torch thread(s); "
        f"every method: prompt length n = {args.prompt_len}, {args.steps} steps × batch {args.batch_size} "
        f"(same batches, seed {args.seed}), validation every {args.eval_every} steps on {len(validation)} carved "
        f"validation examples (best step kept), test = the first {len(test)} SST-2 dev sentences; "
        f"{len(train)} training examples from `{args.data_dir}`; each method at its default learning rate. "
        f"Load average at start: {[round(x, 2) for x in os.getloadavg()]}.\n\n"
    )
    print(setup, flush=True)

    rows: list[dict[str, Any]] = []
    for key in args.methods:
        started = time.perf_counter()
        if key == "zero-shot":
            rows.append({"key": key, "label": "zero-shot template", "params": 0,
                         "test_accuracy": evaluate(scorer, test, None)["accuracy"],
                         "validation_accuracy": evaluate(scorer, validation, None)["accuracy"],
                         "wall_s": round(time.perf_counter() - started, 1)})  # fmt: skip
        else:
            label, method, options = plan[key]
            prompt = new_prompt(make_prompt_config(method, **options), backbone, seed=args.seed)
            params = prompt.num_trainable_parameters()
            config = TrainConfig(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                                 seed=args.seed, log_every=1)  # fmt: skip
            with tempfile.TemporaryDirectory() as out:
                result = train_prompt(scorer, prompt, train, validation, config, out, test=test, progress=False)
                times = step_times(Path(out) / "log.jsonl")
            assert result.test is not None
            rows.append({"key": key, "label": label, "method": method, "options": options, "params": params,
                         "lr": config.resolved(prompt.config.default_lr).lr, "best_step": result.best_step,
                         "test_accuracy": result.test["accuracy"], "test_loss": result.test["loss"],
                         "validation_accuracy": result.best_validation["accuracy"],
                         "median_step_s": statistics.median(times) if times else float("nan"),
                         "step_times_s": [round(t, 4) for t in times],
                         "wall_s": round(time.perf_counter() - started, 1)})  # fmt: skip
        print({k: v for k, v in rows[-1].items() if k != "step_times_s"}, flush=True)
        json_path, md_path = report(args, setup, rows, done=False)
    json_path, md_path = report(args, setup, rows, done=True)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
