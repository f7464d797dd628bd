"""The on-disk form of a tuned prompt: `prompt.safetensors` + `prompt.json`, for every method.

`prompt.json` says how to rebuild the prompt module (method config, including any projection seed and spec), which
model it was tuned for (hidden size, fingerprint), the task definition (template, labels, verbalizer) so that
`predict` needs nothing else, the metrics, the library version, and the sha256 of the tensor file so tampering or
truncation is caught. Random projections are never stored, only their seed and spec.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from softprompt.fileio import atomic_write
from softprompt.models.backbone import Backbone
from softprompt.prompts import SoftPrompt, build_prompt, config_from_dict
from softprompt.tasks.base import Task
from softprompt.version import __version__

FORMAT_VERSION = 2
TENSORS = "prompt.safetensors"
METADATA = "prompt.json"


class ArtifactError(ValueError):
    """The artifact is missing, corrupt, or does not fit the model it is loaded onto."""


@dataclass
class PromptArtifact:
    prompt: SoftPrompt
    model: dict[str, Any]  # Backbone.describe() of the model it was tuned on
    task: Task | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # training/search settings, data splits, ...

    @property
    def method(self) -> str:
        return self.prompt.config.method

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self.prompt.state_tensors()
        metadata = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": self.method,
            "config": self.prompt.config.to_dict(),
            "hidden_size": self.prompt.hidden_size,
            "num_trainable_parameters": self.prompt.num_trainable_parameters(),
            "stored_numbers": sum(t.numel() for t in tensors.values()),
            "model": self.model,
            "task": self.task.to_dict() if self.task else None,
            "metrics": self.metrics,
            "extra": self.extra,
        }
        # The tensor file is written first and the JSON (which holds its checksum) last, each atomically: a crash in
        # between leaves a pair whose checksum mismatch is reported on load, never a silently wrong prompt.
        atomic_write(directory / TENSORS, lambda p: save_file(tensors, p))
        metadata["tensors_sha256"] = _sha256(directory / TENSORS)
        # Compact JSON: an r=2, n=100 ULPT artifact for SmolLM2 stays under 8 KB in total.
        text = json.dumps(metadata, sort_keys=True, separators=(",", ":")) + "\n"
        atomic_write(directory / METADATA, lambda p: Path(p).write_text(text))
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], backbone: Backbone | None = None, *, strict_model: bool = True
    ) -> PromptArtifact:
        """Load and verify an artifact. With a backbone, check that it is the model the prompt was tuned for."""
        metadata = read_metadata(directory)
        directory = Path(directory)
        tensor_path = directory / TENSORS
        if not tensor_path.exists():
            raise ArtifactError(f"{tensor_path} is missing")
        digest = _sha256(tensor_path)
        if digest != metadata.get("tensors_sha256"):
            raise ArtifactError(
                f"{tensor_path} does not match the checksum in {METADATA} (file modified or corrupt): "
                f"expected {metadata.get('tensors_sha256')}, got {digest}"
            )
        hidden = metadata["hidden_size"]
        if backbone is not None:
            check_model(metadata, backbone, strict=strict_model)
        try:
            prompt = build_prompt(config_from_dict(metadata["config"]), hidden)
            prompt.load_state_tensors(load_file(str(tensor_path)))
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{directory}: cannot rebuild the {metadata.get('method')} prompt: {err}") from err
        task = Task.from_dict(metadata["task"]) if metadata.get("task") else None
        return cls(prompt, metadata["model"], task, metadata.get("metrics", {}), metadata.get("extra", {}))


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / METADATA
    if not path.exists():
        raise ArtifactError(f"{directory} is not a softprompt artifact: {METADATA} not found")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON: {err}") from err
    version = metadata.get("format_version")
    if version not in MIGRATIONS and version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unsupported format version {version!r} (this build reads 1 to {FORMAT_VERSION})")
    while metadata["format_version"] != FORMAT_VERSION:
        metadata = MIGRATIONS[metadata["format_version"]](metadata)
    return metadata


def _v1_to_v2(metadata: dict[str, Any]) -> dict[str, Any]:
    """Format 2 renamed vanilla prompt tuning's method string from "prompt" to "prompt_tuning", and the projection
    seed of ULPT, BBT and BBTv2 from "seed" to "projection_seed"."""
    metadata = {**metadata, "format_version": 2}
    config = dict(metadata.get("config") or {})
    if metadata.get("method") == "prompt":
        metadata["method"] = config["method"] = "prompt_tuning"
    if metadata.get("method") in ("ulpt", "bbt", "bbtv2") and "seed" in config:
        config["projection_seed"] = config.pop("seed")
    metadata["config"] = config
    return metadata


# format version -> the step that lifts its metadata one version up; loading applies them in order.
MIGRATIONS = {1: _v1_to_v2}


def check_model(metadata: dict[str, Any], backbone: Backbone, *, strict: bool = True) -> None:
    """A prompt only means something on the model it was tuned for."""
    want = metadata["model"]
    if backbone.hidden_size != metadata["hidden_size"]:
        raise ArtifactError(
            f"prompt was tuned for hidden size {metadata['hidden_size']} ({want.get('name')}), "
            f"but {backbone.name} has hidden size {backbone.hidden_size}"
        )
    if strict and want.get("fingerprint") != backbone.fingerprint:
        raise ArtifactError(
            f"prompt was tuned on model {want.get('name')!r} (fingerprint {want.get('fingerprint')}), "
            f"but the loaded model {backbone.name!r} has fingerprint {backbone.fingerprint}; "
            "pass the same model (or allow a different one explicitly)"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
