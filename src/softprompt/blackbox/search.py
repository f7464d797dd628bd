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
from softprompt.blackbox.spaces import Space, create_prompt, make_space
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
TIMERS = ("ask_s", "tell_s", "project_s", "score_s", "dev_s", "replay_s")  # seconds spent, in the final log line


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

    @property
    def best_train(self) -> float:
        """The lowest train loss of any candidate so far."""
        return min((min(f) for f in self.fitness), default=float("inf"))


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
                "dtype": model.get("dtype"), "data": data_fingerprint(train, dev)}  # fmt: skip
    run = RunFolder(Path(out_dir), identity, resume=resume, overwrite=overwrite)
    search = _Search.start(evaluator, model, config, run, train, resume, extra_metadata or {})  # 1. prompt and ES
    history, metric = search.history, task.primary_metric
    labels = torch.tensor([ex.label for ex in train])

    with single_threaded_numpy_blas(), torch.no_grad():
        search.replay()  # 2. the ES states after the stored generations, without model calls
        bar = tqdm(total=len(search.plan) * config.popsize, initial=history.calls, disable=not progress,
                   unit="call", desc=f"{config.method} search")  # fmt: skip
        while history.generation < len(search.plan):  # 3. the search loop
            fitness = search.generation(train, labels)
            if fitness is None:
                break  # pycma's own termination (e.g. a flat fitness landscape); BBTv2 follows the fixed schedule
            crossed = history.calls // config.eval_every > history.last_eval // config.eval_every
            if crossed or history.generation == len(search.plan):
                search.evaluate_dev(dev)
            search.checkpoint()
            bar.update(len(fitness))
            bar.set_postfix(loss=f"{history.best_train:.4f}", **({f"dev_{metric}": f"{run.best[metric]:.4f}"}
                                                                  if run.best else {}))  # fmt: skip
            if callback is not None:
                callback({"generation": history.generation, "calls": history.calls,
                          "best_train_loss": history.best_train})  # fmt: skip
        if history.last_eval != history.calls or run.best is None:  # stopped early: the final solution is scored
            search.evaluate_dev(dev)
            search.checkpoint()
        bar.close()

        # 4. the best-dev prompt: test score and the final artifact
        search.prompt.load_state_tensors(history.best_state)
        best = run.best_artifact()
        test_metrics = evaluate(evaluator, test, search.prompt) if test else None
        best.metrics.update({"dev_evaluations": history.dev_calls, "train_loss": history.best_train,
                             "calls": history.calls})  # fmt: skip
        run.finish(best, test_metrics, history.calls)

    timing = search.timing
    searched = timing["ask_s"] + timing["tell_s"] + timing["project_s"]
    timing["overhead_share"] = searched / max(searched + timing["score_s"], 1e-12)
    run.log.write({"step": history.calls, "timing": timing})
    return SearchResult(run.out_dir, search.prompt, run.best, run.best_step, history.calls, test_metrics, timing)


