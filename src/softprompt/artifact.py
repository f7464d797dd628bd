"""The on-disk form of a tuned prompt: `prompt.safetensors` + `prompt.json`, for every method.

`prompt.json` says how to rebuild the prompt module (method config, including any projection seed and spec), which
model it was tuned for (hidden size, fingerprint), the task definition (template, labels, verbalizer) so that
`predict` needs nothing else, the metrics and the library version. Random projections are never stored, only their
seed and spec.

Integrity (format 2): `tensors_sha256` is the sha256 of the tensor file, and `artifact_sha256` the sha256 of the
canonical JSON (sorted keys, compact, UTF-8) of every other metadata field, `tensors_sha256` included. Editing any
byte that can change a prediction (tensor, seed, scale, label order, template, task kind) is caught on load.
Format 1 carried only `tensors_sha256`; it is still verified and migrated (`MIGRATIONS`).

Everything is read through `softprompt.safeio`: regular files only, sizes and nesting capped, safetensors headers
checked against the bytes present before any allocation, NaN/Inf refused. `to_bytes`/`from_bytes` carry the same two
files in one blob: MAGIC, the metadata length (4 bytes, little-endian), prompt.json, prompt.safetensors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import string
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save as safetensors_bytes

from softprompt.fileio import atomic_write
from softprompt.models.backbone import Backbone
from softprompt.prompts import REGISTRY, PromptConfig, SoftPrompt, build_prompt
from softprompt.safeio import (
    UnsafeInputError,
    check_fields,
    dumps_strict,
    load_safetensors,
    matches_type,
    non_finite,
    parse_json,
    read_regular_file,
)
from softprompt.tasks.base import Task
from softprompt.version import __version__

FORMAT_VERSION = 2
TENSORS = "prompt.safetensors"
METADATA = "prompt.json"
CHECKSUM = "artifact_sha256"
BLOB_MAGIC = b"SPROMPT\x01"

MAX_METADATA_BYTES = 4 << 20
MAX_TENSOR_BYTES = 256 << 20
MAX_HIDDEN_SIZE = 1 << 16
MAX_PROMPT_NUMBERS = 1 << 26  # prompt_len × hidden size
MAX_PROJECTION_NUMBERS = 1 << 30  # prompt_len × hidden size × each of rank / dim / num_layers
SIZE_FIELDS = ("rank", "dim", "num_layers", "text_len", "bottleneck")

# The metadata of the current format, after migration (the checksum is checked and dropped before).
METADATA_FIELDS: dict[str, Any] = {
    "format_version": int,
    "library_version": str,
    "created": str,
    "method": str,
    "config": dict,
    "hidden_size": int,
    "num_trainable_parameters": int,
    "stored_numbers": int,
    "model": dict,
    "task": dict | None,
    "metrics": dict,
    "extra": dict,
    "tensors_sha256": str,
}
TASK_FIELDS: dict[str, Any] = {
    "name": str,
    "template": str,
    "kind": Literal["classification", "generation"],
    "labels": list[str],
    "verbalizer": list[str],
    "metrics": list[str],
    "split_info": dict,
}
TEMPLATE_FIELDS = ("text", "text_pair")


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
        metadata, tensors = self.encode()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # The tensor file is written first and the JSON (which holds its checksum) last, each atomically: a crash in
        # between leaves a pair whose checksum mismatch is reported on load, never a silently wrong prompt.
        atomic_write(directory / TENSORS, lambda p: Path(p).write_bytes(tensors))
        atomic_write(directory / METADATA, lambda p: Path(p).write_bytes(metadata))
        return directory

    def to_bytes(self) -> bytes:
        """The whole artifact as one blob (for a database): MAGIC, len(prompt.json), prompt.json, prompt.safetensors."""
        metadata, tensors = self.encode()
        return BLOB_MAGIC + len(metadata).to_bytes(4, "little") + metadata + tensors

    def encode(self) -> tuple[bytes, bytes]:
        """The bytes of prompt.json and prompt.safetensors. Refuses a prompt holding NaN or Inf."""
        stored = self.prompt.fold()  # what inference needs (residual prompt tuning: the MLP applied and dropped)
        tensors = stored.state_tensors()
        bad = non_finite(tensors)
        if bad:
            raise ArtifactError(
                f"refusing to save a {self.method} prompt with non-finite values (NaN or Inf) in {bad}: "
                "the run diverged (try a lower learning rate)"
            )
        tensor_bytes = safetensors_bytes(tensors)
        metadata = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": self.method,
            "config": stored.config.to_dict(),
            "hidden_size": self.prompt.hidden_size,
            "num_trainable_parameters": self.prompt.num_trainable_parameters(),  # what was trained
            "stored_numbers": sum(t.numel() for t in tensors.values()),
            "model": self.model,
            "task": self.task.to_dict() if self.task else None,
            "metrics": self.metrics,
            "extra": self.extra,
            "tensors_sha256": hashlib.sha256(tensor_bytes).hexdigest(),
        }
        # Round-trip through JSON so the checksum covers exactly what a reader will parse (a diverged loss in the
        # metrics is written as null, never as the invalid JSON token NaN).
        metadata = json.loads(dumps_strict(_finite(metadata)))
        metadata[CHECKSUM] = metadata_digest(metadata)
        # Compact JSON: an r=2, n=100 ULPT artifact for SmolLM2 stays under 8 KB in total.
        return (dumps_strict(metadata) + "\n").encode(), tensor_bytes

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], backbone: Backbone | None = None, *, strict_model: bool = True
    ) -> PromptArtifact:
        """Load and verify an artifact. With a backbone, check that it is the model the prompt was tuned for."""
        metadata, tensors = read_artifact(directory)
        return cls._assemble(metadata, tensors, backbone, strict_model, str(directory))

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, backbone: Backbone | None = None, *, strict_model: bool = True
    ) -> PromptArtifact:
        """The inverse of `to_bytes`, with the same checks and limits as `from_pretrained`."""
        metadata_bytes, tensor_bytes = _split_blob(bytes(data))
        metadata, tensors = decode(metadata_bytes, tensor_bytes, "artifact bytes")
        return cls._assemble(metadata, tensors, backbone, strict_model, "artifact bytes")

    @classmethod
    def _assemble(
        cls,
        metadata: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        backbone: Backbone | None,
        strict_model: bool,
        where: str,
    ) -> PromptArtifact:
        if backbone is not None:
            check_model(metadata, backbone, strict=strict_model)
        try:
            prompt = build_prompt(prompt_config(metadata, where), metadata["hidden_size"])
            prompt.load_state_tensors(tensors)
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{where}: cannot rebuild the {metadata['method']} prompt: {err}") from err
        task = Task.from_dict(metadata["task"]) if metadata["task"] else None
        return cls(prompt, metadata["model"], task, metadata["metrics"], metadata["extra"])


# --- reading ------------------------------------------------------------------------------------------------------
def read_artifact(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The verified metadata (migrated to the current format) and tensors of an artifact folder."""
    folder = Path(directory)
    metadata = _read(folder / METADATA, MAX_METADATA_BYTES, f"{directory} is not a softprompt artifact: {METADATA}")
    tensors = _read(folder / TENSORS, MAX_TENSOR_BYTES, str(folder / TENSORS))
    return decode(metadata, tensors, str(folder))


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified metadata of an artifact folder, migrated to the current format (tensors not read)."""
    path = Path(directory) / METADATA
    return parse_metadata(
        _read(path, MAX_METADATA_BYTES, f"{directory} is not a softprompt artifact: {METADATA}"), path
    )


def decode(
    metadata_bytes: bytes, tensor_bytes: bytes, where: str | os.PathLike[str]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Verify and parse the two files of an artifact (from a folder or a blob)."""
    metadata = parse_metadata(metadata_bytes, where)
    try:
        tensors, _ = load_safetensors(tensor_bytes)
    except UnsafeInputError as err:
        raise ArtifactError(f"{where}: {TENSORS}: {err}") from err
    digest = hashlib.sha256(tensor_bytes).hexdigest()
    if digest != metadata["tensors_sha256"]:
        raise ArtifactError(
            f"{where}: {TENSORS} does not match the checksum in {METADATA} (file modified or corrupt): "
            f"expected {metadata['tensors_sha256']}, got {digest}"
        )
    not_float = sorted(k for k, t in tensors.items() if not t.is_floating_point())
    if not_float:
        raise ArtifactError(f"{where}: {TENSORS}: tensors {not_float} are not floating point")
    bad = non_finite(tensors)
    if bad:
        raise ArtifactError(f"{where}: {TENSORS}: tensors {bad} hold non-finite values (NaN or Inf)")
    return metadata, tensors


