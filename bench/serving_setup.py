"""Shared set-up of the serving benchmarks: the real model, SST-2 dev sentences, many distinct tuned-looking prompts,
and an in-memory prompt source (the benchmarks time the engine, not the registry's storage)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.api import get_task, new_prompt
from softprompt.artifact import PromptArtifact
from softprompt.models import Backbone, load_backbone
from softprompt.prompts import ULPTConfig

SST2_DEV = Path(__file__).resolve().parents[1] / "data" / "glue" / "SST-2" / "dev.tsv"


def serving_backbone(model: str) -> Backbone:
    """The benchmarks' model: a loadable name, or 'tiny' for a tiny random Llama (a quick check)."""
    if model == "tiny":
        from softprompt.models.tiny import tiny_backbone

        return tiny_backbone("llama", max_length=256)
    return load_backbone(model)


def sst2_sentences(count: int) -> list[str]:
    """The first `count` sentences of the repository's SST-2 dev set (typical review lengths)."""
    lines = SST2_DEV.read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:count]]


@dataclass(frozen=True)
class Record:
    tenant: str
    name: str
    version: int
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}@{self.version}"


class StaticPrompts:
    """`PromptSource` over a fixed dict: ref -> (record, artifact)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[Record, PromptArtifact]] = {}

    def add(self, tenant: str, name: str, artifact: PromptArtifact) -> None:
        blob = artifact.to_bytes()
        self.items[name] = (Record(tenant, name, 1, hashlib.sha256(blob).hexdigest()), artifact)

    def get(self, caller: str, ref: str) -> tuple[Record, PromptArtifact]:
        return self.items[ref]

    def stats(self) -> dict:
        return {"size": len(self.items)}


def ulpt_prompts(backbone: Backbone, count: int, prompt_len: int) -> StaticPrompts:
    """`count` distinct ULPT r=2 prompts on SST-2 (each its own projection seed and random z, shift, scale), one per
    tenant, named p0, p1, ..."""
    source, task = StaticPrompts(), get_task("sst2")
    for i in range(count):
        prompt = new_prompt(ULPTConfig(prompt_len=prompt_len, rank=2, projection_seed=i), backbone, seed=i)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in prompt.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        source.add(f"t{i}", f"p{i}", PromptArtifact(prompt, backbone.describe(), task))
    return source
