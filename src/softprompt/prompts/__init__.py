"""Prompt parametrisations: one module each, one registry to build them by method name."""

from __future__ import annotations

from typing import Any

from softprompt.prompts.base import PromptConfig, SoftPrompt
from softprompt.prompts.bbt import BBT, BBTConfig, BBTv2, BBTv2Config
from softprompt.prompts.dept import DePT, DePTConfig
from softprompt.prompts.dpt import DPT, DPTConfig
from softprompt.prompts.prefix import PrefixConfig, PrefixTuning
from softprompt.prompts.prompt_tuning import PromptTuning, PromptTuningConfig
from softprompt.prompts.residual import ResidualConfig, ResidualPrompt
from softprompt.prompts.ulpt import ULPT, ULPTConfig

# method name -> (config class, module class): how an artifact's "method" becomes a module again.
REGISTRY: dict[str, tuple[type[PromptConfig], type[SoftPrompt]]] = {
    "prompt_tuning": (PromptTuningConfig, PromptTuning),
    "ulpt": (ULPTConfig, ULPT),
    "bbt": (BBTConfig, BBT),
    "bbtv2": (BBTv2Config, BBTv2),
    "dpt": (DPTConfig, DPT),
    "dept": (DePTConfig, DePT),
    "residual": (ResidualConfig, ResidualPrompt),
    "prefix": (PrefixConfig, PrefixTuning),
}


def config_from_dict(d: dict[str, Any]) -> PromptConfig:
    d = dict(d)
    method = d.pop("method", None)
    if method not in REGISTRY:
        raise ValueError(f"unknown prompt method {method!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[method][0](**d)


def build_prompt(config: PromptConfig, hidden_size: int) -> SoftPrompt:
    """An uninitialised prompt module (call `.initialize(backbone, seed)` for a fresh one, or load tensors)."""
    if config.method not in REGISTRY:
        raise ValueError(f"unknown prompt method {config.method!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[config.method][1](config, hidden_size)


__all__ = [
    "BBT",
    "BBTConfig",
    "BBTv2",
    "BBTv2Config",
    "DePT",
    "DePTConfig",
    "DPT",
    "DPTConfig",
    "PrefixConfig",
    "PrefixTuning",
    "PromptConfig",
    "SoftPrompt",
    "PromptTuning",
    "PromptTuningConfig",
    "ResidualConfig",
    "ResidualPrompt",
    "ULPT",
    "ULPTConfig",
    "REGISTRY",
    "build_prompt",
    "config_from_dict",
]