def parse_metadata(data: bytes, where: str | os.PathLike[str]) -> dict[str, Any]:
    """prompt.json's bytes -> metadata of the current format: parsed with caps, integrity-checked, migrated, checked."""
    try:
        metadata = parse_json(data, max_bytes=MAX_METADATA_BYTES)
    except UnsafeInputError as err:
        raise ArtifactError(f"{where}: {METADATA}: {err}") from err
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{where}: {METADATA} must hold a JSON object, not a {type(metadata).__name__}")
    version = metadata.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{where}: unsupported artifact format version {version!r}; this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer softprompt may read it)"
        )
    if version >= 2:  # format 1 carried no checksum of its metadata
        claimed = metadata.pop(CHECKSUM, None)
        if claimed != metadata_digest(metadata):
            raise ArtifactError(
                f"{where}: {METADATA} does not match its {CHECKSUM} (metadata modified or corrupt): "
                f"expected {claimed}, got {metadata_digest(metadata)}"
            )
    try:
        while metadata["format_version"] != FORMAT_VERSION:
            metadata = MIGRATIONS[metadata["format_version"]](metadata)
    except (KeyError, TypeError, AttributeError) as err:
        raise ArtifactError(f"{where}: format-{version} {METADATA} is malformed ({type(err).__name__}: {err})") from err
    _check_metadata(metadata, where)
    return metadata


