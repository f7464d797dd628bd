"""Loading: the `auto` dtype rule on fake machines, its use by load_backbone and the CLI, and explicit dtypes."""

import argparse

import pytest
import torch

from softprompt.cli.common import add_model_args, backbone_from_args
from softprompt.models import hardware, load_backbone
from softprompt.models.hardware import choose_device, choose_dtype, cpu_flags, resolve_dtype

AVX2_ONLY = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2".split())
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX512_NO_BF16 | {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize(
    ("device", "flags", "cuda_bf16", "expected", "reason"),
    [
        ("cpu", AVX2_ONLY, False, torch.float32, "this CPU has no AVX512-BF16/AMX"),
        ("cpu", AVX512_NO_BF16, False, torch.float32, "this CPU has no AVX512-BF16/AMX"),
        ("cpu", frozenset(), False, torch.float32, "this CPU has no AVX512-BF16/AMX"),
        ("cpu", AVX512_NO_BF16 | {"avx512_bf16"}, False, torch.bfloat16, "this CPU has AVX512_BF16"),
        ("cpu", AVX2_ONLY | {"amx_bf16"}, False, torch.bfloat16, "this CPU has AMX_BF16"),
        ("cpu", SAPPHIRE_RAPIDS, False, torch.bfloat16, "this CPU has AVX512_BF16/AMX_BF16"),
        ("cuda", frozenset(), True, torch.bfloat16, "this CUDA device runs bf16 natively"),
        ("cuda", SAPPHIRE_RAPIDS, False, torch.float32, "this CUDA device has no bf16 support"),
        ("mps", SAPPHIRE_RAPIDS, False, torch.float32, "bf16 support on 'mps' devices is not checked"),
    ],
)
def test_auto_dtype_rule(device, flags, cuda_bf16, expected, reason):
    assert choose_dtype(device, flags, cuda_bf16) == (expected, reason)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # not Linux: no flags, so auto stays float32


EXPLICIT = [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]


@pytest.mark.parametrize(("name", "expected"), [*EXPLICIT, (torch.bfloat16, torch.bfloat16)])
def test_explicit_dtypes_pass_through(name, expected):
    assert resolve_dtype(name) is expected


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8")


def dtype_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("dtype:")]  # not progress bars


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, torch.float32), (SAPPHIRE_RAPIDS, torch.bfloat16)])
def test_load_backbone_defaults_to_auto_and_says_so(tiny_model_dir, monkeypatch, capsys, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    hardware._announce.cache_clear()
    backbone = load_backbone(tiny_model_dir)
    assert {p.dtype for p in backbone.model.parameters()} == {expected}
    line = f"dtype: {str(expected).removeprefix('torch.')} (auto: {choose_dtype('cpu', flags)[1]})"
    assert dtype_lines(capsys) == [line]
    load_backbone(tiny_model_dir)
    assert dtype_lines(capsys) == []  # the same choice is announced once per process


def test_explicit_dtype_overrides_auto_silently(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2_ONLY)
    hardware._announce.cache_clear()
    backbone = load_backbone(tiny_model_dir, dtype="bfloat16")
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
    assert dtype_lines(capsys) == []


def test_cli_dtype_option():
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    assert parser.parse_args([]).dtype == "auto"
    for name in ("auto", "float32", "bfloat16", "float16"):
        assert parser.parse_args(["--dtype", name]).dtype == name
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "int8"])


def fake_embedded(monkeypatch, tmp_path, package: str, assembled: bool) -> None:
    from softprompt.models import loading

    entry = loading.EmbeddedModel(
        package, "m.gguf", f"{package.replace('_', '-')}==1.0", shape="smollm2-135m", assembled=assembled
    )
    monkeypatch.setitem(loading.EMBEDDED, "fake", entry)
    monkeypatch.setenv("SOFTPROMPT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("assembled", [False, True])
def test_missing_embedded_package_says_what_to_install(monkeypatch, tmp_path, assembled):
    fake_embedded(monkeypatch, tmp_path, "no_such_model_pkg", assembled)
    with pytest.raises(FileNotFoundError, match=r"pip install no-such-model-pkg==1\.0"):
        load_backbone("fake")


def test_missing_part_package_says_what_to_install(monkeypatch, tmp_path):
    package = tmp_path / "pkgs" / "fake_joined_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def assemble(output_path):\n    import fake_joined_pkg_part1\n")
    monkeypatch.syspath_prepend(str(package.parent))
    fake_embedded(monkeypatch, tmp_path, "fake_joined_pkg", assembled=True)
    with pytest.raises(FileNotFoundError, match=r"pip install fake-joined-pkg==1\.0"):
        load_backbone("fake")
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # the half-built folder is gone


