"""Export a prompt to other engines, and import PEFT prompt-tuning adapters.

    PEFT prompt tuning (causal LM):  inputs_embeds = cat(P, embed(ids))      P = adapter_model["prompt_embeddings"]
    vLLM prompt_embeds:              prompt_embeds = cat(P, embed(ids))      (the same sequence, built by the user)

Both formats hold one (n, D) matrix placed in front of the text, which is what softprompt's causal models do with a
prompt whose `materialize()` is input-layer vectors only (prompt_tuning, ulpt, bbt). Prompts that also change deeper
layers (bbtv2's deep prompts), carry a key/value prefix or edit text embeddings cannot be written in these formats,
and are refused with one line. Only causal models are exported: there the prompt sits at position 0 exactly as PEFT
puts it (a masked LM keeps its [CLS] first; PEFT would not).

Import reads `adapter_config.json` and `adapter_model.safetensors` with softprompt's bounded safe readers (a pickled
`adapter_model.bin` is never opened) and makes a prompt_tuning artifact for the model it is registered on. A prompt
on another model than its own gives wrong answers without an error (an equal hidden size proves nothing), so import
also refuses an adapter made for another model, unless told otherwise (`allow_other_base_model`):

    softprompt's own export (its weights' metadata holds the model's fingerprint):   the fingerprints are equal
    any other adapter naming base_model_name_or_path:   that name is the model's (`--model`) or, for an embedded
        model, the hub id it was converted from; or one of the two is a folder with the other's last path part.
        Case-insensitive: HuggingFaceTB/SmolLM2-135M-Instruct = smollm2-135m-instruct = /models/SmolLM2-135M-Instruct,
        but someone/SmolLM2-135M-Instruct is another model (a hub id names its owner: another's may be a fine-tune)
    an adapter naming no base model:   the hidden size only
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from softprompt.artifact import MAX_TENSOR_BYTES, ArtifactError, PromptArtifact
from softprompt.fileio import atomic_write, atomic_write_text
from softprompt.models.backbone import Backbone
from softprompt.prompts import PromptTuningConfig, build_prompt
from softprompt.safeio import UnsafeInputError, non_finite, read_json_object, read_safetensors
from softprompt.tasks.base import Task
from softprompt.version import __version__

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"
EMBEDS_FILE = "prompt_embeds.safetensors"
EMBEDS_KEY = "prompt_embeds"
EXPORTABLE_KINDS = ("causal",)
FINGERPRINT_KEY = "softprompt_model_fingerprint"  # in the safetensors metadata of softprompt's PEFT export
ALLOW_FLAG = "--allow-other-base-model"
# The hub models the embedded models were converted from (what a PEFT adapter tuned on them names).
EMBEDDED_SOURCES = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
}
HUB_ID = re.compile(r"[^/.\s][^/\s]*/[^/\s]+")


class ExportError(ValueError):
    """The prompt cannot be written in (or read from) the asked format."""


def prompt_matrix(artifact: PromptArtifact, fmt: str) -> torch.Tensor:
    """The prompt's (n, D) input-layer vectors, if that is all the prompt does to a causal model."""
    kind = artifact.model.get("kind")
    if kind not in EXPORTABLE_KINDS:
        raise ExportError(
            f"cannot export to {fmt}: the prompt was tuned on a {kind or 'unknown'} model; {fmt} export puts the "
            f"prompt in front of a causal LM's input ({', '.join(EXPORTABLE_KINDS)} models only)"
        )
    beyond = artifact.prompt.beyond_input_embeds()  # the prompt's own account of what else it does to the model
    if beyond is not None:
        raise ExportError(f"cannot export to {fmt}: {beyond}, and the format holds only input-layer vectors "
                          "(prompt_tuning, ulpt and bbt prompts export)")  # fmt: skip
    with torch.no_grad():
        inputs = artifact.prompt.fold().materialize()
    return inputs.embeds[0].detach().to(torch.float32).cpu().contiguous()


