"""Gradient-free prompt search with CMA-ES over any `PromptEvaluator`: BBT, BBTv2 and gradient-free ULPT.

One "model call" is one candidate prompt scored on the whole few-shot train set (the papers' budget unit); a
generation asks the ES for `popsize` candidates and scores them all in one `label_scores` call.

* bbt:   one ES over z ∈ R^d; prompt = P₀ + A·z.
* bbtv2: one ES per layer, divide and conquer (the authors' loop): for budget // (popsize·L) rounds, each layer in
         turn gets one generation, scored with the other layers at their current best; then that layer's prompt
         becomes A_l · xbest_l.
* ulpt:  one ES over ULPT's z (n·r numbers; with `search_scale_shift` also its scale and shift vectors).

Every `eval_every` calls the current solution (the best-on-train point of each ES) is scored on dev and the best
one is kept (ties broken by lower dev loss); it is saved as a normal `PromptArtifact`, so `softprompt eval` and
`predict` load it unchanged. Output folder: prompt.safetensors + prompt.json, log.jsonl, checkpoint/.

Exact resume without pickle: pycma is deterministic given its random stream, so a checkpoint (written every
generation, safetensors + JSON) stores the fitness values told so far; resuming rebuilds each ES and replays
ask()/tell(stored fitness) in the original order with no model calls, then checks the replayed ES means against
the stored ones bit for bit. Each ES draws from its own seeded numpy Generator (pycma's `randn` option), never from
numpy's global RNG, so nothing else in the process can disturb the stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from softprompt.artifact import PromptArtifact
from softprompt.blackbox.cmaes import new_es, single_threaded_numpy_blas
from softprompt.blackbox.evaluator import PromptEvaluator
from softprompt.blackbox.spaces import create_prompt, make_space
from softprompt.prompts import build_prompt, config_from_dict
from softprompt.prompts.base import SoftPrompt
from softprompt.prompts.bbt import BBTv2
from softprompt.scoring import classification_loss
from softprompt.tasks.base import Example, Task
from softprompt.tasks.metrics import compute_metrics
from softprompt.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from softprompt.training.trainer import RunLog

METHODS = ("bbt", "bbtv2", "ulpt")
# (sigma, alpha) defaults: BBT's bbt.py defaults; the BBTv2 command in the authors' README; ULPT: z ~ N(0, 1) scale.
DEFAULTS = {"bbt": (1.0, 1.0), "bbtv2": (0.2, 0.2), "ulpt": (1.0, 1.0)}


@dataclass
class BlackBoxConfig:
    method: str = "bbt"  # bbt | bbtv2 | ulpt
    dim: int = 500  # d: searched dimension (per layer for bbtv2)
    prompt_len: int = 50  # n
    rank: int = 2  # ulpt: r (searched numbers: n·r)
    search_scale_shift: bool = False  # ulpt: also search scale and shift (+2·D numbers)
    popsize: int = 20
    sigma: float | None = None  # CMA-ES initial step size (default per method)
    alpha: float | None = None  # projection std factor (default per method)
    budget: int = 8000  # model calls on the train set
    loss: str = "ce"  # ce | hinge | neg_accuracy
    eval_every: int = 100  # calls between dev evaluations
    seed: int = 0
    bounds: float | None = None  # box [-b, b] on the searched vector; None: unbounded (BBTv2 command)
    init: str = "vocab"  # P₀: vocab (token embeddings; needs an evaluator with vocab_prompt) | normal

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown black-box method {self.method!r}; expected one of {METHODS}")
        if self.loss not in ("ce", "hinge", "neg_accuracy"):
            raise ValueError(f"unknown loss {self.loss!r}; expected ce, hinge or neg_accuracy")
        if self.init not in ("vocab", "normal"):
            raise ValueError(f"unknown init {self.init!r}; expected vocab or normal")
        for name in ("dim", "prompt_len", "rank", "popsize", "budget", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.popsize < 2:
            raise ValueError("CMA-ES needs popsize >= 2")
        sigma, alpha = DEFAULTS[self.method]
        self.sigma = sigma if self.sigma is None else self.sigma
        self.alpha = alpha if self.alpha is None else self.alpha
        if self.sigma <= 0 or self.alpha <= 0:
            raise ValueError(f"sigma and alpha must be positive, got {self.sigma}, {self.alpha}")


@dataclass
class SearchResult:
    out_dir: Path
    prompt: SoftPrompt  # the best-dev prompt (what the artifact holds)
    best_validation: dict[str, float]
    best_calls: int
    calls: int
    test: dict[str, float] | None
    timing: dict[str, float] = field(default_factory=dict)


# --- CMA-ES schedule --------------------------------------------------------------------------------------------
def schedule(config: BlackBoxConfig, num_es: int) -> list[int]:
    """Which ES runs each generation: BBT/ULPT one ES throughout; BBTv2 round-robin over the layers."""
    if config.method == "bbtv2":
        rounds = config.budget // (config.popsize * num_es)
        if rounds == 0:
            raise ValueError(
                f"budget {config.budget} is below one BBTv2 round (popsize·layers = {config.popsize * num_es})"
            )
        return [layer for _ in range(rounds) for layer in range(num_es)]
    if config.budget < config.popsize:
        raise ValueError(f"budget {config.budget} is below one generation (popsize {config.popsize})")
    return [0] * (config.budget // config.popsize)


# --- scoring -------------------------------------------------------------------------------------------------------
def score_examples(
    evaluator: PromptEvaluator,
    task: Task,
    examples: Sequence[Example],
    prompt: torch.Tensor,
    deep: torch.Tensor | None,
    batch_size: int = 32,
) -> dict[str, float]:
    """The task's metrics and loss of one prompt ((1, n, D), deep (L, 1, n, D)), like `evaluation.evaluate`."""
    if not examples:
        raise ValueError("no examples to evaluate")
    order = sorted(range(len(examples)), key=lambda i: len(task.render(examples[i])))  # less padding
    probs = torch.empty(len(examples), len(task.labels))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        scores = evaluator.label_scores([examples[i] for i in idx], prompt, deep)[0]
        probs[idx] = torch.softmax(scores.float(), dim=-1).cpu()
    labels = torch.tensor([ex.label for ex in examples])
    metrics = compute_metrics(task.metrics, probs.argmax(-1).tolist(), labels.tolist())
    loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {**metrics, "loss": loss, "num_examples": len(examples)}


