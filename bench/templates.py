"""Which template should each built-in task use? Zero-shot validation scores of a few plausible templates.

For every task, each candidate template (the one the task shipped with first, a plainer one, and one or two others)
is scored zero-shot on the task's VALIDATION split (never test) with the library's own evaluation
(`evaluate(Scorer(backbone, task), examples, prompt=None)`), the task's own verbalizer, and the same seeded subset of
examples for every candidate. The best by the task's primary metric (ties: the earlier candidate) is what
`softprompt.tasks.builtin` ships as the default when it beats the original template by more than one point
(`default_candidate`); `tests/test_templates_bench.py` holds the two in step. The validation subsets are small on a
busy 2-core CPU (300 or 100 examples, given per task), so a one-point win is within noise: the rule is deliberately
conservative, and a task not in the result file keeps its original template.

    python bench/templates.py --data-dir ../shared/data                       # sst2 in the committed table
    python bench/templates.py --data-dir ../shared/data --max-examples 100 --keep --tasks cola cb ...  # the rest
    python bench/templates.py --model tiny --max-examples 8 --tasks sst2 rte  # seconds-long smoke run

Results are written after every task, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, command_line, load_model, machine_info, markdown_table, write_results

from softprompt.cli.common import subset
from softprompt.evaluation import evaluate
from softprompt.models.hardware import dtype_name
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import DBPEDIA, get_task

_DBPEDIA_WORDS = [w.strip() for w in DBPEDIA.values()]
_DBPEDIA_CHOICES = ", ".join(_DBPEDIA_WORDS[:-1]) + f", or {_DBPEDIA_WORDS[-1]}"
_THREE_WAY = {
    "original": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? "
    "Answer (Yes, Maybe, or No):",
    "plain": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis?\nAnswer:",
    "question": "{text}\nQuestion: {text_pair} Yes, No, or Maybe?\nAnswer:",
}
_SENTIMENT = {
    "original": "Review: {text}\nSentiment (positive or negative):",
    "plain": "Review: {text}\nSentiment:",
    "statement": "{text}\nThe sentiment of this review is",
    "question": "Review: {text}\nIs this review positive or negative?\nAnswer:",
}

# task -> candidate name -> template. "original" is the template the task shipped with before this comparison.
CANDIDATES: dict[str, dict[str, str]] = {
    "sst2": _SENTIMENT,
    "cola": {
        "original": "Sentence: {text}\nIs this sentence grammatically correct? Answer (yes or no):",
        "plain": "Sentence: {text}\nIs this sentence grammatically correct?\nAnswer:",
        "question": "{text}\nQuestion: Is this a grammatical English sentence? Answer (yes or no):",
        "sense": "Sentence: {text}\nDoes this sentence make sense? Answer (yes or no):",
    },
    "cb": {
        "original": "{text}\nQuestion: {text_pair} True, false, or neither? Answer (yes, no, or maybe):",
        "plain": "{text}\nQuestion: {text_pair} True, false, or neither?\nAnswer:",
        "premise": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? "
        "Answer (yes, no, or maybe):",
    },
    "mrpc": {
        "original": "Sentence 1: {text}\nSentence 2: {text_pair}\nDo both sentences mean the same thing? "
        "Answer (yes or no):",
        "plain": "Sentence 1: {text}\nSentence 2: {text_pair}\nDo both sentences mean the same thing?\nAnswer:",
        "paraphrase": "{text}\n{text_pair}\nAre these two sentences paraphrases of each other? Answer (yes or no):",
    },
    "rte": {
        "original": "{text}\nQuestion: {text_pair} True or false? Answer (yes or no):",
        "plain": "{text}\nQuestion: {text_pair} True or false?\nAnswer:",
        "premise": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? "
        "Answer (yes or no):",
    },
    "qnli": {
        "original": "Question: {text}\nSentence: {text_pair}\nDoes the sentence answer the question? "
        "Answer (yes or no):",
        "plain": "Question: {text}\nSentence: {text_pair}\nDoes the sentence answer the question?\nAnswer:",
        "context": "{text_pair}\nQuestion: {text}\nDoes the text above answer the question? Answer (yes or no):",
    },
    "boolq": {
        "original": "{text}\nQuestion: {text_pair}?\nAnswer (yes or no):",
        "plain": "{text}\nQuestion: {text_pair}?\nAnswer:",
        "passage": "Passage: {text}\nQuestion: {text_pair}?\nAnswer (yes or no):",
    },
    "snli": _THREE_WAY,
    "mnli": _THREE_WAY,
    "agnews": {
        "original": "Article: {text}\nTopic (World, Sports, Business, or Tech):",
        "plain": "Article: {text}\nTopic:",
        "news": "News: {text}\nIs this news about World, Sports, Business, or Tech?\nAnswer:",
    },
    "dbpedia": {
        "original": "Article: {text}\nCategory (" + _DBPEDIA_CHOICES + "):",
        "plain": "Article: {text}\nCategory:",
        "about": "{text}\nQuestion: What is this article about?\nAnswer:",
    },
    "yelp": _SENTIMENT,
}
ORDER = ("sst2", "cola", "cb", "mrpc", "rte", "qnli", "boolq", "snli", "mnli", "agnews", "dbpedia", "yelp")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SOFTPROMPT_DATA_DIR", "../shared/data"))
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name/path, or 'tiny' for a smoke run")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="frozen weights' dtype (auto: bfloat16 only where the hardware runs it natively)",
    )
    p.add_argument("--max-examples", type=int, default=300, help="seeded subset of each validation split")
    p.add_argument("--tasks", nargs="+", default=list(ORDER), choices=ORDER)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation subset (and of the task's carves)")
    p.add_argument("--render-only", action="store_true", help="rewrite the tables from the result file; no model")
    p.add_argument("--keep", action="store_true", help="keep the tasks already in the result file that this run skips")
    return p.parse_args()


def best_candidate(scores: dict[str, dict[str, float]], metric: str) -> str:
    """The candidate with the highest `metric`; on a tie the earlier one (so the original wins ties)."""
    return max(scores, key=lambda name: (scores[name][metric], -list(scores).index(name)))


MIN_WIN = 0.01  # a default template changes only for a win of more than one point of the primary metric


def default_candidate(scores: dict[str, dict[str, float]], metric: str) -> str:
    """What `softprompt.tasks.builtin` ships: the best candidate if it beats the original by more than MIN_WIN."""
    best = best_candidate(scores, metric)
    return best if scores[best][metric] - scores["original"][metric] > MIN_WIN else "original"


def score_task(backbone, name: str, args: argparse.Namespace) -> dict:
    task = get_task(name, seed=args.seed)
    full = task.load("validation", args.data_dir)
    examples = subset(full, args.max_examples, args.seed)
    scores: dict[str, dict[str, float]] = {}
    for label, template in CANDIDATES[name].items():
        started = time.perf_counter()
        metrics = evaluate(Scorer(backbone, dataclasses.replace(task, template=template)), examples, None)
        scores[label] = {**metrics, "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name} {label}: {scores[label]}", flush=True)
    return {
        "command": command_line(),  # runs can be merged with --keep: each task says how it was measured
        "metric": task.primary_metric,
        "validation_size": len(full),
        "examples": len(examples),
        "verbalizer": dict(zip(task.labels, task.verbalizer, strict=True)),
        "templates": dict(CANDIDATES[name]),
        "scores": scores,
        "best": best_candidate(scores, task.primary_metric),
    }


def markdown(results: dict, header: str) -> str:
    parts = [header]
    for name, r in results.items():
        metric, extra = r["metric"], [m for m in ("accuracy",) if m != r["metric"]]
        chosen = default_candidate(r["scores"], metric)
        rows = [
            [f"**{label}**" if label == chosen else label, repr(r["templates"][label]).replace("|", "\\|"),
             *(f"{s[m]:.4f}" for m in (metric, *extra)), f"{s['loss']:.4f}", s["seconds"]]
            for label, s in r["scores"].items()
        ]  # fmt: skip
        headers = ["candidate", "template", f"{metric} (selects)", *extra, "loss", "time (s)"]
        size = f"{r['examples']} of {r['validation_size']} validation examples"
        if "command" in r:
            size += f" (`{r['command']}`)"
        parts.append(f"## {name}\n\n{size}; verbalizer {r['verbalizer']}; best: {r['best']}; default: **{chosen}**.\n\n"
                     + markdown_table(headers, rows))  # fmt: skip
    return "\n\n".join(parts)


def header(model: str, dtype: str, seed: int) -> str:
    return (
        f"Zero-shot VALIDATION scores of candidate templates per built-in task: {model} ({dtype}), no prompt, "
        f"`softprompt.evaluation.evaluate`, each task's own verbalizer; a seeded (seed {seed}) subset of validation "
        "examples per task (the size and the command are given per task), the same for every candidate. The best "
        "by the task's primary metric (ties go to the earlier candidate) becomes the default template in "
        "`softprompt/tasks/builtin.py` (bold) when it beats `original`, the template each task had before this "
        "comparison, by more than one point; else the original stays. tests/test_templates_bench.py holds the two "
        "in step. Tasks not listed were not measured (a busy shared 2-core CPU) and keep their original template."
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = "templates_tiny" if args.model == "tiny" else "templates"
    if args.render_only:  # the tables again from the result file (after a change to `markdown`), nothing measured
        earlier = json.loads((RESULTS_DIR / f"{out}.json").read_text())
        tasks = {name: {"command": earlier["command"], **r} for name, r in earlier["tasks"].items()}
        settings = earlier["settings"]
        text = markdown(tasks, header(settings["model"], settings.get("resolved_dtype", "float32"), settings["seed"]))
        write_results(out, {"settings": settings, "tasks": tasks}, text, earlier["machine"])
        return
    backbone = load_model(args.model, args.dtype)
    dtype = dtype_name(backbone.dtype)
    results: dict[str, dict] = {}
    previous = RESULTS_DIR / f"{out}.json"
    if args.keep and previous.is_file():  # earlier runs' tasks, in the usual order, unless this run redoes them
        earlier = json.loads(previous.read_text())
        kept = {name: {"command": earlier["command"], **r} for name, r in earlier["tasks"].items()}
        results = {name: kept[name] for name in ORDER if name in kept and name not in args.tasks}
    for name in args.tasks:
        results[name] = score_task(backbone, name, args)
        results = {task: results[task] for task in ORDER if task in results}
        settings = {**vars(args), "model": backbone.name, "resolved_dtype": dtype, "completed": list(results)}
        text = markdown(results, header(backbone.name, dtype, args.seed))
        write_results(out, {"settings": settings, "tasks": results}, text, machine_info())
        print(f"{name}: best {results[name]['best']}", flush=True)


if __name__ == "__main__":
    main()
