"""Small helpers shared by the benchmarks: machine facts, markdown tables, and writing results.

Every benchmark writes `bench/results/<name>.json` (all numbers) and `bench/results/<name>.md` (a readable table),
both headed by the exact command line that produced them and the machine they ran on.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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
