"""Corrupt, odd or hostile artifact files end in one ArtifactError line: no traceback, hang or huge allocation.

Most cases re-sign the edited files (`resign`), so the structural check under test is reached, not the checksum.
"""

import hashlib
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save
from synthetic import synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.artifact import ArtifactError, PromptArtifact, metadata_digest, read_metadata
from softprompt.models.tiny import tiny_backbone

FILES = ("prompt.json", "prompt.safetensors")


@pytest.fixture()
def folder(tmp_path):
    backbone = tiny_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 5, rank=2), backbone, seed=0)
    return PromptArtifact(prompt, backbone.describe(), synthetic_task()).save_pretrained(tmp_path / "ulpt")


def resign(folder, tensor_bytes=None, edit=None):
    """Rewrite the artifact with new tensor bytes and/or an edited metadata dict, with valid checksums."""
    meta = json.loads((folder / "prompt.json").read_text())
    if tensor_bytes is not None:
        (folder / "prompt.safetensors").write_bytes(tensor_bytes)
        meta["tensors_sha256"] = hashlib.sha256(tensor_bytes).hexdigest()
    if edit is not None:
        edit(meta)
    meta["artifact_sha256"] = metadata_digest(meta)
    (folder / "prompt.json").write_text(json.dumps(meta))


def header_only(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype, shape, offsets, data):
    """A safetensors buffer holding one tensor "z" with the given (possibly lying) header."""
    return header_only({"z": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}, data)


def load(folder):
    return PromptArtifact.from_pretrained(folder, tiny_backbone())


def tensors_of(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "prompt.safetensors"))


# --- tensor file ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda data: data[: len(data) // 2], "beyond the"),  # truncated in the data region
        (lambda data: data[:20], "truncated"),  # truncated in the header
        (lambda data: data[:5], "shorter than its 8-byte"),
        (lambda data: b"", "shorter than its 8-byte"),
        (lambda data: os.urandom(64), "header declares"),  # garbage
        (lambda data: struct.pack("<Q", 2**60) + data[8:], "header declares"),
        (lambda data: struct.pack("<Q", 10) + b"[1,2,3,4,5]", "not a JSON object|not valid JSON"),
        (lambda data: entry("F32", [10**9], [0, 4 * 10**9], b""), "beyond"),
        (
            lambda data: entry("F32", [10**9], [0, 8], b"\0" * 8),
            "declares shape",
        ),
        (
            lambda data: header_only(
                {"z": {"dtype": "F32", "shape": [10**5, 10**5], "data_offsets": [0, 4]}}, b"\0" * 4
            ),
            "declares shape",
        ),
        (
            lambda data: entry("F32", [-1], [0, 4], b"\0" * 4),
            "invalid shape",
        ),
        (
            lambda data: entry("Q4", [1], [0, 4], b"\0" * 4),
            "unknown dtype",
        ),
        (
            lambda data: entry("F32", [1], [4, 8], b"\0" * 8),
            "starts at byte",
        ),
        (lambda data: header_only({"z": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "exactly dtype"),
        (lambda data: header_only({"z": [1, 2]}, b""), "exactly dtype"),
        (lambda data: header_only({"__metadata__": {"a": 1}}), "__metadata__"),
        (lambda data: header_only({"a": {"b": {"c": {"d": 1}}}}), "nested"),
    ],
    ids=[
        "truncated-data",
        "truncated-header",
        "5-bytes",
        "empty",
        "garbage",
        "huge-header",
        "list-header",
        "1e9-offsets",
        "1e9-shape",
        "1e10-shape",
        "negative-shape",
        "dtype",
        "hole",
        "no-offsets",
        "entry-list",
        "metadata-type",
        "deep-header",
    ],  # fmt: skip
)
def test_bad_tensor_files_are_refused_before_allocating(folder, make, message):
    resign(folder, tensor_bytes=make((folder / "prompt.safetensors").read_bytes()))
    with pytest.raises(ArtifactError, match=message):
        load(folder)


def test_truncated_tensor_file_without_resigning_is_caught(folder):
    data = (folder / "prompt.safetensors").read_bytes()
    (folder / "prompt.safetensors").write_bytes(data[:-4])
    with pytest.raises(ArtifactError, match="prompt.safetensors"):
        load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("shift"), "expects tensors"),
        (lambda t: t.update(extra=torch.zeros(3)), "expects tensors"),
        (lambda t: t.update(z=torch.zeros(7, 2)), "shape"),
        (lambda t: t.update(z=torch.zeros(5, 2, dtype=torch.int64)), "not floating point"),
        (lambda t: t["z"].__setitem__((0, 0), float("nan")), "non-finite"),
        (lambda t: t["scale"].__setitem__(3, float("inf")), "non-finite"),
    ],
    ids=["missing-key", "extra-key", "wrong-shape", "int-dtype", "nan", "inf"],
)
def test_wrong_tensors_are_refused(folder, change, message):
    tensors = tensors_of(folder)
    change(tensors)
    resign(folder, tensor_bytes=save(tensors))
    with pytest.raises(ArtifactError, match=message):
        load(folder)