def metadata_digest(metadata: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every metadata field except the checksum itself."""
    body = {k: v for k, v in metadata.items() if k != CHECKSUM}
    return hashlib.sha256(dumps_strict(body).encode()).hexdigest()


def _read(path: Path, max_bytes: int, missing: str) -> bytes:
    try:
        return read_regular_file(path, max_bytes)
    except FileNotFoundError as err:
        raise ArtifactError(f"{missing} not found") from err
    except UnsafeInputError as err:
        raise ArtifactError(str(err)) from err
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror or err}") from err


def _split_blob(data: bytes) -> tuple[bytes, bytes]:
    head = len(BLOB_MAGIC) + 4
    if len(data) < head or not data.startswith(BLOB_MAGIC):
        raise ArtifactError("artifact bytes: not a softprompt artifact blob (bad magic)")
    size = int.from_bytes(data[len(BLOB_MAGIC) : head], "little")
    if size > MAX_METADATA_BYTES or size > len(data) - head:
        raise ArtifactError(f"artifact bytes: declared metadata length {size} exceeds the blob or the limit")
    if len(data) - head - size > MAX_TENSOR_BYTES:
        raise ArtifactError(f"artifact bytes: tensor part is larger than the {MAX_TENSOR_BYTES} bytes allowed")
    return data[head : head + size], data[head + size :]


# --- what the metadata must say -----------------------------------------------------------------------------------
def _check_metadata(metadata: dict[str, Any], where: str | os.PathLike[str]) -> None:
    problems = [f"unknown field {k!r}" for k in sorted(set(metadata) - set(METADATA_FIELDS))]
    problems += [f"missing field {k!r}" for k in METADATA_FIELDS if k not in metadata]
    problems += [
        f"{k!r} must be {getattr(t, '__name__', t)}"
        for k, t in METADATA_FIELDS.items()
        if k in metadata and not matches_type(metadata[k], t)
    ]
    if problems:
        raise ArtifactError(f"{where}: {METADATA}: {'; '.join(problems)}")
    hidden = metadata["hidden_size"]
    if not 0 < hidden <= MAX_HIDDEN_SIZE:
        raise ArtifactError(f"{where}: {METADATA}: hidden_size {hidden} is outside 1..{MAX_HIDDEN_SIZE}")
    model = metadata["model"]
    if not (isinstance(model.get("name"), str) and isinstance(model.get("fingerprint"), str)):
        raise ArtifactError(f"{where}: {METADATA}: model must name the model and its fingerprint (strings)")
    if metadata["config"].get("method") != metadata["method"]:
        raise ArtifactError(f"{where}: {METADATA}: method {metadata['method']!r} disagrees with its config")
    prompt_config(metadata, where)
    if metadata["task"] is not None:
        _check_task(metadata["task"], where)


def prompt_config(metadata: dict[str, Any], where: str | os.PathLike[str]) -> PromptConfig:
    """The checked prompt config of (validated) metadata: known method, known keys of the declared types, sane sizes."""
    values = dict(metadata["config"])
    method = values.pop("method", None)
    if method not in REGISTRY:
        raise ArtifactError(f"{where}: unknown prompt method {method!r}; this build knows {sorted(REGISTRY)}")
    config_class = REGISTRY[method][0]
    try:
        check_fields(config_class, values, f"{where}: {METADATA}: {method} config")
        config = config_class(**values)
    except UnsafeInputError as err:
        raise ArtifactError(str(err)) from err
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{where}: {method} config: {err}") from err
    numbers = config.prompt_len * metadata["hidden_size"]
    sizes = {name: getattr(config, name) for name in SIZE_FIELDS if hasattr(config, name)}
    if numbers > MAX_PROMPT_NUMBERS or any(numbers * s > MAX_PROJECTION_NUMBERS for s in sizes.values()):
        raise ArtifactError(
            f"{where}: {method} config asks for a prompt of {config.prompt_len} x {metadata['hidden_size']} with "
            f"{sizes}, beyond what this build rebuilds ({MAX_PROMPT_NUMBERS} prompt numbers, "
            f"{MAX_PROJECTION_NUMBERS} projection numbers)"
        )
    return config


def _check_task(task: dict[str, Any], where: str | os.PathLike[str]) -> None:
    problems = [f"unknown field {k!r}" for k in sorted(set(task) - set(TASK_FIELDS))]
    problems += [
        f"{k!r} has the wrong type" for k, t in TASK_FIELDS.items() if k in task and not matches_type(task[k], t)
    ]
    if not {"name", "template"} <= task.keys():
        problems.append("a task needs a name and a template")
    if problems:
        raise ArtifactError(f"{where}: {METADATA}: task: {'; '.join(problems)}")
    check_template(task["template"], f"{where}: {METADATA}: task")
    try:
        Task.from_dict(task)
    except ValueError as err:
        raise ArtifactError(f"{where}: {METADATA}: {err}") from err


def check_template(template: str, where: str) -> None:
    """A template may only insert {text} and {text_pair}: no attribute/index access, conversions or format specs."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ArtifactError(f"{where}: template {template!r} is malformed: {err}") from err
    for _, name, spec, conversion in parts:
        if name is not None and (name not in TEMPLATE_FIELDS or spec or conversion):
            text = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ArtifactError(
                f"{where}: template field {{{text}}} is not allowed; use only {{text}} and {{text_pair}}"
            )


def _finite(value: Any) -> Any:
    """JSON-ready copy with NaN/Inf floats as None (metrics of a diverged run)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --- migrations ---------------------------------------------------------------------------------------------------
def _v1_to_v2(metadata: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2. Each change is one block below, applied to a private copy; add further v1 -> v2 steps here.

    Integrity is not migrated: format 1's tensor checksum is verified as before, and the format-2 metadata checksum
    only exists in files written as format 2.
    """
    metadata = copy.deepcopy(metadata)
    metadata["format_version"] = 2
    # vanilla prompt tuning's method string: "prompt" -> "prompt_tuning"
    if metadata.get("method") == "prompt":
        metadata["method"] = "prompt_tuning"
        metadata["config"]["method"] = "prompt_tuning"
    # the projection seed of ULPT, BBT and BBTv2: "seed" -> "projection_seed"
    if metadata.get("method") in ("ulpt", "bbt", "bbtv2") and "seed" in metadata.get("config", {}):
        metadata["config"]["projection_seed"] = metadata["config"].pop("seed")
    return metadata


# format version -> the step that lifts its metadata one version up; loading applies them in order.
MIGRATIONS = {1: _v1_to_v2}
READABLE_VERSIONS = (*sorted(MIGRATIONS), FORMAT_VERSION)


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
            "load it with that model (in Python, strict_model=False accepts any model of its hidden size)"
        )
