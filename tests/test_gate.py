"""A prompt's gate (`PromptInputs.gate`): a log-weight added to the attention logits on the prompt's columns.

Ground truth is the model's own forward: a gate of −∞ (here −1e4, whose exp is 0 in float32) gives exactly the bare
template on rotary-position decoders, a gate of 0 exactly the ungated prompt, through the inserted prompt, its
key/value prefix, a mixed batch and generation alike."""

from __future__ import annotations

import pytest
import torch
from mixed import assert_each_row_as_alone

from softprompt.models.backbone import Backbone
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone

CAUSAL = ["llama", "gemma3"]  # tiny Gemma has a 16-position sliding window on some layers
TEXTS = ["the movie was very good and fun . it is not boring at all , a film", "bad", "a film : it is not boring"]
HIDDEN = -1e4


@pytest.fixture(scope="module", params=CAUSAL)
def bb(request: pytest.FixtureRequest) -> Backbone:
    return tiny_backbone(request.param)


def continuations(bb: Backbone) -> list[list[int]]:
    ids = [bb.tokenize(w)[0] for w in ("good", "bad", "great", "fine")]
    return [ids[:3], ids[3:4], ids[:2]]


def prompt(bb: Backbone, n: int = 5, gate: float | None = None, seed: int = 0, deep: bool = False) -> PromptInputs:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, n, bb.hidden_size, generator=g) * 0.5
    layers = torch.randn(bb.num_layers, 1, n, bb.hidden_size, generator=g) * 0.5 if deep else None
    return PromptInputs(embeds=embeds, deep=layers, gate=None if gate is None else torch.tensor([gate]))


def hidden(bb: Backbone, p: PromptInputs | None, texts: list[str] = TEXTS) -> torch.Tensor:
    conts = continuations(bb)[: len(texts)]
    with torch.no_grad():
        return bb.hidden_states(bb.encode(texts, conts), p)


def test_a_closed_gate_is_the_bare_template_and_an_open_one_the_prompt(bb: Backbone) -> None:
    bare, ungated = hidden(bb, None), hidden(bb, prompt(bb))
    for deep in (False, True):
        torch.testing.assert_close(hidden(bb, prompt(bb, gate=HIDDEN, deep=deep)), bare, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden(bb, prompt(bb, gate=0.0)), ungated, atol=1e-5, rtol=1e-5)
    half = hidden(bb, prompt(bb, gate=-1.0))  # in between: neither
    assert not torch.allclose(half, bare, atol=1e-3) and not torch.allclose(half, ungated, atol=1e-3)


def test_the_gate_stays_with_the_prompts_key_value_prefix(bb: Backbone) -> None:
    for gate in (-1.0, HIDDEN):
        p = prompt(bb, gate=gate, deep=True)
        prefix = bb.prompt_prefix(p)
        assert prefix.embeds is None and prefix.gate is not None
        torch.testing.assert_close(hidden(bb, prefix), hidden(bb, p), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bb.as_prefix(p).gate, p.gate)


def test_mixed_batch_of_gated_and_ungated_rows_scores_each_row_as_alone(bb: Backbone) -> None:
    rows = [prompt(bb, 5, gate=-1.0, seed=1), bb.prompt_prefix(prompt(bb, 3, gate=-2.0, seed=2)), prompt(bb, 2)]
    conts = continuations(bb)
    assert_each_row_as_alone(bb, TEXTS, conts, rows)
    stacked = PromptInputs.stack(rows)
    assert stacked.gate.tolist() == [-1.0, -2.0, 0.0]  # the ungated row's gate is 0: its prompt as it is


