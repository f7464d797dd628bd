"""The small Python API: tune a prompt, load one, evaluate and predict. The CLI is a thin layer over this.

import softprompt as sp
result = sp.tune("sst2", method="ulpt", rank=2, prompt_len=100, steps=300, out="runs/sst2", data_dir="data")
tuned = sp.load("runs/sst2")
tuned.predict(["a gorgeous, witty film"])      # [Prediction(label='positive', scores={...})]
tuned.evaluate("test", data_dir="data")        # {'accuracy': ..., ...}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.artifact import PromptArtifact
from softprompt.evaluation import Prediction, evaluate, predict
from softprompt.evaluator import BackboneAccess, LocalEvaluator
from softprompt.models import DEFAULT_MODEL, Backbone, load_backbone
from softprompt.prompts import PromptConfig, PromptTuningConfig, ULPTConfig, build_prompt
from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task
from softprompt.training.trainer import TrainConfig, TrainResult, train_prompt

PathLike = str | os.PathLike[str]


def get_task(name: str) -> Task:
    from softprompt.tasks.builtin import get_task as builtin

    return builtin(name)


def with_builtin_loaders(task: Task) -> Task:
    """A stored task definition knows no files; if it names a built-in task, reuse that task's data loaders.

    A task built from the user's own files (`softprompt.tasks.custom`) re-reads the files it recorded.
    """
    from softprompt.tasks.builtin import list_tasks
    from softprompt.tasks.custom import with_file_loaders

    if not task.loaders and task.name in list_tasks():
        builtin = get_task(task.name)
        task.loaders, task.hub_loaders = builtin.loaders, builtin.hub_loaders
    return with_file_loaders(task)


def make_prompt_config(method: str, prompt_len: int | None = None, **options: Any) -> PromptConfig:
    """A method's config from flat options (unknown options for that method are an error; unset ones keep the
    config's defaults)."""
    from softprompt.prompts import REGISTRY

    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; known: {sorted(REGISTRY)}")
    config_class = REGISTRY[method][0]
    fields = set(config_class.__dataclass_fields__)
    unknown = {k for k, v in options.items() if v is not None and k not in fields}
    if unknown:
        raise ValueError(f"method {method!r} does not take {sorted(unknown)}")
    options = {k: v for k, v in options.items() if k in fields and v is not None}
    if prompt_len is not None:
        options["prompt_len"] = prompt_len
    return config_class(**options)


def new_prompt(config: PromptConfig, backbone: Backbone, seed: int = 0) -> SoftPrompt:
    """A fresh prompt on `backbone`, initialised from it (training calibrates it on the task's examples)."""
    backbone.check_prompt_fits(config.prompt_len)  # before anything is allocated for it
    # a copy (the prompt records values measured on the model; the caller's stays as it was) with the fields a method
    # takes from the model filled in: BBTv2's depth, the prefix's key/value heads and width
    config = config.for_model(backbone.dims)
    prompt = build_prompt(config, backbone.hidden_size)
    prompt.initialize(BackboneAccess(backbone), seed)
    return prompt


def tune(
    task: str | Task,
    *,
    out: PathLike,
    method: str = "ulpt",
    prompt_len: int | None = None,
    model: str | Backbone = DEFAULT_MODEL,
    data_dir: PathLike | None = None,
    train_config: TrainConfig | None = None,
    splits: tuple[Sequence[Example], Sequence[Example], Sequence[Example] | None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **method_options: Any,
) -> TrainResult:
    """Tune a prompt by gradient descent and save the best one (on validation) as an artifact in `out`."""
    task = get_task(task) if isinstance(task, str) else task
    backbone = load_backbone(model) if isinstance(model, str) else model
    config = make_prompt_config(method, prompt_len, **method_options)
    train_config = train_config or TrainConfig()
    prompt = new_prompt(config, backbone, seed=train_config.seed)
    if splits is None:
        splits = (task.load("train", data_dir), task.load("validation", data_dir), task.load("test", data_dir))
    train, validation, test = splits
    return train_prompt(
        Scorer(backbone, task),
        prompt,
        train,
        validation,
        train_config,
        out,
        test=test,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )


@dataclass
class TunedPrompt:
    """A loaded artifact bound to its model: evaluate and predict without naming anything else."""

    artifact: PromptArtifact
    backbone: Backbone
    task: Task

    @property
    def scorer(self) -> Scorer:
        return Scorer(self.backbone, self.task)

    @property
    def evaluator(self) -> LocalEvaluator:
        return LocalEvaluator(self.scorer)

    def predict(self, texts: Sequence[str | tuple[str, str]], batch_size: int = 32) -> list[Prediction]:
        examples = [Example(*t) if isinstance(t, tuple) else Example(t) for t in texts]
        self.task.check_inputs(examples)
        return predict(self.evaluator, examples, self.artifact.prompt, batch_size)

    def evaluate(
        self, split: str = "test", data_dir: PathLike | None = None, examples: Sequence[Example] | None = None
    ) -> dict[str, float]:
        examples = examples if examples is not None else self.task.load(split, data_dir)
        return evaluate(self.evaluator, examples, self.artifact.prompt)


def load(directory: PathLike, model: str | Backbone | None = None, task: str | Task | None = None) -> TunedPrompt:
    """Load an artifact onto its model (or `model`), checking hidden size and fingerprint."""
    from softprompt.artifact import read_metadata

    metadata = read_metadata(directory)
    backbone = model if isinstance(model, Backbone) else load_backbone(model or metadata["model"]["name"])
    artifact = PromptArtifact.from_pretrained(Path(directory), backbone)
    if task is not None:
        task = get_task(task) if isinstance(task, str) else task
    elif artifact.task is not None:
        task = with_builtin_loaders(artifact.task)
    else:
        raise ValueError(f"{directory} stores no task definition; pass task=")
    return TunedPrompt(artifact, backbone, task)


__all__ = [
    "PromptTuningConfig",
    "ULPTConfig",
    "TrainConfig",
    "get_task",
    "load",
    "make_prompt_config",
    "new_prompt",
    "tune",
]
