"""What a task is: raw examples, how they become model text, what the model must produce, and how it is scored.

A task never touches a model. It renders an `Example` into input text (its `template`) and names the target:
for classification, one verbalizer word per label (scored at the answer position); for generation, the
answer text. Everything model-specific (tokenising, where the answer position is) lives in `softprompt.models`.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TaskKind = Literal["classification", "generation"]
SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """A data file is missing, malformed, or disagrees with the task definition. The message names file and line."""


class DataWarning(UserWarning):
    """Something in a data file was odd but handled (a fallback encoding); the CLI prints these."""


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None = None
    label: int | None = None  # index into Task.labels (classification)
    target: str | None = None  # answer text (generation)
    # Where the row came from, for error messages ("train.tsv:17").
    source: str | None = None


@dataclass
class Task:
    """A task definition. `template` uses `{text}` and, for sentence pairs, `{text_pair}`."""

    name: str
    template: str
    kind: TaskKind = "classification"
    labels: tuple[str, ...] = ()  # label names, index = Example.label
    verbalizer: tuple[str, ...] = ()  # one word per label; the leading space matters for BPE tokenisers
    metrics: tuple[str, ...] = ("accuracy",)
    # split -> loader(data_dir) for the local files; built-in tasks fill this, user tasks read their own files.
    loaders: dict[str, Callable[[Path], list[Example]]] = field(default_factory=dict, repr=False)
    # split -> loader() that fetches from the Hugging Face hub (used only when no local data dir is given).
    hub_loaders: dict[str, Callable[[], list[Example]]] = field(default_factory=dict, repr=False)
    # How splits were made (seeds, sizes, source files): recorded in artifacts.
    split_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "classification":
            if not self.labels:
                raise ValueError(f"task {self.name!r}: a classification task needs labels")
            if len(self.verbalizer) != len(self.labels):
                raise ValueError(
                    f"task {self.name!r}: {len(self.labels)} labels but {len(self.verbalizer)} verbalizer words"
                )
        if "{text}" not in self.template:
            raise ValueError(f"task {self.name!r}: template must contain {{text}}: {self.template!r}")

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def takes_pair(self) -> bool:
        """A sentence-pair task: its template fills in `{text_pair}`."""
        return "text_pair" in {name for _, name, _, _ in string.Formatter().parse(self.template)}

    def check_inputs(self, examples: Sequence[Example]) -> None:
        """New inputs fit the task: a second text for each where it takes pairs, none where it does not (either
        mistake would be scored without an error: with an empty second text, or without the one given)."""
        missing = sum(ex.text_pair is None for ex in examples)
        if self.takes_pair and missing:
            raise ValueError(f"task {self.name!r} scores sentence pairs; {missing} input(s) have no second text")
        if not self.takes_pair and len(examples) > missing:
            raise ValueError(f"task {self.name!r} scores single texts; {len(examples) - missing} input(s) have two")

    def render(self, example: Example) -> str:
        """The model input text for one example (without the target)."""
        return self.template.format(text=example.text, text_pair=example.text_pair or "")

    def load(self, split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Example]:
        """Examples of one split, from `data_dir` (default `$SOFTPROMPT_DATA_DIR`), else from the hub."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        data_dir = data_dir or os.environ.get("SOFTPROMPT_DATA_DIR")
        if data_dir:
            if split not in self.loaders:
                raise DataError(f"task {self.name!r} has no local loader for split {split!r}")
            root = Path(data_dir).expanduser()
            if not root.is_dir():
                raise DataError(f"data dir {root} does not exist (set --data-dir or $SOFTPROMPT_DATA_DIR)")
            return self.loaders[split](root)
        if split not in self.hub_loaders:
            raise DataError(
                f"task {self.name!r}: no data dir given and no hub source for split {split!r}; "
                "pass --data-dir or set $SOFTPROMPT_DATA_DIR"
            )
        return self.hub_loaders[split]()

    def to_dict(self) -> dict[str, Any]:
        """The part of the task an artifact needs to predict on new text (no data)."""
        return {
            "name": self.name,
            "template": self.template,
            "kind": self.kind,
            "labels": list(self.labels),
            "verbalizer": list(self.verbalizer),
            "metrics": list(self.metrics),
            "split_info": self.split_info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        return cls(
            name=d["name"],
            template=d["template"],
            kind=d.get("kind", "classification"),
            labels=tuple(d.get("labels", ())),
            verbalizer=tuple(d.get("verbalizer", ())),
            metrics=tuple(d.get("metrics", ("accuracy",))),
            split_info=dict(d.get("split_info", {})),
        )
