"""Where the frozen model runs and in which dtype: `auto` picks what the hardware runs natively.

Device (`--device`, default `auto`):

    auto  -> cuda:LOCAL_RANK when launched as one of several processes on a CUDA machine (accelerate/torchrun),
             cuda:0 when CUDA is available, else cpu
    cuda  -> the same CUDA choice, an error where there is none;  cuda:N, cpu, mps -> as named (checked)

Dtype:

bf16 halves the weights' memory, but on a CPU without bf16 instructions every bf16 matmul is emulated and far
slower than fp32 (bench/dtype_matmul.py measures it). So `auto` means:

    CUDA device that supports bf16         -> bfloat16
    CPU whose flags include avx512_bf16 or amx_bf16 -> bfloat16
    anything else                          -> float32

`choose_device` / `choose_dtype` are the pure rules (facts in, choice and reason out); `resolve_device` /
`resolve_dtype` gather the facts from this machine and announce each choice once on stderr.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = ("auto", *DTYPES)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # as spelled in /proc/cpuinfo on Linux


def choose_device(requested: str, cuda_count: int, local_rank: int | None) -> tuple[torch.device, str]:
    """The device for `requested` (auto, cpu, cuda, cuda:N, mps), with the reason (pure: no look at the machine)."""
    name = requested.strip().lower()
    if name == "auto" and cuda_count == 0:
        return torch.device("cpu"), "no CUDA device"
    if name in ("auto", "cuda"):
        if cuda_count == 0:
            raise ValueError("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)")
        if local_rank is not None:
            index = local_rank % cuda_count
            return torch.device("cuda", index), f"process {local_rank} of a multi-process run, {cuda_count} GPU(s)"
        return torch.device("cuda", 0), f"{cuda_count} CUDA device(s)"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and (device.index or 0) >= cuda_count:
        raise ValueError(f"--device {requested}: this machine has {cuda_count} CUDA device(s)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {requested!r}; use auto, cpu, cuda, cuda:N or mps")
    return device, "as asked"


def resolve_device(device: str | torch.device = "auto", announce: bool = True) -> torch.device:
    """A torch device from `auto` or a name, checked against this machine (see `choose_device`)."""
    if isinstance(device, torch.device):
        return device
    rank = os.environ.get("LOCAL_RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    chosen, reason = choose_device(device, torch.cuda.device_count(), int(rank) if rank is not None else None)
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: the MPS backend is not available on this machine")
    if announce and chosen.type != "cpu":  # the CPU is what every machine has; say only when a GPU is used
        _announce(f"device: {chosen} ({device}: {reason})")
    return chosen


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


def dtype_name(dtype: torch.dtype) -> str:
    """`bfloat16` for torch.bfloat16: how summaries, result files and errors name a number format."""
    return str(dtype).removeprefix("torch.")


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu", announce: bool = True) -> torch.dtype:
    """A torch dtype from `auto`, a name (`float32`, `bfloat16`, `float16`) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = torch.device(device)
        flags = cpu_flags() if device.type == "cpu" else frozenset()
        chosen, reason = choose_dtype(device.type, flags, _cuda_bf16(device))
        if announce:
            _announce(f"dtype: {dtype_name(chosen)} (auto: {reason})")
        return chosen
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return getattr(torch, dtype)