def test_generation_with_gates_equals_one_by_one_and_a_closed_gate_the_bare_model(bb: Backbone) -> None:
    rows = [prompt(bb, 4, gate=-0.5, seed=3), PromptInputs(), prompt(bb, 2, gate=HIDDEN, seed=4)]
    batched = bb.generate(TEXTS, PromptInputs.stack(rows), max_new_tokens=8)
    assert batched == [bb.generate([t], row, max_new_tokens=8)[0] for t, row in zip(TEXTS, rows, strict=True)]
    closed = bb.generate(TEXTS, prompt(bb, 6, gate=HIDDEN, seed=5), max_new_tokens=8)
    assert closed == bb.generate(TEXTS, None, max_new_tokens=8)
    assert bb.generate(TEXTS, bb.prompt_prefix(prompt(bb, 6, gate=HIDDEN, seed=5)), max_new_tokens=8) == closed
    opened = bb.generate(TEXTS, prompt(bb, 6, gate=0.0, seed=5), max_new_tokens=8)
    assert opened == bb.generate(TEXTS, prompt(bb, 6, seed=5), max_new_tokens=8)


def test_gradients_reach_the_gate_and_the_prompt(bb: Backbone) -> None:
    p = prompt(bb, gate=-2.0)
    p.gate.requires_grad_(True)
    p.embeds.requires_grad_(True)
    bb.logits(bb.hidden_states(bb.encode(TEXTS), p), torch.tensor([5, 9])).sum().backward()
    assert p.gate.grad.abs() > 0 and p.embeds.grad.abs().sum() > 0


def test_eager_attention_is_gated_the_same() -> None:
    bb = tiny_backbone("llama")
    p = prompt(bb, gate=-1.5)
    sdpa = hidden(bb, p)
    bb.model.config._attn_implementation = "eager"
    try:
        torch.testing.assert_close(hidden(bb, p), sdpa, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hidden(bb, prompt(bb, gate=HIDDEN)), hidden(bb, None), atol=1e-5, rtol=1e-5)
    finally:
        bb.model.config._attn_implementation = "sdpa"


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoders_refuse_a_gate(arch: str) -> None:
    bb = tiny_backbone(arch)
    with pytest.raises(ValueError, match="gated prompt needs a decoder-only model"):
        hidden(bb, prompt(bb, gate=-1.0))


def test_a_gate_needs_a_prompt_and_one_number_per_row() -> None:
    with pytest.raises(ValueError, match="one number per row"):
        PromptInputs(gate=torch.tensor([0.0]))
    with pytest.raises(ValueError, match="one number per row"):
        PromptInputs(embeds=torch.zeros(1, 2, 4), gate=torch.tensor(0.0))
    with pytest.raises(ValueError, match="disagree on the number of rows"):
        PromptInputs(embeds=torch.zeros(2, 2, 4), gate=torch.zeros(3))


def test_blocks_that_take_the_mask_positionally_are_gated_against_the_models_own_masked_forward() -> None:
    """GPT-2 hands each block its attention mask positionally. Its positions are absolute, so a closed gate is not
    the bare template there; it is the model's own forward with the prompt in place and its columns masked out."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from softprompt.models.causal import CausalLMBackbone

    tok = tiny_backbone().tokenizer
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    bb = CausalLMBackbone(model, tok, name="tiny-gpt2", max_length=64)
    batch = bb.encode(["the movie was very good"])
    embeds = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(0))
    o, ids = bb.prompt_offset, batch.input_ids
    wte = model.get_input_embeddings()
    with torch.no_grad():
        inputs = torch.cat([wte(ids[:, :o]), embeds, wte(ids[:, o:])], dim=1)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long)
        mask[:, o : o + 5] = 0
        expected = model(inputs_embeds=inputs, attention_mask=mask).logits[0, -1]
        closed, opened, ungated = (
            bb.logits(bb.hidden_states(batch, PromptInputs(embeds=embeds, gate=gate))[:, 0])[0]
            for gate in (torch.tensor([HIDDEN]), torch.tensor([0.0]), None)
        )
    torch.testing.assert_close(closed, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(opened, ungated, atol=0, rtol=0)
    assert not torch.allclose(closed, ungated, atol=1e-3)