@dataclass
class _Search:
    """One search's state: the prompt and the space CMA-ES searches it in, one ES per block of that space (BBTv2: a
    layer each) with the schedule saying which runs when, the history a resume replays, and where it is all saved."""

    evaluator: PromptEvaluator
    model: dict[str, Any]  # the evaluator's description, as the artifacts record it
    config: SearchConfig
    run: RunFolder
    extra_metadata: dict[str, Any]
    prompt: SoftPrompt
    shift_std: float  # ULPT's shift step multiplier (the embedding std), fixed at the start
    init_state: dict[str, torch.Tensor]  # P₀, calibrated: checkpointed so a resume rebuilds the same prompt
    space: Space
    plan: list[int]  # the ES of each generation
    es_list: list[Any]
    history: _History
    restored: tuple[torch.Tensor, dict[str, Any]] | None  # a resumed checkpoint's ES means and record, to check
    timing: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMERS, 0.0))

    @classmethod
    def start(cls, evaluator: PromptEvaluator, model: dict[str, Any], config: SearchConfig, run: RunFolder,
              train: Sequence[Example], resume: bool, extra_metadata: dict[str, Any]) -> _Search:  # fmt: skip
        """The prompt fresh (initialised and calibrated on the model) or as checkpointed, with the history to replay."""
        if resume:
            tensors, state = run.restore()
            prompt = build_prompt(config_from_dict(state["prompt_config"]), evaluator.hidden_size)
            prompt.load_state_tensors(_strip(tensors, "init."))
            history = _History(tensors["history.es"].tolist(), tensors["history.fitness"].tolist(),
                               state["calls"], state["dev_calls"], state["last_eval"])  # fmt: skip
            shift_std, restored = state["shift_std"], (tensors["es.mean"], state)
        else:
            tensors, history, restored = {}, _History(), None
            prompt = create_prompt(evaluator, config.prompt, train, config.seed)
            shift_std = evaluator.embedding_std() if config.method == "ulpt" else 0.0
        init_state = _snapshot(prompt)
        history.best_state = _strip(tensors, "best.") or _snapshot(prompt)
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
        return cls(evaluator, model, config, run, extra_metadata, prompt, shift_std, init_state, space, plan, es_list,
                   history, restored)  # fmt: skip

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timing[key] += time.perf_counter() - start

    def replay(self) -> None:
        """Tell each ES the stored fitness values in the original order (no model calls) and check the result bit
        for bit; a fresh search checkpoints its start instead (P₀ and the calibrated stds are fixed from here on,
        even if the first generation is killed)."""
        with self.timed("replay_s"):
            for es_index, fitness in zip(self.history.es, self.history.fitness, strict=True):
                es = self.es_list[es_index]
                if self.space.num_es == 1:
                    es.stop()  # called before every generation in the loop: replay the same calls
                es.tell(es.ask(), fitness)
                self.space.commit(es_index, es.result.xbest)
        if self.restored is None:
            self.checkpoint()
        else:
            _check_replay(self.es_list, *self.restored)

    def generation(self, train: Sequence[Example], labels: torch.Tensor) -> list[float] | None:
        """One generation of the scheduled ES: ask, score every candidate on train, tell. None: that ES stopped."""
        es_index = self.plan[self.history.generation]
        es = self.es_list[es_index]
        if self.space.num_es == 1 and es.stop():
            return None
        with self.timed("ask_s"):
            solutions = es.ask()
        with self.timed("project_s"):
            candidates = self.space.candidates(es_index, torch.from_numpy(np.stack(solutions)).float())
        with self.timed("score_s"):
            # BBTv2 varies only layer es_index: the layers below it are the same for every candidate
            shared = es_index if self.config.method == "bbtv2" else 0
            scores = self.evaluator.label_scores(train, candidates, shared_layers=shared)  # (P, K, C)
            losses = classification_loss(scores, labels.expand(len(solutions), -1), self.config.loss).mean(-1)
            fitness = [float(v) for v in losses.double()]
        with self.timed("tell_s"):
            es.tell(solutions, fitness)
            self.space.commit(es_index, es.result.xbest)
        self.history.es.append(es_index)
        self.history.fitness.append(fitness)
        self.history.calls += len(solutions)
        self.run.log.write({"step": self.history.calls, "es": es_index, "loss_min": min(fitness),
                            "loss_mean": float(np.mean(fitness))})  # fmt: skip
        return fitness

    def evaluate_dev(self, dev: Sequence[Example]) -> None:
        """Score the current solution on dev (the evaluation gradient training uses); keep it if it is the best."""
        with self.timed("dev_s"):
            metrics = evaluate(self.evaluator, dev, self.space.current())
        history = self.history
        history.dev_calls, history.last_eval = history.dev_calls + 1, history.calls
        extra = {"search_config": self.config.to_dict(), **self.extra_metadata}
        artifact = PromptArtifact(self.prompt, self.model, self.evaluator.task,
                                  {"validation": metrics, "best_calls": history.calls, "calls": history.calls},
                                  extra)  # fmt: skip
        if self.run.validation(history.calls, metrics, self.evaluator.task.primary_metric, artifact):
            history.best_state = _snapshot(self.prompt)

    def checkpoint(self) -> None:
        history = self.history
        saved = {
            **{f"init.{k}": v for k, v in self.init_state.items()},
            **{f"best.{k}": v for k, v in history.best_state.items()},
            "history.es": torch.tensor(history.es, dtype=torch.int64),
            "history.fitness": torch.tensor(history.fitness, dtype=torch.float64).view(-1, self.config.popsize),
            "es.mean": torch.from_numpy(np.stack([es.mean for es in self.es_list])),
        }
        record = {"prompt_config": self.prompt.config.to_dict(), "shift_std": self.shift_std,
                  "calls": history.calls, "dev_calls": history.dev_calls, "last_eval": history.last_eval,
                  "versions": _versions()}  # fmt: skip
        self.run.checkpoint(history.calls, saved, record)  # the log's step: calls (resuming truncates the log)


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
