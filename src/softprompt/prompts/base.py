"""The interface every prompt parametrisation implements.

A `SoftPrompt` is a small module whose parameters say what the prompt is; `materialize()` turns them into the one
value that says what it does to the model (`PromptInputs`: input-layer vectors, deep prompts, a key/value prefix, a
text-embedding update). How that value enters a model is `softprompt.models`' job, how the prompt is stored is
`softprompt.artifact`'s, how it is optimised is training's (gradients) or blackbox's (CMA-ES) — both call the same
three hooks:

    initialize(model, seed)      model-dependent starting values (vocabulary embeddings, ...)
    calibrate(model, examples)   frozen scales measured on the model (BBT's projection std, BBTv2's per-layer stds)
    param_groups(lr)             the optimiser's parameter groups (a method may want two learning rates)

and two for storage and export: `fold()` (the prompt an artifact stores: residual prompt tuning drops its MLP) and
`beyond_input_embeds()` (None when the prompt is only input-layer vectors, which a PEFT prompt-tuning adapter or an
`inputs_embeds` prefix can carry; else one line saying what it needs). A config sizes itself on a model from the
model's config alone: `PromptConfig.for_model(shape)` and `PromptConfig.count_parameters(shape)`.

`model` is any `ModelAccess`: a local evaluator on an in-process model, or a remote one behind HTTP.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs

if TYPE_CHECKING:
    from softprompt.models.dims import ModelDims
    from softprompt.tasks.base import Example


class ModelAccess(Protocol):
    """What a prompt may ask of the model it is made for (forward-only: no weights need to be visible)."""

    @property
    def hidden_size(self) -> int: ...

    @property
    def num_layers(self) -> int: ...

    def embedding_std(self) -> float: ...

    def vocab_embeddings(self, n: int, pool: int, seed: int) -> tuple[torch.Tensor, list[int]]:
        """n word embeddings of seeded vocabulary ids; endpoints that cannot embed tokens raise ValueError."""
        ...

    def text_embeddings(self, text: str, n: int) -> torch.Tensor: ...

    def hidden_state_stds(self, examples: Sequence[Example], prompt: PromptInputs) -> list[float]:
        """Per layer: the clipped std of the hidden states entering it on `examples` with `prompt` in place."""
        ...


@dataclass
class PromptConfig:
    """Base config; each method subclasses it with its own fields (PEFT style)."""

    method: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-2  # peak learning rate when the training config leaves it unset
    prompt_len: int = 100

    def __post_init__(self) -> None:
        if self.prompt_len <= 0:
            raise ValueError(f"prompt_len must be positive, got {self.prompt_len}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    def settings(self) -> dict[str, Any]:
        """What the user chose: every field but those the library sets on a model (marked "cli": False)."""
        chosen = {f.name for f in fields(self) if f.metadata.get("cli", True)}
        return {k: v for k, v in self.to_dict().items() if k == "method" or k in chosen}

    def for_model(self, shape: ModelDims) -> PromptConfig:
        """A copy with the fields a method takes from the model filled in (default: `num_layers`, if it has one)."""
        config = copy.deepcopy(self)
        if "num_layers" in {f.name for f in fields(config)}:
            config.num_layers = shape.num_layers  # type: ignore[attr-defined]
        return config

    def count_parameters(self, shape: ModelDims) -> int:
        """Trainable parameters on a model of this shape, from its config alone (builds the module, no weights).
        A method whose count needs more than the module (e.g. per-layer key/value widths) overrides this."""
        from softprompt.prompts import build_prompt

        return build_prompt(self.for_model(shape), shape.hidden_size).num_trainable_parameters()

    def storage_note(self) -> str | None:
        """One line for `softprompt info` when the stored prompt differs from what was trained. Default: None."""
        return None


class SoftPrompt(nn.Module):
    """Produces the prompt; subclasses define the parametrisation."""

    config: PromptConfig

    def __init__(self, config: PromptConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    @property
    def prompt_len(self) -> int:
        return self.config.prompt_len

    def materialize(self) -> PromptInputs:
        """What this prompt does to the model, as one row (differentiable when gradients are enabled)."""
        raise NotImplementedError

    def forward(self) -> PromptInputs:
        return self.materialize()

    def initialize(self, model: ModelAccess, seed: int) -> None:
        """Set initial values that depend on the model (e.g. sampled vocabulary embeddings). Default: nothing."""

    def calibrate(self, model: ModelAccess, examples: Sequence[Example]) -> None:
        """Measure the frozen scales this prompt needs on `model` (once, before tuning). Default: nothing."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; the default is every trainable parameter at `lr`."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def fold(self) -> SoftPrompt:
        """The prompt an artifact stores: the same `materialize()` with training-only structure removed (residual
        prompt tuning's MLP, prefix tuning's reparametrisation MLP). Default: the prompt itself."""
        return self

    def beyond_input_embeds(self) -> str | None:
        """None when this prompt is n input-layer vectors and nothing else (what a PEFT prompt-tuning adapter or an
        `inputs_embeds` prefix can carry); otherwise one line saying what else it needs."""
        with torch.no_grad():
            inputs = self.fold().materialize()
        extra = [
            what
            for what, present in (
                ("deep prompts at every layer", inputs.deep is not None),
                ("a key/value prefix at every layer", inputs.prefix_keys is not None),
                ("an update of the text's token embeddings", inputs.text_delta is not None),
                ("an attention gate on its positions", inputs.gate is not None),
            )
            if present
        ]
        if not extra and inputs.embeds is not None:
            return None
        what = " and ".join(extra) if extra else "no input-layer vectors"
        return f"a {self.config.method} prompt is not input-layer vectors alone: it has {what}"

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What an artifact stores: every persistent tensor (frozen random projections are non-persistent)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict())
        if set(tensors) != expected:
            raise ValueError(f"{self.config.method} prompt expects tensors {sorted(expected)}, got {sorted(tensors)}")
        for name, value in tensors.items():
            have = self.state_dict()[name].shape
            if value.shape != have:
                raise ValueError(f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(have)}")
        self.load_state_dict(tensors, strict=True)


def one_row(embeds: torch.Tensor, deep: torch.Tensor | None = None) -> PromptInputs:
    """PromptInputs of one prompt from its (n, D) input vectors and optional (L, n, D) deep prompts."""
    return PromptInputs(embeds=embeds.unsqueeze(0), deep=None if deep is None else deep.unsqueeze(1))
