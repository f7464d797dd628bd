"""The mixed-batch ground truth every backbone test uses: each row of a batch of different prompts scores exactly what
that row's prompt gives its text alone; one prompt of every method; and a record of the key/value prefixes made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from softprompt.api import make_prompt_config, new_prompt
from softprompt.models.backbone import Backbone
from softprompt.models.inputs import PromptInputs


def assert_each_row_as_alone(
    bb: Backbone, texts: Sequence[str], conts: Sequence[Sequence[int]], rows: Sequence[PromptInputs]
) -> torch.Tensor:
    """Score `texts` with `PromptInputs.stack(rows)` in one batch, check every row against it alone (1e-5), and
    return the batch's hidden states."""
    with torch.no_grad():
        mixed = bb.hidden_states(bb.encode(texts, conts), PromptInputs.stack(rows))
        for i, (text, cont) in enumerate(zip(texts, conts, strict=True)):
            alone = bb.hidden_states(bb.encode([text], [cont]), rows[i])
            torch.testing.assert_close(mixed[i, : len(cont)], alone[0], atol=1e-5, rtol=1e-5)
    return mixed


def method_prompts(backbone) -> dict[str, torch.nn.Module]:
    """One prompt of each new method (and variant), initialised on `backbone` and moved off its start values so a
    dropped or misplaced part would show."""
    configs = {
        "dpt": make_prompt_config("dpt", 3, rank=2),
        "dept": make_prompt_config("dept", 2, rank=2, text_len=5),
        "residual": make_prompt_config("residual", 4, bottleneck=8),
        "ulpt": make_prompt_config("ulpt", 5, rank=2),
        "ulpt-projection": make_prompt_config("ulpt", 3, rank=2, tune="projection"),
        "ulpt-no-shift": make_prompt_config("ulpt", 2, rank=2, use_shift=False),
        "prefix": make_prompt_config("prefix", 2),  # the other helper's method: key/value prefixes in the same batch
    }
    if backbone.prefix_in_cache:  # a gate is for decoders
        configs["ulpt-neutral"] = make_prompt_config("ulpt", 4, rank=2, neutral_init=True)
    prompts = {}
    g = torch.Generator().manual_seed(0)
    for i, (name, config) in enumerate(configs.items()):
        prompt = new_prompt(config, backbone, seed=i)
        with torch.no_grad():
            for p in prompt.parameters():
                if p.requires_grad:  # frozen constants (an ablated shift) are not stored, by design
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)
            if name == "ulpt-neutral":
                prompt.gate.fill_(-1.0)  # half open: the gate's offset must show
        prompts[name] = prompt
    return prompts


def record_prefixes(backbone: Backbone, monkeypatch: Any) -> list[PromptInputs]:
    """The prompts `backbone.prompt_prefix` is asked to turn into a key/value prefix from now on (a live list)."""
    made: list[PromptInputs] = []
    original = backbone.prompt_prefix
    monkeypatch.setattr(backbone, "prompt_prefix", lambda p: made.append(p) or original(p))
    return made