def test_interrupted_first_load_leaves_no_cache(monkeypatch, tmp_path):
    """A first load that dies half-way (here: the disk fills while the GGUF is joined) leaves nothing behind."""
    from softprompt.models import loading

    package = tmp_path / "pkgs" / "fake_broken_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def assemble(output_path):\n    Path(output_path).write_bytes(b'GGUF')\n    raise OSError('disk full')\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    fake_embedded(monkeypatch, tmp_path, "fake_broken_pkg", assembled=True)
    with pytest.raises(OSError, match="disk full"):
        loading.materialise_embedded("fake")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_a_first_load_that_loses_the_race_uses_the_winners_cache(monkeypatch, tmp_path):
    """Parallel runs on a fresh machine all build the cache; the first rename wins and the others use its copy."""
    from softprompt.models import loading

    fake_embedded(monkeypatch, tmp_path, "fake_racing_pkg", assembled=False)
    target = tmp_path / "cache" / "models" / "fake"

    def build_while_another_process_finishes(entry, workdir):
        out = workdir / "model"
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"mine")
        target.mkdir(parents=True)  # the other process renamed its folder in meanwhile
        (target / "model.safetensors").write_bytes(b"theirs")
        return out

    monkeypatch.setattr(loading, "_dequantise", build_while_another_process_finishes)
    assert loading.materialise_embedded("fake") == target
    assert (target / "model.safetensors").read_bytes() == b"theirs"
    assert [p.name for p in target.parent.iterdir()] == ["fake"]  # this process's folder is gone


@pytest.mark.parametrize(
    ("requested", "gpus", "local_rank", "expected"),
    [
        ("auto", 0, None, "cpu"),
        ("auto", 0, 1, "cpu"),  # a multi-process CPU run (gloo) stays on the CPU
        ("auto", 2, None, "cuda:0"),
        ("auto", 2, 3, "cuda:1"),  # accelerate/torchrun: process LOCAL_RANK takes GPU LOCAL_RANK (mod the count)
        ("cuda", 4, 2, "cuda:2"),
        ("cuda:1", 2, None, "cuda:1"),
        ("CPU", 2, 0, "cpu"),  # asked for: the CPU even on a GPU machine
    ],
)
def test_device_rule(requested, gpus, local_rank, expected):
    assert choose_device(requested, gpus, local_rank)[0] == torch.device(expected)


@pytest.mark.parametrize(
    ("requested", "gpus", "message"),
    [("cuda", 0, "no CUDA device"), ("cuda:2", 2, "has 2 CUDA device"), ("gpu", 1, "unknown device"),
     ("meta", 1, "unsupported device")],
)  # fmt: skip
def test_device_rule_errors(requested, gpus, message):
    with pytest.raises(ValueError, match=message):
        choose_device(requested, gpus, None)


def test_cli_device_option_reaches_the_model(tiny_model_dir):
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    args = parser.parse_args(["--model", str(tiny_model_dir)])
    assert args.device == "auto"
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert backbone_from_args(args).device == expected
    args = parser.parse_args(["--model", str(tiny_model_dir), "--device", "cpu"])
    assert backbone_from_args(args).device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_on_a_machine_without_one_is_one_clear_line(tiny_model_dir, capsys):
    from softprompt.cli import main

    assert main(["serve-lm", "--model", str(tiny_model_dir), "--device", "cuda"]) == 2  # at load, before serving
    assert capsys.readouterr().err.strip().endswith("no CUDA device (torch.cuda.is_available() is False)")


def test_check_model_fails_as_loading_would_without_loading(monkeypatch, tmp_path, tiny_model_dir):
    """What a sweep asks once before its first run: the same error `load_backbone` raises, or none where it loads."""
    from softprompt.models.loading import check_model

    def outcome(call, name):
        try:
            call(name)
        except (ValueError, FileNotFoundError) as err:
            return type(err).__name__, str(err)
        return None

    fake_embedded(monkeypatch, tmp_path, "no_such_model_pkg", assembled=False)
    names = ["tiny-llama-steerable", "tiny-bogus", str(tiny_model_dir), str(tmp_path / "no-model"), "fake"]
    for name in names:
        assert outcome(check_model, name) == outcome(load_backbone, name), name
    assert outcome(check_model, "fake")[1].endswith("pip install no-such-model-pkg==1.0")
    assert "did you mean" not in outcome(check_model, str(tmp_path / "no-model"))[1]
    built = tmp_path / "cache" / "models" / "fake"  # built once: the package is no longer needed
    built.mkdir(parents=True)
    (built / "model.safetensors").write_bytes(b"")
    assert outcome(check_model, "fake") is None