# --- metadata file -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2, 3]", "JSON object, not a list"),
        ("42", "JSON object, not a int"),
        ('"prompt"', "JSON object, not a str"),
        ("null", "JSON object, not a NoneType"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested more than"),
        ("[" * 100_000, "nested more than"),
        ('{"format_version": NaN}', "NaN"),
        ('{"format_version": 2, "format_version": 1}', "twice"),
        ("\xff\xfe", "UTF-8|not valid JSON"),
        ("{broken", "not valid JSON"),
    ],
    ids=["list", "number", "string", "null", "deep-object", "deep-list", "nan", "duplicate", "binary", "broken"],
)
def test_bad_metadata_text_is_refused(folder, text, message):
    (folder / "prompt.json").write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    with pytest.raises(ArtifactError, match=message):
        load(folder)


def test_huge_metadata_is_refused_without_reading_it(folder):
    with open(folder / "prompt.json", "r+b") as f:
        f.truncate(1 << 40)  # a sparse 1 TB file: only its size is ever looked at
    with pytest.raises(ArtifactError, match="more than the"):
        load(folder)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dev-null", "directory"])
def test_only_regular_files_are_read(folder, name, kind):
    path = folder / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever without a writer
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero" if kind == "dev-zero" else "/dev/null")
    with pytest.raises(ArtifactError, match="not a regular file"):
        load(folder)


def test_a_symlink_to_a_regular_file_is_followed(folder, tmp_path):
    target = tmp_path / "elsewhere.safetensors"
    (folder / "prompt.safetensors").rename(target)
    (folder / "prompt.safetensors").symlink_to(target)
    assert load(folder).prompt.prompt_len == 5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["config"].update(colour="blue"), "unknown keys"),
        (lambda m: m["config"].update(rank="2"), "'rank' must be int"),
        (lambda m: m["config"].update(rank=2.0), "'rank' must be int"),
        (lambda m: m["config"].update(rank=True), "'rank' must be int"),
        (lambda m: m["config"].update(projection_seed=[1]), "'projection_seed' must be int"),
        (lambda m: m["config"].update(use_scale="yes"), "'use_scale' must be bool"),
        (lambda m: m["config"].update(distribution="cauchy"), "'distribution'"),
        (lambda m: m["config"].update(projection_scale="big"), "'projection_scale'"),
        (lambda m: m["config"].update(rank=-1), "rank must be positive"),
        (lambda m: m["config"].update(rank=10**9), "beyond what this build rebuilds"),
        (lambda m: m["config"].update(prompt_len=10**9), "beyond what this build rebuilds"),
        (lambda m: m["config"].update(method="lora"), "disagrees|unknown prompt method"),
        (lambda m: m.update(method="lora", config={**m["config"], "method": "lora"}), "unknown prompt method"),
        (lambda m: m.update(hidden_size=10**9), "hidden_size"),
        (lambda m: m.update(hidden_size="32"), "'hidden_size' must be int"),
        (lambda m: m.update(config=[1]), "'config' must be dict"),
        (lambda m: m.update(model="tiny"), "'model' must be dict"),
        (lambda m: m["model"].pop("fingerprint"), "fingerprint"),
        (lambda m: m.pop("method"), "missing field 'method'"),
        (lambda m: m.update(surprise=1), "unknown field 'surprise'"),
        (lambda m: m.update(task=[1]), "'task' must be"),
        (lambda m: m["task"].update(labels="negative"), "'labels' has the wrong type"),
        (lambda m: m["task"].update(kind="regression"), "'kind' has the wrong type"),
        (lambda m: m["task"].update(colour=1), "unknown field 'colour'"),
        (lambda m: m["task"].update(labels=["a", "b", "c"]), "verbalizer"),
        (lambda m: m["task"].update(template="{text.__class__}"), r"\{text.__class__\} is not allowed"),
        (lambda m: m["task"].update(template="{text[0]}"), "not allowed"),
        (lambda m: m["task"].update(template="{text:>999999999}"), "not allowed"),
        (lambda m: m["task"].update(template="{text!r}"), "not allowed"),
        (lambda m: m["task"].update(template="{0} {text}"), "not allowed"),
        (lambda m: m["task"].update(template="{text} {"), "malformed"),
    ],
)
def test_bad_metadata_values_are_refused(folder, edit, message):
    resign(folder, edit=edit)
    with pytest.raises(ArtifactError, match=message):
        load(folder)
    with pytest.raises(ArtifactError, match=message):
        read_metadata(folder)


def test_a_template_with_text_pair_is_accepted(folder):
    resign(folder, edit=lambda m: m["task"].update(template="{text} / {text_pair} :"))
    assert load(folder).task.template == "{text} / {text_pair} :"


@pytest.mark.parametrize("version", [3, 99, 0, True, "2", 2.0, None])
def test_unknown_format_versions_name_the_versions_this_build_reads(folder, version):
    resign(folder, edit=lambda m: m.update(format_version=version))
    with pytest.raises(ArtifactError, match="this build reads versions 1, 2"):
        load(folder)
