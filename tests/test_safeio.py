"""The bounded readers agree with the safetensors library and json on good input, and refuse bad input early."""

import json
import os
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from safetensors.torch import load, save

from softprompt.safeio import (
    UnsafeInputError,
    check_fields,
    json_depth,
    load_safetensors,
    parse_json,
    parse_safetensors_header,
    read_regular_file,
)


def test_every_buffer_the_safetensors_writer_makes_loads_identically(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 4, generator=g),
        "bf16": torch.randn(5, generator=g).bfloat16(),
        "f16": torch.randn(2, 2, 2, generator=g).half(),
        "f64": torch.randn(1, generator=g).double(),
        "i64": torch.arange(7),
        "u8": torch.arange(9, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    data = save(tensors, metadata={"json": '{"a": 1}'})
    got, metadata = load_safetensors(data)
    expected = load(data)
    assert got.keys() == expected.keys() == tensors.keys() and metadata == {"json": '{"a": 1}'}
    for name in tensors:
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name])
    entries, _ = parse_safetensors_header(data)
    assert {k: e.shape for k, e in entries.items()} == {k: tuple(t.shape) for k, t in tensors.items()}
    (tmp_path / "t.safetensors").write_bytes(data)
    assert torch.equal(load_safetensors(read_regular_file(tmp_path / "t.safetensors", len(data)))[0]["f32"],
                       tensors["f32"])  # fmt: skip


def test_json_depth_skips_brackets_inside_strings():
    assert json_depth('{"a": "[[[{{{", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert json_depth("[]") == 1 and json_depth("3") == 0
    text = json.dumps({"x": ["]" * 50, {"y": "\\[" * 10}]})
    assert json_depth(text) == 3 and parse_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["[" * 65 + "]" * 65, '{"a": Infinity}', '{"a": -Infinity}', "[NaN]", '{"a":1,"a":2}'])
def test_parse_json_refuses_deep_non_finite_and_ambiguous_json(text):
    with pytest.raises(UnsafeInputError):
        parse_json(text)


def test_parse_json_accepts_the_depth_limit_exactly():
    assert parse_json("[" * 64 + "]" * 64, max_depth=64) is not None
    with pytest.raises(UnsafeInputError, match="bytes, more than"):
        parse_json("[1, 2]", max_bytes=3)


def test_read_regular_file_checks_type_and_size(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"k": [1, 2]}')
    assert read_regular_file(path, 13) == path.read_bytes()
    with pytest.raises(UnsafeInputError, match="more than the 12"):
        read_regular_file(path, 12)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeInputError, match="not a regular file"):
        read_regular_file(fifo, 10)


@dataclass
class Settings:
    n: int = 1
    rate: float = 0.1
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    name: str | None = None
    ids: list[int] | None = None


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ({"n": 3, "rate": 1, "flag": True, "mode": "b", "name": None, "ids": [1, 2]}, True),
        ({}, True),
        ({"n": True}, False),
        ({"n": 1.0}, False),
        ({"rate": "0.1"}, False),
        ({"rate": False}, False),
        ({"flag": 1}, False),
        ({"mode": "c"}, False),
        ({"name": 3}, False),
        ({"ids": [1, "2"]}, False),
        ({"ids": 1}, False),
        ({"other": 1}, False),
    ],
)
def test_check_fields_follows_the_dataclass_types(data, ok):
    if ok:
        check_fields(Settings, data, "settings")
        Settings(**data)
    else:
        with pytest.raises(UnsafeInputError, match="settings"):
            check_fields(Settings, data, "settings")
