"""Bounded, safe reading of files and buffers that may be corrupt or hostile: JSON, safetensors, config dicts.

Every reader checks before it spends: a path must be a regular file (`os.stat` before opening, so a FIFO, a device
or a symlink to /dev/zero is refused without blocking or reading forever) no larger than a cap; JSON must be small,
shallow (nesting is counted before the recursive parser runs) and free of NaN/Infinity; a safetensors buffer's
header is parsed here, with caps, and every tensor's shape × dtype size is checked against the bytes actually
present before anything is allocated. Failures raise `UnsafeInputError` (a ValueError) with one line naming the
problem. Artifacts, training checkpoints and prompt registries share these functions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import stat
import types
import typing
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_buffer

MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
MAX_HEADER_BYTES = 1 << 20  # a safetensors JSON header; ours are a few hundred bytes
MAX_TENSORS = 1024

# safetensors dtype -> bytes per element (the format's full list)
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class UnsafeInputError(ValueError):
    """A file or buffer is not what it must be (not a regular file, too big, too deep, malformed)."""


# --- files ----------------------------------------------------------------------------------------------------------
def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; FileNotFoundError if absent, UnsafeInputError otherwise."""
    before = os.stat(path)  # follows symlinks: a link to /dev/zero is judged by what it points to
    _check_regular(path, before, max_bytes)
    # O_NONBLOCK: should the path be swapped for a FIFO after the stat, opening still returns at once.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        after = os.fstat(f.fileno())
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeInputError(f"{path} changed while it was being opened")
        _check_regular(path, after, max_bytes)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeInputError(f"{path} is larger than the {max_bytes} bytes allowed")
    return data


def _check_regular(path: str | os.PathLike[str], st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeInputError(f"{path} is not a regular file")
    if st.st_size > max_bytes:
        raise UnsafeInputError(f"{path} is {st.st_size} bytes, more than the {max_bytes} allowed")


# --- JSON -----------------------------------------------------------------------------------------------------------
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON text, counted without recursion (brackets in strings skipped)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON with size and depth caps; NaN/Infinity tokens and duplicate object keys are refused."""
    if len(data) > max_bytes:
        raise UnsafeInputError(f"JSON is {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise UnsafeInputError(f"JSON is not UTF-8 text: {err}") from err
    if json_depth(text) > max_depth:
        raise UnsafeInputError(f"JSON is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, RecursionError) as err:
        raise UnsafeInputError(f"not valid JSON: {err}") from err


def _refuse_constant(token: str) -> None:
    raise UnsafeInputError(f"JSON holds {token}, which is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise UnsafeInputError(f"JSON object has the key {key!r} twice")
        seen.add(key)
    return dict(pairs)


def read_json_object(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON file whose top level must be an object."""
    value = parse_json(read_regular_file(path, max_bytes), max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise UnsafeInputError(f"{path} must hold a JSON object, not a {type(value).__name__}")
    return value


def dumps_strict(value: Any) -> str:
    """Compact, key-sorted JSON; raises ValueError on NaN/Infinity instead of writing invalid JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- safetensors ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def parse_safetensors_header(
    data: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES, max_tensors: int = MAX_TENSORS
) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Entries and `__metadata__` of a safetensors buffer, checked against the buffer's real length."""
    if len(data) < 8:
        raise UnsafeInputError("not a safetensors buffer: shorter than its 8-byte header length")
    size = int.from_bytes(data[:8], "little")
    if size > max_header_bytes:
        raise UnsafeInputError(f"safetensors header declares {size} bytes, more than the {max_header_bytes} allowed")
    if size > len(data) - 8:
        raise UnsafeInputError(f"safetensors header declares {size} bytes but only {len(data) - 8} follow (truncated)")
    header = parse_json(data[8 : 8 + size], max_bytes=max_header_bytes, max_depth=3)
    if not isinstance(header, dict):
        raise UnsafeInputError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UnsafeInputError("safetensors __metadata__ must map strings to strings")
    if len(header) > max_tensors:
        raise UnsafeInputError(f"safetensors buffer holds {len(header)} tensors, more than the {max_tensors} allowed")
    available = len(data) - 8 - size
    entries = {name: _entry(name, info, available) for name, info in header.items()}
    position = 0  # the data region must be tiled exactly, in offset order, as the format requires
    for name, e in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if e.begin != position:
            raise UnsafeInputError(f"safetensors tensor {name!r} starts at byte {e.begin}, expected {position}")
        position = e.end
    if position != available:
        raise UnsafeInputError(f"safetensors data region has {available} bytes but the tensors cover {position}")
    return entries, metadata


def _entry(name: str, info: Any, available: int) -> TensorEntry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise UnsafeInputError(f"safetensors entry {name!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise UnsafeInputError(f"safetensors tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise UnsafeInputError(f"safetensors tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise UnsafeInputError(f"safetensors tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= available:
        raise UnsafeInputError(
            f"safetensors tensor {name!r} spans bytes {begin}..{end}, beyond the {available} bytes present"
        )
    need = math.prod(shape) * DTYPE_SIZES[dtype]
    if need != end - begin:
        raise UnsafeInputError(
            f"safetensors tensor {name!r} declares shape {shape} ({need} bytes of {dtype}) "
            f"but spans {end - begin} bytes"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def load_safetensors(
    data: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES, max_tensors: int = MAX_TENSORS
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors buffer, validated first so that allocation never exceeds `len(data)`."""
    _, metadata = parse_safetensors_header(data, max_header_bytes=max_header_bytes, max_tensors=max_tensors)
    try:
        tensors = load_safetensors_buffer(data)
    except (SafetensorError, ValueError, TypeError) as err:  # e.g. a dtype this torch build lacks
        raise UnsafeInputError(f"not a valid safetensors buffer: {err}") from err
    return tensors, metadata


def read_safetensors(
    path: str | os.PathLike[str], max_bytes: int, **caps: int
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`load_safetensors` of a regular file of at most `max_bytes`."""
    data = read_regular_file(path, max_bytes)
    try:
        return load_safetensors(data, **caps)
    except UnsafeInputError as err:
        raise UnsafeInputError(f"{path}: {err}") from err


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or ±Inf."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


# --- dicts read from files into dataclasses -------------------------------------------------------------------------
def check_fields(cls: type, data: dict[str, Any], where: str) -> None:
    """Raise UnsafeInputError unless `data` holds only `cls`'s init fields, each of its declared type."""
    fields = _init_field_types(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UnsafeInputError(f"{where}: unknown keys {unknown} (known: {sorted(fields)})")
    for name, value in data.items():
        if not matches_type(value, fields[name]):
            raise UnsafeInputError(f"{where}: {name!r} must be {_type_name(fields[name])}, got {value!r:.80}")


@functools.lru_cache(maxsize=256)
def _init_field_types(cls: type) -> dict[str, Any]:
    """A dataclass's init fields and their resolved type hints (resolving costs ~1 ms a call: done once per class)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def matches_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (int, float, bool, str, None, Literal, X | Y, list[X], dict[K, V])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list) and all(matches_type(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(matches_type(v, args[1]) for v in value.values()))
    raise TypeError(f"check_fields cannot check the type {hint!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
