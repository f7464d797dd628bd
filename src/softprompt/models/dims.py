"""`ModelDims`: the sizes a prompt method's parameter count depends on, read from a model config alone (no weights).

    hidden_size    D, the width of the input embeddings (input-layer prompts are n×D)
    num_layers     L, the blocks a per-layer prompt enters (an encoder-decoder's encoder blocks)
    num_kv_heads   H, key/value heads of one attention layer (grouped-query attention: fewer than query heads)
    head_dim       d, the width of one head's keys and values
    max_length     text tokens per example (a backbone's --max-length; None from a config alone): DePT's s

A key/value prefix of m slots is L·m·H·d keys and as many values. Each family names these differently (T5: d_model,
num_layers, num_heads, d_kv; BERT/RoBERTa: hidden_size, num_hidden_layers, num_attention_heads; Llama-style:
num_key_value_heads and head_dim; GPT-2/Bloom: n_embd, n_layer, n_head), so they are read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelDims:
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_length: int | None = None

    @classmethod
    def from_config(cls, config: Any, max_length: int | None = None) -> ModelDims:
        """The sizes of a Hugging Face config (or a dict of one); multimodal configs use their text model's."""
        if isinstance(config, dict):
            from types import SimpleNamespace

            text = config.get("text_config")
            config = SimpleNamespace(**(text if isinstance(text, dict) else config))
        elif hasattr(config, "get_text_config"):
            config = config.get_text_config()

        def first(*names: str) -> Any:
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    return value
            return None

        hidden = first("d_model", "hidden_size", "n_embd")
        layers = first("encoder_layers", "num_layers", "num_hidden_layers", "n_layer")  # BART/T5: encoder depth
        heads = first("encoder_attention_heads", "num_heads", "num_attention_heads", "n_head")
        if hidden is None or layers is None or heads is None:
            raise ValueError(f"cannot read hidden size, layer count and head count from {type(config).__name__}")
        kv_heads = first("num_key_value_heads") or heads
        head_dim = first("d_kv", "head_dim") or hidden // heads
        return cls(int(hidden), int(layers), int(kv_heads), int(head_dim), max_length)

    @property
    def kv_width(self) -> int:
        """H·d: one position's keys (or values) in one layer."""
        return self.num_kv_heads * self.head_dim
