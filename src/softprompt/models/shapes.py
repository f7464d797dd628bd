"""A model's `ModelDims` from its name or config file alone (no weights), for `softprompt params`.

Small config files for the models the ULPT paper reports on and the embedded models ship in
`softprompt/models/configs/` (only the fields `ModelDims` reads; the embedded models also go by the names --model
takes); any other name is a local `config.json` (file or folder) or a Hugging Face hub id, read with transformers'
AutoConfig.
"""

from __future__ import annotations

import json
from pathlib import Path

from softprompt.models.dims import ModelDims
from softprompt.models.loading import EMBEDDED

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def known_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_shape(name: str, max_length: int = 256) -> ModelDims:
    """A shipped config by name (`known_configs()`), a config.json file or folder, or a hub id; `max_length` is the
    text length a run would use (the CLI's --max-length)."""
    from transformers import AutoConfig

    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if name.lower().startswith("tiny-"):  # the tiny random test models every command takes: built, they are tiny
        from softprompt.models.tiny import tiny_backbone_named

        return ModelDims.from_config(tiny_backbone_named(name.lower(), max_length).model.config, max_length)
    path = Path(name)
    embedded = EMBEDDED.get(name.lower())  # an embedded model by the name --model takes
    shipped = CONFIG_DIR / f"{embedded.shape if embedded else name.lower()}.json"
    if shipped.is_file() or (path.is_file() and path.suffix == ".json"):
        source = shipped if shipped.is_file() else path
        try:
            values = json.loads(source.read_text())
            config = AutoConfig.for_model(values.pop("model_type"), **values)
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise ValueError(f"{source}: not a model config ({type(err).__name__}: {err})") from err
        return ModelDims.from_config(config, max_length)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"no model config {name!r}: not a shipped one ({', '.join(known_configs())}), "
            f"a config.json file or folder, or a reachable hub id ({str(err).splitlines()[0]})"
        ) from err
    return ModelDims.from_config(config, max_length)
