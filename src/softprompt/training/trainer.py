"""The gradient recipe: AdamW on the prompt's parameters; the frozen model only runs forward and backward.

Warm-up + linear decay, gradient accumulation, evaluation every N steps with the best validation prompt saved as
the artifact, a final test evaluation, and exact resume: a checkpoint of prompt, optimiser and RNG state is written
at every evaluation and at least every `checkpoint_every_s` seconds; batches and learning rate depend only on the
step number, so a resumed run retraces the uninterrupted one. The output folder is a `softprompt.runs.RunFolder`,
shared with CMA-ES search. Launched as several processes (`accelerate launch`), it trains data parallel
(training/parallel.py): each process scores its slice of every batch, gradients are averaged, process 0 writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from softprompt.artifact import PromptArtifact
from softprompt.checkpoint import load_checkpoint, load_optimizer_state, optimizer_state, restore_rng, rng_state
from softprompt.evaluation import evaluate
from softprompt.evaluator import LocalEvaluator
from softprompt.prompts.base import SoftPrompt
from softprompt.runs import RunFolder, data_fingerprint
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.training.batches import batch_indices
from softprompt.training.parallel import DataParallel
from softprompt.training.schedule import linear_warmup_decay

LOSSES = ("ce", "hinge")


def _help(text: str, **kw: Any) -> Any:
    """A dataclass field with a help text, which the command line shows for the option derived from it."""
    return field(metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    """Every training setting and its default, for the Python API and the command line alike."""

    steps: int = _help("optimiser steps", default=1000)
    batch_size: int = _help("examples per step", default=8)
    grad_accum: int = _help("micro-batches per step (batch_size must divide by it)", default=1)
    lr: float | None = _help("peak learning rate (default: the method's own, e.g. 0.03 ULPT, 0.01 PT)", default=None)
    weight_decay: float = _help("AdamW weight decay", default=1e-5)
    warmup_steps: int | None = _help("linear warm-up steps (default: 10%% of the steps)", default=None)
    max_grad_norm: float | None = _help("clip the gradient norm (0 or none: no clipping)", default=1.0)
    eval_every: int = _help("evaluate on validation every N steps (and at the end)", default=100)
    eval_batch_size: int = _help("examples per evaluation forward pass", default=32)
    checkpoint_every_s: float = _help("also checkpoint at least this often, in seconds", default=60.0)
    seed: int = _help("seed of the initialisation, the batch order and example subsets", default=0)
    loss: str = _help("ce or hinge", default="ce")
    log_every: int = _help("log the training loss every N steps", default=10)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm >= 0:
            raise ValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.checkpoint_every_s > 0:
            raise ValueError(f"checkpoint_every_s must be positive, got {self.checkpoint_every_s}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")

    def resolved(self, default_lr: float) -> TrainConfig:
        """The settings a run actually uses: the method's lr if unset, 10% warm-up if unset."""
        return replace(
            self,
            lr=self.lr if self.lr is not None else default_lr,
            warmup_steps=self.warmup_steps if self.warmup_steps is not None else self.steps // 10,
            eval_every=min(self.eval_every, self.steps),
        )


@dataclass
class TrainResult:
    out_dir: Path
    best_step: int
    best_validation: dict[str, float]
    test: dict[str, float] | None
    replica: bool = False  # a data-parallel process other than 0: it trained in step and wrote nothing


def _what_is_kept(run: RunFolder | None, out_dir: str | Path) -> str:
    if run is None:  # a data-parallel replica: process 0 says it
        return f"Process 0 says what stays in {out_dir}"
    if run.best is None:
        return f"No prompt was saved in {run.out_dir}: none had been evaluated yet (--eval-every sets how often)"
    return f"The best prompt so far (step {run.best_step}) stays in {run.out_dir}"