def _prepare_out(out: str | os.PathLike[str], files: tuple[str, ...], overwrite: bool) -> Path:
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    present = [name for name in files if (folder / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{folder} already holds {', '.join(present)}; pass --overwrite to replace")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_peft(
    artifact: PromptArtifact,
    out: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PEFT prompt-tuning adapter (adapter_config.json + adapter_model.safetensors) that
    `PeftModel.from_pretrained(model, out)` loads. `base_model` is recorded as base_model_name_or_path
    (default: the name of the model the prompt was tuned on)."""
    matrix = prompt_matrix(artifact, "peft")
    folder = _prepare_out(out, (PEFT_CONFIG, PEFT_WEIGHTS), overwrite)
    n, dim = matrix.shape
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": n,
        "token_dim": dim,
        "num_transformer_submodules": 1,
        "num_attention_heads": artifact.model.get("num_attention_heads"),
        "num_layers": artifact.model.get("num_layers"),
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": base_model or artifact.model.get("name"),
        "revision": None,
        "inference_mode": True,
        "auto_mapping": None,
        "modules_to_save": None,
    }
    weights = safetensors_bytes({PEFT_KEY: matrix}, metadata=_peft_metadata(artifact))
    atomic_write(folder / PEFT_WEIGHTS, lambda p: Path(p).write_bytes(weights))
    atomic_write_text(folder / PEFT_CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def _peft_metadata(artifact: PromptArtifact) -> dict[str, str]:
    """PEFT reads only "format"; the model's name and fingerprint let `import_peft` check the model it is put on."""
    metadata = {"format": "pt", "softprompt_model": str(artifact.model.get("name")), "softprompt_version": __version__}
    fingerprint = artifact.model.get("fingerprint")
    if isinstance(fingerprint, str) and fingerprint:
        metadata[FINGERPRINT_KEY] = fingerprint
    return metadata


def export_embeds(artifact: PromptArtifact, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the materialised (n, D) prompt as safetensors, with a README of the lines a vLLM user runs."""
    matrix = prompt_matrix(artifact, "embeds")
    folder = _prepare_out(out, (EMBEDS_FILE, "README.md"), overwrite)
    template = artifact.task.template if artifact.task else "{text}"
    metadata = {
        "model": str(artifact.model.get("name")),
        "model_fingerprint": str(artifact.model.get("fingerprint")),
        "method": artifact.method,
        "template": template,
        "softprompt_version": __version__,
    }
    data = safetensors_bytes({EMBEDS_KEY: matrix}, metadata=metadata)
    atomic_write(folder / EMBEDS_FILE, lambda p: Path(p).write_bytes(data))
    readme = EMBEDS_README.format(
        n=matrix.shape[0], dim=matrix.shape[1], method=artifact.method, model=metadata["model"], template=template
    )
    atomic_write_text(folder / "README.md", readme)
    return folder


EMBEDS_README = """# Soft prompt as `prompt_embeds`

`{file}` holds `{key}`: the materialised {method} prompt, {n} vectors of size {dim} (float32), tuned on
`{model}`. It goes in front of the embedded text, exactly where softprompt puts it; the text is the task template
`{template!r}` filled in. With vLLM (`prompt_embeds` input, vLLM >= 0.10):

```python
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams

MODEL = "..."  # the model the prompt was tuned on ({model})
prompt = load_file("{file}")["{key}"]
tokenizer = AutoTokenizer.from_pretrained(MODEL)
embedding = AutoModelForCausalLM.from_pretrained(MODEL).get_input_embeddings()
text = {template!r}.format(text="a gripping, well acted film")
with torch.no_grad():
    text_embeds = embedding(tokenizer(text, return_tensors="pt").input_ids[0])
prompt_embeds = torch.cat([prompt.to(text_embeds.dtype), text_embeds])  # (n + tokens, D)

llm = LLM(model=MODEL, enable_prompt_embeds=True)
out = llm.generate({{"prompt_embeds": prompt_embeds}}, SamplingParams(max_tokens=8, temperature=0))
print(out[0].outputs[0].text)
```
""".replace("{file}", EMBEDS_FILE).replace("{key}", EMBEDS_KEY)


def model_names(backbone: Backbone) -> list[str]:
    """The names `backbone` goes by: the one it was loaded under and, for an embedded model, the hub id it was
    converted from (or, loaded by that hub id, the embedded name)."""
    name = backbone.name.lower()
    aliases = [hub for embedded, hub in EMBEDDED_SOURCES.items() if embedded == name]
    aliases += [embedded for embedded, hub in EMBEDDED_SOURCES.items() if hub.lower() == name]
    return [backbone.name, *aliases]


def _normalised(name: str) -> str:
    return name.strip().rstrip("/").lower()


def _is_folder(name: str) -> bool:
    """A local path: it has a '/' but is not a hub id (owner/name)."""
    return "/" in name and not HUB_ID.fullmatch(name)


def same_model(named: str, names: Iterable[str]) -> bool:
    """Whether an adapter's base_model_name_or_path means one of `names` (the rule in the module docstring)."""
    wanted = _normalised(named)
    for name in map(_normalised, names):
        if wanted == name:
            return True
        if (_is_folder(wanted) or _is_folder(name)) and wanted.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1]:
            return True
    return False


def check_base_model(config: dict[str, Any], metadata: dict[str, str], backbone: Backbone) -> None:
    """Refuse an adapter made for another model than `backbone`: by fingerprint where softprompt exported it, else by
    the base model it names (see the module docstring)."""
    base = config.get("base_model_name_or_path")
    fingerprint = (metadata or {}).get(FINGERPRINT_KEY)
    if fingerprint is not None:
        if fingerprint != backbone.fingerprint:
            made_on = (metadata or {}).get("softprompt_model") or base
            raise ExportError(
                f"the adapter was exported from {made_on!r} (fingerprint {fingerprint!r}), not from "
                f"{backbone.name!r} (fingerprint {backbone.fingerprint!r}); pass {ALLOW_FLAG} to import it anyway"
            )
        return
    if isinstance(base, str) and base.strip() and not same_model(base, model_names(backbone)):
        raise ExportError(
            f"the adapter was tuned on {base!r}, not {backbone.name!r}; pass {ALLOW_FLAG} to import it anyway"
        )


def import_peft(
    directory: str | os.PathLike[str],
    backbone: Backbone,
    *,
    task: Task | None = None,
    allow_other_base_model: bool = False,
) -> PromptArtifact:
    """A PEFT prompt-tuning adapter folder -> a prompt_tuning artifact for `backbone` (checked: type, base model,
    shape, values); `allow_other_base_model` skips the base-model check (the hidden size is still checked)."""
    folder = Path(directory)
    try:
        config = read_json_object(folder / PEFT_CONFIG)
    except FileNotFoundError as err:
        raise ExportError(f"{folder} is not a PEFT adapter: {PEFT_CONFIG} not found") from err
    except UnsafeInputError as err:
        raise ExportError(f"{folder / PEFT_CONFIG}: {err}") from err
    peft_type = config.get("peft_type")
    if peft_type != "PROMPT_TUNING":
        raise ExportError(f"only PEFT prompt-tuning adapters can be imported; {folder} holds a {peft_type} adapter")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise ExportError(f"only causal-LM prompt-tuning adapters can be imported, not {config.get('task_type')}")
    if config.get("num_transformer_submodules") not in (None, 1):
        raise ExportError("only adapters with one transformer submodule (decoder-only models) can be imported")
    if backbone.kind not in EXPORTABLE_KINDS:
        raise ExportError(f"a PEFT causal-LM prompt cannot be registered on a {backbone.kind} model")
    weights = folder / PEFT_WEIGHTS
    if not weights.exists():
        unsafe = (
            " (adapter_model.bin is a pickle; softprompt never unpickles)"
            if (folder / "adapter_model.bin").exists()
            else ""
        )
        raise ExportError(f"{folder}: {PEFT_WEIGHTS} not found{unsafe}")
    try:
        tensors, metadata = read_safetensors(weights, MAX_TENSOR_BYTES)
    except UnsafeInputError as err:
        raise ExportError(str(err)) from err
    if not allow_other_base_model:
        check_base_model(config, metadata, backbone)
    if set(tensors) != {PEFT_KEY}:
        raise ExportError(f"{weights}: expected the one tensor {PEFT_KEY!r}, found {sorted(tensors)}")
    matrix = tensors[PEFT_KEY]
    n = config.get("num_virtual_tokens")
    if matrix.dim() != 2 or not matrix.is_floating_point() or (isinstance(n, int) and matrix.shape[0] != n):
        raise ExportError(
            f"{weights}: {PEFT_KEY} must be a float matrix of num_virtual_tokens ({n}) rows, "
            f"got {matrix.dtype} of shape {tuple(matrix.shape)}"
        )
    if matrix.shape[1] != backbone.hidden_size:
        raise ExportError(
            f"the adapter's prompt has vectors of size {matrix.shape[1]}, but {backbone.name} has hidden size "
            f"{backbone.hidden_size} (it was made for another model)"
        )
    if non_finite({PEFT_KEY: matrix}):
        raise ExportError(f"{weights}: {PEFT_KEY} holds non-finite values (NaN or Inf)")
    prompt = build_prompt(PromptTuningConfig(prompt_len=matrix.shape[0]), backbone.hidden_size)
    prompt.load_state_tensors({"embedding": matrix.to(torch.float32)})
    extra: dict[str, Any] = {
        "imported_from": "peft",
        "peft_version": str(config.get("peft_version")),
        "peft_base_model": str(config.get("base_model_name_or_path")),
    }
    artifact = PromptArtifact(prompt, backbone.describe(), task, extra=extra)
    try:
        PromptArtifact.from_bytes(artifact.to_bytes(), backbone)  # the same checks as any stored artifact
    except ArtifactError as err:
        raise ExportError(f"{folder}: {err}") from err
    return artifact
