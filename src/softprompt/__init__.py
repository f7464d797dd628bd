"""softprompt: tune, store and serve tiny soft prompts for frozen language models."""

from softprompt.api import TunedPrompt, get_task, load, make_prompt_config, new_prompt, tune
from softprompt.artifact import PromptArtifact
from softprompt.models import DEFAULT_MODEL, load_backbone
from softprompt.prompts import PromptTuningConfig, ULPTConfig
from softprompt.training.trainer import TrainConfig
from softprompt.version import __version__

__all__ = [
    "Client",
    "DEFAULT_MODEL",
    "PromptArtifact",
    "PromptTuningConfig",
    "TrainConfig",
    "TunedPrompt",
    "ULPTConfig",
    "__version__",
    "get_task",
    "load",
    "load_backbone",
    "make_prompt_config",
    "new_prompt",
    "tune",
]


def __getattr__(name: str):
    if name == "Client":
        from softprompt.serving.client import Client

        return Client
    raise AttributeError(f"module 'softprompt' has no attribute {name!r}")