def train_prompt(
    scorer: Scorer,
    prompt: SoftPrompt,
    train: Sequence[Example],
    validation: Sequence[Example],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    test: Sequence[Example] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Tune `prompt` on `train`, keep the best on `validation` as the artifact in `out_dir`, score it on `test`."""
    if not train or not validation:
        raise ValueError("training needs train and validation examples")
    config = config.resolved(prompt.config.default_lr)
    task, backbone = scorer.task, scorer.backbone
    evaluator = LocalEvaluator(scorer, chunk_size=max(64, config.eval_batch_size))
    identity = {
        "train_config": asdict(config),
        "prompt_config": prompt.config.settings(),
        "model_fingerprint": backbone.fingerprint,
        "dtype": backbone.describe()["dtype"],
        "data": data_fingerprint(train, validation),
    }
    parallel = DataParallel.from_env(backbone.device)  # None unless launched as several processes
    # Process 0 owns the run folder; the others train in step with it and only read its checkpoint to resume.
    writes = parallel is None or parallel.is_main
    free = ("train_config.checkpoint_every_s",)  # how often it checkpoints does not change what it trains
    run = RunFolder(Path(out_dir), identity, resume=resume, overwrite=overwrite, free=free) if writes else None
    metric = task.primary_metric
    step = 0
    if resume:
        tensors, state = run.restore() if run else load_checkpoint(Path(out_dir) / "checkpoint")
        prompt.load_state_tensors({k[len("prompt.") :]: v for k, v in tensors.items() if k.startswith("prompt.")})
    else:
        prompt.calibrate(evaluator, train)  # BBT/BBTv2: projection stds from the model, exactly as CMA-ES does
    groups = prompt.param_groups(config.lr)
    params = [p for group in groups for p in group["params"]]
    if not params:
        raise ValueError("the prompt has no trainable parameters")
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    peak = [group["lr"] for group in optimizer.param_groups]
    if resume:
        load_optimizer_state(optimizer, tensors, state["optimizer"])
        restore_rng(tensors)
        step = state["step"]
    extra = {"train_config": asdict(config), **(extra_metadata or {})}

    def checkpoint() -> None:
        opt_tensors, opt_meta = optimizer_state(optimizer)
        tensors = {**{f"prompt.{k}": v for k, v in prompt.state_tensors().items()}, **opt_tensors, **rng_state()}
        run.checkpoint(step, tensors, {"optimizer": opt_meta})

    quiet = not progress or not writes  # a data-parallel replica shows no bar
    bar = tqdm(total=config.steps, initial=step, disable=quiet, desc=f"train {prompt.config.method}")
    last_checkpoint = time.perf_counter()
    running: list[float] = []
    micro = config.batch_size // config.grad_accum
    while step < config.steps:
        scale = linear_warmup_decay(step, config.warmup_steps, config.steps)
        for group, lr in zip(optimizer.param_groups, peak, strict=True):
            group["lr"] = lr * scale
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(config.grad_accum):
            idx = batch_indices(len(train), micro, step * config.grad_accum + k, config.seed)
            idx = parallel.shard(idx) if parallel else idx
            batch = scorer.encode([train[i] for i in idx])
            # Decoders: the prompt as its keys/values, run once for the micro-batch instead of once per example
            # (exact, gradients included): at n = 128 before SST-2 sentences a step takes a third of the time
            # (bench/results/step_time_smollm2-135m-instruct_n128.md)
            inputs = backbone.as_prefix(prompt.materialize())
            loss = scorer.loss(batch, inputs, kind=config.loss) / config.grad_accum
            loss.backward()
            total += loss.item()
        if parallel:
            parallel.average_gradients(params)
            total = parallel.average(total)
        if not math.isfinite(total):
            raise ValueError(
                f"training diverged at step {step + 1} (loss {total}); lower the learning rate (it was "
                f"{config.lr:g}). " + _what_is_kept(run, out_dir)
            )
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        step += 1
        running.append(total)
        bar.update(1)
        if run is None:  # a data-parallel replica: process 0 logs, evaluates and checkpoints
            continue
        if step % config.log_every == 0:
            record = {"step": step, "loss": sum(running) / len(running), "lr": optimizer.param_groups[0]["lr"]}
            run.log.write({**record, "elapsed_s": round(run.elapsed_s, 2)})  # over all attempts
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            running = []
        if step % config.eval_every == 0 or step == config.steps:
            prompt.eval()
            metrics = evaluate(evaluator, validation, prompt, config.eval_batch_size)
            prompt.train()
            artifact = PromptArtifact(prompt, backbone.describe(), task, {"validation": metrics, "best_step": step},
                                      extra)  # fmt: skip
            run.validation(step, metrics, metric, artifact)
            bar.set_postfix(loss=f"{total:.4f}", **{f"val_{metric}": f"{metrics[metric]:.4f}"})
            checkpoint()
            last_checkpoint = time.perf_counter()
        elif time.perf_counter() - last_checkpoint >= config.checkpoint_every_s:
            checkpoint()
            last_checkpoint = time.perf_counter()
    bar.close()
    if run is None:
        return TrainResult(Path(out_dir), -1, {}, None, replica=True)

    # Final: the best prompt (what the artifact holds), scored on the held-out test split.
    best = run.best_artifact(backbone)
    test_metrics = evaluate(evaluator, test, best.prompt, config.eval_batch_size, progress=progress) if test else None
    run.finish(best, test_metrics, step)
    prompt.load_state_tensors(best.prompt.state_tensors())
    return TrainResult(run.out_dir, run.best_step, run.best or {}, test_metrics)
