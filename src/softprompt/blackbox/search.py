"""Gradient-free prompt search with CMA-ES over any `PromptEvaluator`: BBT, BBTv2 and gradient-free ULPT.

One "model call" is one candidate prompt scored on the whole few-shot train set (the papers' budget unit); a
generation asks the ES for `popsize` candidates and scores them all in one `label_scores` call.

* bbt:   one ES over z ∈ R^d; prompt = P₀ + A·z.
* bbtv2: one ES per layer, divide and conquer (the authors' loop): for budget // (popsize·L) rounds, each layer in
         turn gets one generation, scored with the other layers at their current best; then that layer's prompt
         becomes A_l · xbest_l.
* ulpt:  one ES over ULPT's z (n·r numbers; with `search_scale_shift` also its scale and shift vectors).

Every `eval_every` calls the current solution (the best-on-train point of each ES) is scored on dev with the same
`evaluation.evaluate` gradient training uses, and the best one is kept (ties broken by lower dev loss) in the same
`RunFolder` as a normal `PromptArtifact`, so `softprompt eval` and `predict` load it unchanged. The prompt is created
and calibrated by its own `initialize`/`calibrate` hooks, exactly as for gradient training.

Exact resume without pickle: pycma is deterministic given its random stream, so a checkpoint (written every
generation, safetensors + JSON) stores the fitness values told so far; resuming rebuilds each ES and replays
ask()/tell(stored fitness) in the original order with no model calls, then checks the replayed ES means against
the stored ones bit for bit. Each ES draws from its own seeded numpy Generator (pycma's `randn` option), never from
numpy's global RNG, so nothing else in the process can disturb the stream.
"""

from __future__ import annotations

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
from softprompt.blackbox.spaces import create_prompt, make_space
from softprompt.evaluation import evaluate
from softprompt.evaluator import PromptEvaluator
from softprompt.prompts import build_prompt, config_from_dict
from softprompt.prompts.base import PromptConfig, SoftPrompt
from softprompt.prompts.bbt import BBTConfig, BBTv2
from softprompt.runs import RunFolder, data_fingerprint
from softprompt.scoring import classification_loss
from softprompt.tasks.base import Example

METHODS = ("bbt", "bbtv2", "ulpt")
LOSSES = ("ce", "hinge", "neg_accuracy")


