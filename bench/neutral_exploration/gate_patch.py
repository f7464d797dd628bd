"""The gate before the library had one (PromptInputs.gate): `install()` patches CausalLMBackbone._run so that a
prompt scored through its key/value prefix gets GATE["g"] added to every attention logit on its prefix columns
(a 4-d float mask; GATE["g"] = None leaves the backbone as it is). Used by gate_step0.py and gate_train.py."""

import torch

from softprompt.models.causal import CausalLMBackbone

GATE: dict = {"g": None}
_original = CausalLMBackbone._run


def _run(self, x, batch):
    if GATE["g"] is None or x.cache is None:
        return _original(self, x, batch)
    rows, width = x.mask.shape
    t = x.embeds.shape[1]
    m = width - t  # prefix columns
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = torch.cat([torch.ones(t, m, dtype=torch.bool), causal], 1)[None] & x.mask.bool()[:, None, :]
    bias = torch.where(torch.arange(width) < m, GATE["g"], torch.zeros(())).expand(rows, t, width)
    mask = torch.where(allowed, bias, torch.tensor(torch.finfo(x.embeds.dtype).min))[:, None]
    out = self.model.base_model(
        inputs_embeds=x.embeds, attention_mask=mask, position_ids=x.positions, past_key_values=x.cache, use_cache=True
    )
    return out.last_hidden_state


def install() -> None:
    CausalLMBackbone._run = _run
