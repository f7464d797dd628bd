"""How prompts enter a frozen model: one `Backbone` interface, one adapter per architecture family."""

from softprompt.models.backbone import Backbone, EncodedBatch, GenerationOptions
from softprompt.models.causal import CausalLMBackbone
from softprompt.models.loading import DEFAULT_MODEL, EMBEDDED, cache_dir, load_backbone

__all__ = [
    "Backbone",
    "EncodedBatch",
    "GenerationOptions",
    "CausalLMBackbone",
    "DEFAULT_MODEL",
    "EMBEDDED",
    "cache_dir",
    "load_backbone",
]
