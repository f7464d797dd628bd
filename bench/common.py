"""Small helpers shared by the benchmarks: machine facts, markdown tables, and writing results.

Every benchmark writes `bench/results/<name>.json` (all numbers) and `bench/results/<name>.md` (a readable table),
both headed by the exact command line that produced them and the machine they ran on.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
LIBRARIES = ("softprompt", "torch", "transformers", "peft", "numpy")


def command_line() -> str:
    """The command as it was typed (interpreter name plus argv), shell-quoted so it can be pasted back."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, Any]:
    """Facts that decide how comparable two timings are: CPU, cores, threads, load, library versions."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": _library_versions(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    return info


def load_model(name: str, dtype: str = "auto") -> Any:
    """The benchmark's frozen `Backbone`: 'tiny' is a tiny random Llama (a seconds-long check of the script),
    anything else goes to `softprompt.models.load_backbone`."""
    if name == "tiny":
        import torch

        from softprompt.models.tiny import tiny_backbone

        backbone = tiny_backbone()
        if dtype != "auto":  # a smoke run of a dtype comparison needs the format it names
            backbone.model.to(dtype=getattr(torch, dtype))
        return backbone
    from softprompt.models import load_backbone

    return load_backbone(name, dtype=dtype)


def interleaved_rounds(
    modes: Mapping[K, Callable[[], T]], rounds: int, seed: int = 0, echo: str | None = None
) -> tuple[dict[K, list[float]], dict[K, T]]:
    """Call every mode once a round, in a fresh random order each round (`random.Random(seed)`), and time each call.

    Why: on a shared machine the load drifts; interleaving makes a drift hit every mode alike, so ratios taken from
    the same rounds compare like with like. Returns each mode's seconds per round and its output from the last round;
    with `echo`, prints `<echo> <mode> <seconds>` after each call (a long benchmark's progress).
    """
    rng = random.Random(seed)
    seconds: dict[K, list[float]] = {mode: [] for mode in modes}
    last: dict[K, T] = {}
    for _ in range(rounds):
        for mode in rng.sample(list(modes), len(modes)):
            started = time.perf_counter()
            last[mode] = modes[mode]()
            seconds[mode].append(time.perf_counter() - started)
            if echo is not None:
                label = " ".join(map(str, mode)) if isinstance(mode, tuple) else str(mode)
                print(f"{echo} {label}".lstrip(), round(seconds[mode][-1], 2), flush=True)
    return seconds, last


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; floats are shown with 3 significant decimals as given by the caller."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    name: str,
    results: dict[str, Any],
    markdown: str,
    machine: dict[str, Any] | None = None,
    results_dir: Path = RESULTS_DIR,
) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md`, both stamped with the command line, date and machine facts."""
    results_dir.mkdir(parents=True, exist_ok=True)
    command = command_line()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine if machine is not None else machine_info()

    json_path = results_dir / f"{name}.json"
    payload = {"benchmark": name, "command": command, "date": date, "machine": machine, **results}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")

    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    header = [
        f"# {name}",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {date}. Machine: {machine.get('cpu_model')}, {machine.get('cpus_usable')} usable CPUs, "
        f"torch threads: {machine.get('torch_threads')}. {versions}.",
        "",
        "",
    ]
    md_path = results_dir / f"{name}.md"
    md_path.write_text("\n".join(header) + markdown.rstrip() + "\n")
    return json_path, md_path
