"""Prompt parametrisations: one module each, one registry to build them by method name."""

from __future__ import annotations

from typing import Any

from softprompt.prompts.base import PromptConfig, SoftPrompt
from softprompt.prompts.ulpt import ULPT, ULPTConfig
from softprompt.prompts.vanilla import PromptTuning, PromptTuningConfig

# method name -> (config class, module class). Other parametrisations register here.
REGISTRY: dict[str, tuple[type[PromptConfig], type[SoftPrompt]]] = {
    "prompt": (PromptTuningConfig, PromptTuning),
    "ulpt": (ULPTConfig, ULPT),
}


def register(config_class: type[PromptConfig], module_class: type[SoftPrompt]) -> None:
    REGISTRY[config_class.method] = (config_class, module_class)


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


# Black-box parametrisations (BBT, BBTv2) register themselves; imported here so artifacts load by method name.
import softprompt.blackbox.prompts  # noqa: E402, F401

__all__ = [
    "PromptConfig",
    "SoftPrompt",
    "PromptTuning",
    "PromptTuningConfig",
    "ULPT",
    "ULPTConfig",
    "REGISTRY",
    "build_prompt",
    "config_from_dict",
    "register",
]
