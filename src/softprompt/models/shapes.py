"""What a prompt's size depends on, read from a model's config alone (no weights): `ModelShape`.

`softprompt params --model NAME` counts every method's parameters from it, and `PromptConfig.for_model` fills the
fields a method takes from the model (BBTv2's depth, DePT's text length). Small config files for the models the
ULPT paper reports on ship in `softprompt/models/configs/` (only the fields read here); any other name is a local
`config.json` (file or folder) or a Hugging Face hub id, read with transformers' AutoConfig.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden_size: int
    num_layers: int  # decoder-only: the layers; encoder-decoder: the encoder's
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_decoder_layers: int = 0  # encoder-decoder models only
    max_positions: int | None = None  # None: relative or ALiBi positions (no fixed limit)
    max_length: int = 256  # text tokens per example (the CLI's --max-length)


def known_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def from_config(config: Any, name: str, max_length: int = 256) -> ModelShape:
    """The shape of a transformers `PretrainedConfig` (T5, Bloom, Llama, Gemma 3, ... naming all handled)."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or hidden // heads)
    decoder = int(getattr(config, "num_decoder_layers", 0) or 0) if getattr(config, "is_encoder_decoder", False) else 0
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return ModelShape(name, hidden, int(config.num_hidden_layers), heads, kv_heads, head_dim, decoder,
                      int(positions) if positions else None, max_length)  # fmt: skip


def load_shape(name: str, max_length: int = 256) -> ModelShape:
    """A shipped config by name (`known_configs()`), a config.json file or folder, or a hub id."""
    from transformers import AutoConfig

    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    path = Path(name)
    shipped = CONFIG_DIR / f"{name.lower()}.json"
    if shipped.is_file() or (path.is_file() and path.suffix == ".json"):
        source = shipped if shipped.is_file() else path
        try:
            values = json.loads(source.read_text())
            config = AutoConfig.for_model(values.pop("model_type"), **values)
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise ValueError(f"{source}: not a model config ({type(err).__name__}: {err})") from err
        return from_config(config, path.stem if source == path else name.lower(), max_length)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"no model config {name!r}: not a shipped one ({', '.join(known_configs())}), "
            f"a config.json file or folder, or a reachable hub id ({str(err).splitlines()[0]})"
        ) from err
    return from_config(config, name, max_length)


def shape_of(backbone: Any) -> ModelShape:
    """The shape of a loaded `Backbone` (its config, its --max-length)."""
    return from_config(backbone.config, backbone.name, backbone.max_length)
