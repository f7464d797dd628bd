"""The gradient recipe: AdamW on the prompt's parameters, the frozen model only runs forward and backward.

Warm-up + linear decay, gradient accumulation, evaluation every N steps with the best validation prompt saved as
the artifact, a final test evaluation, JSONL (and TensorBoard, if installed) logs, and exact resume: every
evaluation writes a checkpoint of prompt, optimiser and RNG state; batches and learning rate depend only on the
step number, so a resumed run retraces the uninterrupted one.

Output folder:  prompt.safetensors + prompt.json (best prompt), log.jsonl, checkpoint/ (for --resume).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from softprompt.artifact import PromptArtifact
from softprompt.evaluation import evaluate
from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.training.batches import batch_indices
from softprompt.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from softprompt.training.schedule import linear_warmup_decay


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 0.3
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    eval_every: int = 100
    eval_batch_size: int = 32
    seed: int = 0
    loss: str = "ce"
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class RunLog:
    """Appends one JSON object per line; mirrors scalars to TensorBoard when it is installed."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "log.jsonl"
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except (ImportError, ModuleNotFoundError):
            pass

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])


@dataclass
class TrainResult:
    out_dir: Path
    best_step: int
    best_validation: dict[str, float]
    test: dict[str, float] | None


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
    extra_metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"
    task, backbone = scorer.task, scorer.backbone
    metric = task.primary_metric
    params = [p for p in prompt.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the prompt has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    extra = {"train_config": asdict(config), **(extra_metadata or {})}

    step, best, best_step = 0, float("-inf"), -1
    if resume:
        if not has_checkpoint(ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
        tensors, state = load_checkpoint(ckpt_dir)
        if state["train_config"] != asdict(config):
            raise ValueError(f"--resume: settings differ from the checkpoint's: {state['train_config']}")
        prompt.load_state_tensors({k[len("prompt.") :]: v for k, v in tensors.items() if k.startswith("prompt.")})
        load_optimizer_state(optimizer, tensors, state["optimizer"])
        restore_rng(tensors)
        step, best, best_step = state["step"], state["best"], state["best_step"]
    elif has_checkpoint(ckpt_dir):
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")

    def checkpoint() -> None:
        opt_tensors, opt_meta = optimizer_state(optimizer)
        tensors = {**{f"prompt.{k}": v for k, v in prompt.state_tensors().items()}, **opt_tensors, **rng_state()}
        state = {"step": step, "best": best, "best_step": best_step, "optimizer": opt_meta}
        save_checkpoint(ckpt_dir, step, tensors, {**state, "train_config": asdict(config)})

    def save_artifact(metrics: dict[str, Any]) -> None:
        PromptArtifact(prompt, backbone.describe(), task, metrics, extra).save_pretrained(out_dir)

    log = RunLog(out_dir)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc=f"train {prompt.config.method}")
    started, running = time.perf_counter(), []
    micro = config.batch_size // config.grad_accum if config.batch_size % config.grad_accum == 0 else None
    if micro is None:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by grad_accum {config.grad_accum}")

    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * linear_warmup_decay(step, config.warmup_steps, config.steps)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(config.grad_accum):
            idx = batch_indices(len(train), micro, step * config.grad_accum + k, config.seed)
            batch = scorer.encode([train[i] for i in idx])
            loss = scorer.loss(batch, prompt(), prompt.deep_prompts(), kind=config.loss) / config.grad_accum
            loss.backward()
            total += loss.item()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        step += 1
        running.append(total)
        bar.update(1)
        if step % config.log_every == 0:
            record = {"step": step, "loss": sum(running) / len(running), "lr": optimizer.param_groups[0]["lr"]}
            log.write({**record, "elapsed_s": round(time.perf_counter() - started, 2)})
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            running = []
        if step % config.eval_every == 0 or step == config.steps:
            prompt.eval()
            metrics = evaluate(scorer, validation, prompt, config.eval_batch_size)
            prompt.train()
            log.write({"step": step, "split": "validation", **metrics})
            if metrics[metric] > best:
                best, best_step = metrics[metric], step
                save_artifact({"validation": metrics, "best_step": step})
            bar.set_postfix(loss=f"{total:.4f}", **{f"val_{metric}": f"{metrics[metric]:.4f}", "best": f"{best:.4f}"})
            checkpoint()
    bar.close()

    # Final: reload the best prompt (it is what the artifact holds) and score it on the held-out test split.
    best_artifact = PromptArtifact.from_pretrained(out_dir, backbone)
    prompt.load_state_tensors(best_artifact.prompt.state_tensors())
    test_metrics = None
    if test:
        test_metrics = evaluate(scorer, test, prompt, config.eval_batch_size, progress=progress)
        log.write({"step": step, "split": "test", **test_metrics})
        save_artifact({**best_artifact.metrics, "test": test_metrics})
    return TrainResult(out_dir, best_step, best_artifact.metrics["validation"], test_metrics)