@dataclass
class SearchConfig:
    """CMA-ES settings around the searched prompt's own config (BBTConfig, BBTv2Config or ULPTConfig)."""

    prompt: PromptConfig = field(default_factory=BBTConfig)
    popsize: int = 20
    sigma: float | None = None  # initial step size; None: the prompt's own sigma (BBT/BBTv2 scale A for it), else 1
    budget: int = 8000  # model calls on the train set
    loss: str = "ce"  # ce | hinge | neg_accuracy
    eval_every: int = 100  # calls between dev evaluations
    seed: int = 0  # CMA-ES streams and the prompt's initialisation
    bounds: float | None = None  # box [-b, b] on the searched vector; None: unbounded (BBTv2 command)

    def __post_init__(self) -> None:
        if self.prompt.method not in METHODS:
            raise ValueError(f"black-box search covers {', '.join(METHODS)}, not {self.prompt.method!r}")
        for name in ("popsize", "budget", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.popsize < 2:
            raise ValueError(f"popsize must be at least 2, got {self.popsize}")
        own = getattr(self.prompt, "sigma", None)
        if self.sigma is not None and own is not None and self.sigma != own:
            raise ValueError(f"{self.prompt.method}: the step size is the prompt config's sigma ({own}), which also "
                             "scales the projection; set it there")  # fmt: skip
        if not (np.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"sigma must be positive, got {self.step_size}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.bounds is not None and not (np.isfinite(self.bounds) and self.bounds > 0):
            raise ValueError(f"bounds must be positive, got {self.bounds}")

    @property
    def method(self) -> str:
        return self.prompt.method

    @property
    def step_size(self) -> float:
        own = getattr(self.prompt, "sigma", None)
        return own if own is not None else (self.sigma if self.sigma is not None else 1.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["prompt"] = self.prompt.to_dict()
        return out

    def settings(self) -> dict[str, Any]:
        """What the user chose (what a resumed search must share): no model-calibrated values."""
        return {**self.to_dict(), "prompt": self.prompt.settings()}

    @classmethod
    def from_flat(cls, method: str, search_scale_shift: bool = False, **options: Any) -> SearchConfig:
        """One flat set of options, as the command line has them, split between the method's config and the
        search's: `SearchConfig.from_flat("bbt", dim=500, prompt_len=50, popsize=20, budget=8000)`. The projection
        seed defaults to the search seed; ULPT searches scale and shift only with `search_scale_shift`."""
        from softprompt.prompts import REGISTRY

        if method not in METHODS:
            raise ValueError(f"black-box search covers {', '.join(METHODS)}, not {method!r}")
        config_class = REGISTRY[method][0]
        prompt_fields = set(config_class.__dataclass_fields__)
        search = {k: v for k, v in options.items() if k in cls.__dataclass_fields__ and k != "sigma"}
        prompt = {k: v for k, v in options.items() if k in prompt_fields}
        unknown = set(options) - set(search) - set(prompt) - {"sigma"}
        if unknown:
            raise ValueError(f"{method} search does not take {sorted(unknown)}")
        prompt.setdefault("projection_seed", search.get("seed", 0))
        if "sigma" in options and "sigma" not in prompt_fields:
            search["sigma"] = options["sigma"]
        if method == "ulpt":
            prompt.setdefault("use_scale", search_scale_shift)
            prompt.setdefault("use_shift", search_scale_shift)
        return cls(prompt=config_class(**prompt), **search)


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
def schedule(config: SearchConfig, num_es: int) -> list[int]:
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


@dataclass
class _History:
    """What resuming replays: which ES ran each generation and the fitness values it was told."""

    es: list[int] = field(default_factory=list)
    fitness: list[list[float]] = field(default_factory=list)
    calls: int = 0
    dev_calls: int = 0
    last_eval: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # the prompt tensors of the best dev score

    @property
    def generation(self) -> int:
        return len(self.es)


# --- the search ----------------------------------------------------------------------------------------------------
def run_search(
    evaluator: PromptEvaluator,
    train: Sequence[Example],
    dev: Sequence[Example],
    config: SearchConfig,
    out_dir: str | Path,
    *,
    test: Sequence[Example] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_metadata: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search a prompt for the evaluator's task with CMA-ES and save the best-dev one as an artifact in `out_dir`.

    `callback(info)` runs after every generation's checkpoint (info: generation, calls, best train loss).
    """
    task = evaluator.task
    if task.kind != "classification":
        raise ValueError("black-box search needs a classification task")
    if not train or not dev:
        raise ValueError("black-box search needs train and dev examples")
    model = evaluator.describe()
    identity = {"search_config": config.settings(), "model_fingerprint": model.get("fingerprint"),
                "data": data_fingerprint(train, dev)}  # fmt: skip
    run = RunFolder(Path(out_dir), identity, resume=resume, overwrite=overwrite)
    metric = task.primary_metric
    labels = torch.tensor([ex.label for ex in train])
    timing = dict.fromkeys(("ask_s", "tell_s", "project_s", "score_s", "dev_s", "replay_s"), 0.0)

    @contextmanager
    def timed(key: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timing[key] += time.perf_counter() - start

    # 1. the prompt: fresh (initialised and calibrated on the model) or as checkpointed, with the history to replay
    history = _History()
    if resume:
        tensors, state = run.restore()
        prompt = build_prompt(config_from_dict(state["prompt_config"]), evaluator.hidden_size)
        prompt.load_state_tensors(_strip(tensors, "init."))
        history = _History(tensors["history.es"].tolist(), tensors["history.fitness"].tolist(),
                           state["calls"], state["dev_calls"], state["last_eval"])  # fmt: skip
        shift_std = state["shift_std"]
    else:
        prompt = create_prompt(evaluator, config.prompt, train, config.seed)
        shift_std = evaluator.embedding_std() if config.method == "ulpt" else 0.0  # ULPT shift step multiplier
    init_state = _snapshot(prompt)
    history.best_state = (_strip(tensors, "best.") if resume else {}) or _snapshot(prompt)
    if isinstance(prompt, BBTv2):
        # all L projections at once only when small (tiny models); SmolLM2 would need 1.7 GB
        prompt.cache_projections = prompt.config.num_layers * prompt.config.dim * prompt.base.numel() <= 2**27
    space = make_space(prompt, shift_std)
    plan = schedule(config, space.num_es)
    es_list = [
        new_es(space.x0(i), config.step_size, config.popsize, config.seed, i, plan.count(i), config.bounds,
               space.stds(i))
        for i in range(space.num_es)
    ]  # fmt: skip

    def save_best(metrics: dict[str, float]) -> None:
        extra = {"search_config": config.to_dict(), **(extra_metadata or {})}
        calls = history.calls
        artifact = PromptArtifact(prompt, model, task, {"validation": metrics, "best_calls": calls, "calls": calls},
                                  extra)  # fmt: skip
        if run.validation(calls, metrics, metric, artifact):
            history.best_state = _snapshot(prompt)

    def checkpoint() -> None:
        saved = {
            **{f"init.{k}": v for k, v in init_state.items()},
            **{f"best.{k}": v for k, v in history.best_state.items()},
            "history.es": torch.tensor(history.es, dtype=torch.int64),
            "history.fitness": torch.tensor(history.fitness, dtype=torch.float64).view(-1, config.popsize),
            "es.mean": torch.from_numpy(np.stack([es.mean for es in es_list])),
        }
        record = {"prompt_config": prompt.config.to_dict(), "shift_std": shift_std, "calls": history.calls,
                  "dev_calls": history.dev_calls, "last_eval": history.last_eval, "versions": _versions()}  # fmt: skip
        run.checkpoint(history.generation, saved, record)

    with single_threaded_numpy_blas(), torch.no_grad():
        # 2. replay: the ES states after the stored generations, without model calls
        with timed("replay_s"):
            for es_index, fitness in zip(history.es, history.fitness, strict=True):
                es = es_list[es_index]
                if space.num_es == 1:
                    es.stop()  # called before every generation in the loop below: replay the same calls
                es.tell(es.ask(), fitness)
                space.commit(es_index, es.result.xbest)
        if resume:
            _check_replay(es_list, tensors["es.mean"], state)
        else:
            checkpoint()  # P₀ and the calibrated stds are fixed from here on, even if the first generation is killed

        def evaluate_dev() -> None:
            with timed("dev_s"):
                metrics = evaluate(evaluator, dev, space.current())
            history.dev_calls, history.last_eval = history.dev_calls + 1, history.calls
            save_best(metrics)

        bar = tqdm(total=len(plan) * config.popsize, initial=history.calls, disable=not progress, unit="call",
                   desc=f"{config.method} search")  # fmt: skip
        best_train = min((min(f) for f in history.fitness), default=float("inf"))

        # 3. the search loop
        while history.generation < len(plan):
            es_index = plan[history.generation]
            es = es_list[es_index]
            if space.num_es == 1 and es.stop():
                break  # pycma's own termination (e.g. a flat fitness landscape); BBTv2 follows the fixed schedule
            with timed("ask_s"):
                solutions = es.ask()
            with timed("project_s"):
                candidates = space.candidates(es_index, torch.from_numpy(np.stack(solutions)).float())
            with timed("score_s"):
                # BBTv2 varies only layer es_index: the layers below it are the same for every candidate
                shared = es_index if config.method == "bbtv2" else 0
                scores = evaluator.label_scores(train, candidates, shared_layers=shared)  # (P, K, C)
                losses = classification_loss(scores, labels.expand(len(solutions), -1), config.loss).mean(-1)
                fitness = [float(v) for v in losses.double()]
            with timed("tell_s"):
                es.tell(solutions, fitness)
                space.commit(es_index, es.result.xbest)

            history.es.append(es_index)
            history.fitness.append(fitness)
            history.calls += len(solutions)
            best_train = min(best_train, *fitness)
            run.log.write({"step": history.calls, "es": es_index, "loss_min": min(fitness),
                           "loss_mean": float(np.mean(fitness))})  # fmt: skip
            crossed = history.calls // config.eval_every > history.last_eval // config.eval_every
            if crossed or history.generation == len(plan):
                evaluate_dev()
            checkpoint()
            bar.update(len(solutions))
            bar.set_postfix(loss=f"{best_train:.4f}", **({f"dev_{metric}": f"{run.best[metric]:.4f}"}
                                                         if run.best else {}))  # fmt: skip
            if callback is not None:
                callback({"generation": history.generation, "calls": history.calls, "best_train_loss": best_train})
        if history.last_eval != history.calls or run.best is None:  # stopped early: the final solution is scored
            evaluate_dev()
            checkpoint()
        bar.close()

        # 4. the best-dev prompt: test score and the final artifact
        prompt.load_state_tensors(history.best_state)
        best = run.best_artifact()
        test_metrics = evaluate(evaluator, test, prompt) if test else None
        best.metrics.update({"dev_evaluations": history.dev_calls, "train_loss": best_train, "calls": history.calls})
        run.finish(best, test_metrics, history.calls)

    searched = timing["ask_s"] + timing["tell_s"] + timing["project_s"]
    timing["overhead_share"] = searched / max(searched + timing["score_s"], 1e-12)
    run.log.write({"step": history.calls, "timing": timing})
    return SearchResult(run.out_dir, prompt, run.best, run.best_step, history.calls, test_metrics, timing)


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