def _better(metrics: dict[str, float], best: dict[str, float] | None, metric: str) -> bool:
    if best is None:
        return True
    return (metrics[metric], -metrics["loss"]) > (best[metric], -best["loss"])


# --- the search ----------------------------------------------------------------------------------------------------
def run_search(
    evaluator: PromptEvaluator,
    task: Task,
    train: Sequence[Example],
    dev: Sequence[Example],
    config: BlackBoxConfig,
    out_dir: str | Path,
    *,
    test: Sequence[Example] | None = None,
    resume: bool = False,
    progress: bool = True,
    extra_metadata: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search a prompt for `task` with CMA-ES and save the best-dev one as an artifact in `out_dir`.

    `callback(info)` runs after every generation's checkpoint (info: generation, calls, best train loss).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"
    if task.kind != "classification":
        raise ValueError("black-box search needs a classification task")
    if not train or not dev:
        raise ValueError("black-box search needs train and dev examples")
    metric = task.primary_metric
    model = evaluator.describe()
    labels = torch.tensor([ex.label for ex in train])
    timing = dict.fromkeys(("ask_s", "tell_s", "project_s", "score_s", "dev_s", "replay_s"), 0.0)

    @contextmanager
    def timed(key: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timing[key] += time.perf_counter() - start

    # 1. the prompt: fresh (calibrated on the model) or as checkpointed, with the search history to replay
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {}
    if resume:
        if not has_checkpoint(ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
        tensors, state = load_checkpoint(ckpt_dir)
        if state["search_config"] != json.loads(json.dumps(asdict(config))):
            raise ValueError(f"--resume: settings differ from the checkpoint's: {state['search_config']}")
        if state["model_fingerprint"] != model.get("fingerprint"):
            raise ValueError(f"--resume: the checkpoint was made on model {state['model_fingerprint']}, "
                             f"this is {model.get('fingerprint')}")  # fmt: skip
        prompt = build_prompt(config_from_dict(state["prompt_config"]), evaluator.hidden_size)
        prompt.load_state_tensors(_strip(tensors, "init."))
    elif has_checkpoint(ckpt_dir):
        raise FileExistsError(f"{out_dir} already holds a search; pass --resume to continue it or choose another --out")
    else:
        prompt = create_prompt(evaluator, config, train)
    init_state = _snapshot(prompt)
    if isinstance(prompt, BBTv2):
        # all L projections at once only when small (tiny models); SmolLM2 would need 1.7 GB
        prompt.cache_projections = prompt.config.num_layers * prompt.config.dim * prompt.base.numel() <= 2**27
    # ULPT's shift step size; stored, so a resumed search rebuilds exactly the same ES
    shift_std = state["shift_std"] if resume else evaluator.embedding_std() if config.method == "ulpt" else 0.0
    space = make_space(prompt, config, shift_std)
    plan = schedule(config, space.num_es)
    x0s = [space.x0(i) for i in range(space.num_es)]
    stds = [space.stds(i) for i in range(space.num_es)]
    es_list = [
        new_es(x0s[i], config.sigma, config.popsize, config.seed, i, plan.count(i), config.bounds, stds[i])
        for i in range(space.num_es)
    ]

    generation, calls, dev_calls, last_eval = 0, 0, 0, 0
    history_es: list[int] = []
    history_fitness: list[list[float]] = []
    best_dev: dict[str, float] | None = None
    best_calls, best_state = 0, init_state
    dev_history: list[dict[str, Any]] = []
    if resume:
        history_es = tensors["history.es"].tolist()
        history_fitness = tensors["history.fitness"].tolist()
        generation, calls, dev_calls, last_eval = (state[k] for k in ("generation", "calls", "dev_calls", "last_eval"))
        best_dev, best_calls, dev_history = state["best_dev"], state["best_calls"], state["dev_history"]
        best_state = _strip(tensors, "best.") or init_state

    with single_threaded_numpy_blas(), torch.no_grad():
        # 2. replay: the ES states after the stored generations, without model calls
        with timed("replay_s"):
            for es_index, fitness in zip(history_es, history_fitness, strict=True):
                es = es_list[es_index]
                if space.num_es == 1:
                    es.stop()  # called before every generation in the loop below: replay the same calls
                es.tell(es.ask(), fitness)
                space.commit(es_index, es.result.xbest)
        if resume:
            _check_replay(es_list, tensors["es.mean"], state)

        log = RunLog(out_dir)
        total_calls = len(plan) * config.popsize
        bar = tqdm(total=total_calls, initial=calls, disable=not progress, unit="call", desc=f"{config.method} search")

        def evaluate_dev() -> None:
            nonlocal best_dev, best_calls, best_state, dev_calls, last_eval
            with timed("dev_s"):
                metrics = score_examples(evaluator, task, dev, *space.current())
            dev_calls, last_eval = dev_calls + 1, calls
            dev_history.append({"calls": calls, **metrics})
            log.write({"step": calls, "split": "validation", **metrics})
            if _better(metrics, best_dev, metric):
                best_dev, best_calls, best_state = metrics, calls, _snapshot(prompt)
                save_artifact(prompt, {"validation": metrics, "best_calls": calls, "calls": calls})

        def save_artifact(module: SoftPrompt, metrics: dict[str, Any]) -> None:
            extra = {"search_config": asdict(config), **(extra_metadata or {})}
            PromptArtifact(module, model, task, metrics, extra).save_pretrained(out_dir)

        def checkpoint() -> None:
            saved = {
                **{f"init.{k}": v for k, v in init_state.items()},
                **({f"best.{k}": v for k, v in best_state.items()} if best_dev is not None else {}),
                "history.es": torch.tensor(history_es, dtype=torch.int64),
                "history.fitness": torch.tensor(history_fitness, dtype=torch.float64).view(-1, config.popsize),
                "es.mean": torch.from_numpy(np.stack([es.mean for es in es_list])),
            }
            record = {
                "search_config": asdict(config),
                "prompt_config": prompt.config.to_dict(),
                "model_fingerprint": model.get("fingerprint"),
                "shift_std": shift_std,
                "generation": generation,
                "calls": calls,
                "dev_calls": dev_calls,
                "last_eval": last_eval,
                "best_dev": best_dev,
                "best_calls": best_calls,
                "dev_history": dev_history,
                "versions": _versions(),
            }
            save_checkpoint(ckpt_dir, generation, saved, record)

        if not resume:
            checkpoint()  # P₀ and the calibrated stds are fixed from here on, even if the first generation is killed
        best_train = min((min(f) for f in history_fitness), default=float("inf"))

        # 3. the search loop
        while generation < len(plan):
            es_index = plan[generation]
            es = es_list[es_index]
            if space.num_es == 1 and es.stop():
                break  # pycma's own termination (e.g. a flat fitness landscape); BBTv2 follows the fixed schedule
            with timed("ask_s"):
                solutions = es.ask()
            with timed("project_s"):
                prompts, deep = space.candidates(es_index, torch.from_numpy(np.stack(solutions)).float())
            with timed("score_s"):
                # BBTv2 varies only layer es_index: the layers below it are the same for every candidate
                shared = es_index if config.method == "bbtv2" else 0
                scores = evaluator.label_scores(train, prompts, deep, shared_layers=shared)  # (P, K, C)
                losses = classification_loss(scores, labels.expand(len(solutions), -1), config.loss).mean(-1)
                fitness = [float(v) for v in losses.double()]
            with timed("tell_s"):
                es.tell(solutions, fitness)
                space.commit(es_index, es.result.xbest)

            generation, calls = generation + 1, calls + len(solutions)
            history_es.append(es_index)
            history_fitness.append(fitness)
            best_train = min(best_train, *fitness)
            log.write({"step": calls, "es": es_index, "loss_min": min(fitness), "loss_mean": float(np.mean(fitness))})
            if calls // config.eval_every > last_eval // config.eval_every or generation == len(plan):
                evaluate_dev()
            checkpoint()
            bar.update(len(solutions))
            bar.set_postfix(
                loss=f"{best_train:.4f}", **({f"dev_{metric}": f"{best_dev[metric]:.4f}"} if best_dev else {})
            )
            if callback is not None:
                callback({"generation": generation, "calls": calls, "best_train_loss": best_train})
        if last_eval != calls or best_dev is None:  # stopped early: the final solution still gets its dev score
            evaluate_dev()
            checkpoint()
        bar.close()

        # 4. the best-dev prompt: test score and the final artifact
        prompt.load_state_tensors(best_state)
        test_metrics = None
        if test:
            deep = prompt.deep_prompts()
            current = (prompt().unsqueeze(0), None if deep is None else deep.unsqueeze(1))
            test_metrics = score_examples(evaluator, task, test, *current)
            log.write({"step": calls, "split": "test", **test_metrics})
        metrics = {"validation": best_dev, "best_calls": best_calls, "calls": calls, "dev_evaluations": dev_calls,
                   "train_loss": best_train, **({"test": test_metrics} if test_metrics else {})}  # fmt: skip
        save_artifact(prompt, metrics)

    searched = timing["ask_s"] + timing["tell_s"] + timing["project_s"]
    timing["overhead_share"] = searched / max(searched + timing["score_s"], 1e-12)
    log.write({"step": calls, "timing": timing})
    return SearchResult(out_dir, prompt, best_dev, best_calls, calls, test_metrics, timing)


def _snapshot(prompt: SoftPrompt) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in prompt.state_tensors().items()}  # state_tensors() shares the live storage


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("cma", "numpy")}


def _check_replay(es_list: list[Any], stored: torch.Tensor, state: dict[str, Any]) -> None:
    replayed = np.stack([es.mean for es in es_list])
    if not np.array_equal(replayed, stored.numpy()):
        raise RuntimeError(
            "replaying the stored fitness history did not reproduce the CMA-ES state exactly; the checkpoint was "
            f"written with {state.get('versions')}, this is {_versions()}"
        )
