"""One output folder per run, the same for gradient training and gradient-free search:

    DIR/prompt.safetensors + prompt.json   the best prompt on validation so far (finally with its test metrics)
    DIR/log.jsonl                          one JSON record per line: training loss, validation, test, timing,
                                           the run's time over all its attempts (`run_s`)
    DIR/checkpoint/                        what resuming needs (training/checkpoint.py: safetensors + JSON, no pickle)

`RunFolder` is the scaffold both optimisers share: it refuses to write over an earlier run, refuses to resume with
other settings, data, model or number format (listing the differences), keeps the best validation prompt as the
artifact (never a non-finite one), and leaves the log with exactly one record per step after any number of restarts.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softprompt.artifact import METADATA, TENSORS, PromptArtifact
from softprompt.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from softprompt.prompts.base import SoftPrompt
from softprompt.tasks.base import Example


class RunLog:
    """Appends one JSON object per line; mirrors scalars to TensorBoard when it is installed."""

    FILE = "log.jsonl"

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / self.FILE
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

    def truncate_after(self, step: int) -> None:
        """Drop what was written after the checkpoint a resumed run restarts from: records of later steps, and the
        records of a run's end (its test result, a search's timing), which the resumed run writes again."""
        if not self.path.exists():
            return
        records = [(line, json.loads(line)) for line in self.path.read_text().splitlines() if line]
        kept = [line for line, r in records if r.get("step", 0) <= step and not _written_at_the_end(r)]
        self.path.write_text("".join(line + "\n" for line in kept))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def _written_at_the_end(record: dict[str, Any]) -> bool:
    return record.get("split") == "test" or "timing" in record or "run_s" in record


def data_fingerprint(*splits: Sequence[Example]) -> str:
    """Identity of the examples a run learns from (their texts, pairs, labels and targets, in order)."""
    h = hashlib.sha256()
    for examples in splits:
        h.update(b"\x00split")
        for ex in examples:
            h.update(json.dumps([ex.text, ex.text_pair, ex.label, ex.target]).encode())
    return h.hexdigest()[:16]


def differences(saved: Any, now: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values, e.g. `train_config.lr: 0.03 -> 0.1`."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += differences(saved.get(key), now.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if saved == now else [f"{path}: {json.dumps(saved)} -> {json.dumps(now)}"]


def is_better(metrics: dict[str, float], best: dict[str, float] | None, metric: str) -> bool:
    """Higher metric wins, then lower loss; a non-finite result never does."""
    values = [metrics[metric], metrics.get("loss", 0.0)]
    if not all(math.isfinite(v) for v in values):
        return False
    return best is None or (metrics[metric], -metrics.get("loss", 0.0)) > (best[metric], -best.get("loss", 0.0))


def prompt_is_finite(prompt: SoftPrompt) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in prompt.state_tensors().values())


@dataclass
class RunFolder:
    """The folder of one run. `identity` is everything that must be equal for `resume` to continue it."""

    out_dir: Path
    identity: dict[str, Any]
    resume: bool = False
    overwrite: bool = False
    free: tuple[str, ...] = ()  # identity entries a resume may change, as they do not change the result
    best: dict[str, float] | None = field(default=None, init=False)
    best_step: int = field(default=-1, init=False)
    earlier_s: float = field(default=0.0, init=False)  # earlier attempts' time, up to the checkpoint resumed from
    started: float = field(default_factory=time.perf_counter, init=False)

    @property
    def elapsed_s(self) -> float:
        """The run's time over all its attempts (model loading excluded): each earlier attempt up to the checkpoint
        the next one resumed from (what it did after that was done again, and is counted once), plus this one's."""
        return self.earlier_s + time.perf_counter() - self.started

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoint"
        self.identity = json.loads(json.dumps(self.identity))  # compare as JSON sees it (tuples become lists)
        if self.resume and self.overwrite:
            raise ValueError("--resume continues a run and --overwrite replaces it: pass one of them")
        if self.resume:
            if not has_checkpoint(self.checkpoint_dir):
                raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        elif self._holds_a_run():
            if not self.overwrite:
                raise FileExistsError(
                    f"{self.out_dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                    "or choose another --out"
                )
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            for name in (TENSORS, METADATA, RunLog.FILE):
                (self.out_dir / name).unlink(missing_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out_dir)

    def _holds_a_run(self) -> bool:
        """A checkpoint, an artifact, or a log (a run stopped before its first checkpoint: started afresh, it must not
        append to the old one's records)."""
        files = (self.out_dir / METADATA, self.out_dir / RunLog.FILE)
        return has_checkpoint(self.checkpoint_dir) or any(f.exists() for f in files)

    def restore(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The last checkpoint, after checking that it was made with this run's identity."""
        tensors, state = load_checkpoint(self.checkpoint_dir)
        saved = state.get("identity") or {}
        # a key a checkpoint lacks was added to the identity after it was written (`dtype`): not known, not compared
        diffs = differences(saved, {k: v for k, v in self.identity.items() if k in saved or not saved})
        diffs = [d for d in diffs if d.split(":", 1)[0] not in self.free]
        if diffs:
            hint = ""
            if any(d.startswith("dtype:") for d in diffs):
                hint = (f"; --dtype auto picks the number format by the machine, so pass --dtype {saved['dtype']} "
                        "to continue in the run's own")  # fmt: skip
            raise ValueError(
                "--resume: this run differs from the checkpoint in " + "; ".join(diffs[:12])
                + (f" (and {len(diffs) - 12} more)" if len(diffs) > 12 else "")
                + hint + "; resume with the original settings, or start a new run in another --out"
            )  # fmt: skip
        self.best, self.best_step = state["best"], state["best_step"]
        self.earlier_s = state.get("elapsed_s", 0.0)  # checkpoints before 2026-12-01 did not keep it
        self.log.truncate_after(state["step"])
        return tensors, state

    def checkpoint(self, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        record = {**state, "step": step, "best": self.best, "best_step": self.best_step, "identity": self.identity,
                  "elapsed_s": self.elapsed_s}  # fmt: skip
        save_checkpoint(self.checkpoint_dir, step, tensors, record)

    def validation(self, step: int, metrics: dict[str, float], metric: str, artifact: PromptArtifact) -> bool:
        """Log a validation result; if it is the best so far (and the prompt is finite), save it as the artifact."""
        self.log.write({"step": step, "split": "validation", **metrics})
        if not is_better(metrics, self.best, metric) or not prompt_is_finite(artifact.prompt):
            return False
        self.best, self.best_step = metrics, step
        artifact.save_pretrained(self.out_dir)
        return True

    def best_artifact(self, backbone: Any = None) -> PromptArtifact:
        if self.best is None:
            raise ValueError(f"{self.out_dir}: no finite prompt was ever evaluated; nothing to keep (lower the lr?)")
        return PromptArtifact.from_pretrained(self.out_dir, backbone, strict_model=backbone is not None)

    def finish(self, artifact: PromptArtifact, test: dict[str, float] | None, step: int) -> None:
        """Record the test result of the best prompt in the log and in its artifact, and the run's time in the log
        (`run_s`: over all its attempts, as `elapsed_s` counts it)."""
        if test is not None:
            self.log.write({"step": step, "split": "test", **test})
            artifact.metrics = {**artifact.metrics, "test": test}
        artifact.save_pretrained(self.out_dir)
        self.log.write({"step": step, "run_s": round(self.elapsed_s, 2)})
