"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is `step-XXXXXXXX.safetensors` + `step-XXXXXXXX.json` inside a folder, plus `latest.json` naming the
newest complete pair. Files are written under temporary names and renamed, and `latest.json` is replaced last, so a
process killed at any instant (kill -9) leaves the previous checkpoint intact and loadable. Loading never executes
code from the files, so a checkpoint from an untrusted source can at worst hold wrong numbers.
Gradient training and black-box search both use this module (through softprompt.runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from softprompt.fileio import atomic_write, atomic_write_text

LATEST = "latest.json"


def save_checkpoint(folder: str | os.PathLike[str], step: int, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    atomic_write(
        folder / f"{stem}.safetensors", lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, p)
    )
    atomic_write_text(folder / f"{stem}.json", json.dumps(state))
    atomic_write_text(folder / LATEST, json.dumps({"stem": stem, "step": step}))
    for old in folder.glob("step-*"):  # keep only the newest pair
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    return folder / stem


def load_checkpoint(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(folder)
    pointer = folder / LATEST
    if not pointer.exists():
        raise FileNotFoundError(f"no checkpoint to resume from in {folder}")
    stem = json.loads(pointer.read_text())["stem"]
    return load_file(str(folder / f"{stem}.safetensors")), json.loads((folder / f"{stem}.json").read_text())


def has_checkpoint(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / LATEST).exists()


# --- optimiser and RNG state as flat tensors + JSON -----------------------------------------------------------------
def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {
        f"optim.{pid}.{key}": value if torch.is_tensor(value) else torch.tensor(value)
        for pid, slots in sd["state"].items()
        for key, value in slots.items()
    }
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
