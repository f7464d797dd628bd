"""The endpoint's binary wire format: one safetensors buffer (tensors) with a JSON object in its metadata.

No pickle anywhere: safetensors carries only raw numbers with declared dtypes and shapes, so a hostile body can at
worst be rejected, never executed. Used by both the server and the client; needs only torch and safetensors.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from softprompt.models.backbone import EncodedBatch

MEDIA_TYPE = "application/octet-stream"
META_KEY = "json"
BATCH_FIELDS = ("input_ids", "attention_mask", "score_index", "score_mask")
EXTRA_PREFIX = "extras."  # architecture-specific batch inputs, e.g. extras.decoder_input_ids (seq2seq)


class WireError(ValueError):
    """The body is not a well-formed payload."""


def encode(tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> bytes:
    # safetensors refuses views that share storage; a contiguous CPU copy of each tensor is always accepted.
    plain = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    return save(plain, metadata={META_KEY: json.dumps(meta or {})})


def decode(body: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a payload; WireError if it is not a valid safetensors buffer."""
    if len(body) < 8:
        raise WireError("body is not a safetensors buffer (shorter than its 8-byte header length)")
    size = int.from_bytes(body[:8], "little")
    if size > len(body) - 8:
        raise WireError("body is not a safetensors buffer (header length exceeds the body)")
    try:
        header = json.loads(body[8 : 8 + size])
        meta = json.loads((header.get("__metadata__") or {}).get(META_KEY) or "{}")
        tensors = load(body)
    except (ValueError, SafetensorError, AttributeError) as err:
        raise WireError(f"body is not a valid safetensors buffer: {err}") from err
    if not isinstance(meta, dict):
        raise WireError(f"metadata {META_KEY!r} must be a JSON object")
    return tensors, meta


def batch_from_tensors(tensors: dict[str, torch.Tensor]) -> EncodedBatch:
    ids = tensors["input_ids"].long()
    score_index = tensors["score_index"].long()
    score_mask = tensors.get("score_mask", torch.ones_like(score_index)).bool()
    extras = {k[len(EXTRA_PREFIX) :]: v.long() for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return EncodedBatch(ids, tensors["attention_mask"].long(), score_index, score_mask, extras)


def batch_to_json(batch: EncodedBatch) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(batch, name).long().tolist() for name in BATCH_FIELDS}
    out["extras"] = {k: v.tolist() for k, v in batch.extras.items()}
    return out


def batch_tensors_from_json(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The /v1/tokenize JSON batch as the tensors /v1/scores takes back."""
    out = {name: torch.tensor(data[name], dtype=torch.long) for name in BATCH_FIELDS}
    out.update({EXTRA_PREFIX + k: torch.tensor(v, dtype=torch.long) for k, v in data.get("extras", {}).items()})
    return out
