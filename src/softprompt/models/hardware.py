"""Which dtype the frozen weights get: `auto` picks bfloat16 only where the hardware runs it natively.

bf16 halves the weights' memory, but on a CPU without bf16 instructions every bf16 matmul is emulated and far
slower than fp32 (bench/dtype_matmul.py measures it). So `auto` means:

    CUDA device that supports bf16         -> bfloat16
    CPU whose flags include avx512_bf16 or amx_bf16 -> bfloat16
    anything else                          -> float32

`choose_dtype` is the pure rule (device type and CPU flags in, dtype and reason out); `resolve_dtype` gathers the
facts from this machine and announces the choice once on stderr.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = ("auto", *DTYPES)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # as spelled in /proc/cpuinfo on Linux


def choose_dtype(device_type: str, cpu_flags: frozenset[str], cuda_bf16: bool = False) -> tuple[torch.dtype, str]:
    """The `auto` dtype for a device, with the reason in words (pure: no look at the machine)."""
    if device_type == "cuda":
        if cuda_bf16:
            return torch.bfloat16, "this CUDA device runs bf16 natively"
        return torch.float32, "this CUDA device has no bf16 support"
    if device_type != "cpu":
        return torch.float32, f"bf16 support on {device_type!r} devices is not checked"
    native = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags]
    if native:
        return torch.bfloat16, f"this CPU has {'/'.join(f.upper() for f in native)}"
    return torch.float32, "this CPU has no AVX512-BF16/AMX"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (Linux); empty where that file is absent or unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling; every core lists the same set
            return frozenset(value.split())
    return frozenset()


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@functools.cache
def _announce(line: str) -> None:
    """Print each distinct choice once per process, however many models are loaded."""
    print(line, file=sys.stderr)


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu", announce: bool = True) -> torch.dtype:
    """A torch dtype from `auto`, a name (`float32`, `bfloat16`, `float16`) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = torch.device(device)
        flags = cpu_flags() if device.type == "cpu" else frozenset()
        chosen, reason = choose_dtype(device.type, flags, _cuda_bf16(device))
        if announce:
            _announce(f"dtype: {str(chosen).removeprefix('torch.')} (auto: {reason})")
        return chosen
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return getattr(torch, dtype)
