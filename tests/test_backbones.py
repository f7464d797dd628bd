"""Every adapter against its own model: exact logits, prompt batching, deep prompts, gradients and shapes."""

from __future__ import annotations

import inspect

import pytest
import torch
from mixed import assert_each_row_as_alone

from softprompt.models.backbone import Backbone, EncodedBatch, cache_keyword
from softprompt.models.inputs import PromptInputs
from softprompt.models.loading import backbone_class
from softprompt.models.masked import MaskedLMBackbone
from softprompt.models.seq2seq import Seq2SeqBackbone
from softprompt.models.tiny import tiny_backbone

ARCHS = ["llama", "gemma3", "t5", "roberta"]
# Rows of different lengths, so that padding bugs show up as row-dependent results.
TEXTS = ["the movie was very good and fun .", "bad", "a film : it is not boring ? yes"]
N_PROMPT = 3


@pytest.fixture(scope="module", params=ARCHS)
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return tiny_backbone(request.param)


def continuations(bb: Backbone) -> list[list[int]]:
    ids = [bb.tokenize(w)[0] for w in ("good", "bad", "great", "fine", "awful")]
    return [ids[:3], ids[3:4], ids[:2]]


def reference_logits(bb: Backbone, batch: EncodedBatch) -> torch.Tensor:
    """The model's own full forward (LM head included), gathered at the score positions: (B, S, V)."""
    with torch.no_grad():
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if bb.kind == "seq2seq":
            kwargs |= {k: batch.extras[k] for k in ("decoder_input_ids", "decoder_attention_mask")}
        logits = bb.model(**kwargs).logits
    return logits.gather(1, batch.score_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def random_prompt(bb: Backbone, rows: int = 1, seed: int = 0, scale: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, N_PROMPT, bb.hidden_size, generator=g) * scale


def random_deep(bb: Backbone, rows: int = 1, seed: int = 1, n: int = N_PROMPT) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bb.num_layers, rows, n, bb.hidden_size, generator=g) * 0.5


def inputs(prompt: torch.Tensor | None, deep: torch.Tensor | None = None) -> PromptInputs:
    return PromptInputs(embeds=prompt, deep=deep)


@pytest.mark.parametrize("multi", [False, True])
def test_restricted_logits_match_full_forward(backbone: Backbone, multi: bool) -> None:
    batch = backbone.encode(TEXTS, continuations(backbone) if multi else None)
    expected = reference_logits(backbone, batch)
    with torch.no_grad():
        hidden = backbone.hidden_states(batch)
        full = backbone.logits(hidden)
        ids = torch.tensor([5, 17, 9, 30])
        restricted = backbone.logits(hidden, ids)
    real = batch.score_mask
    torch.testing.assert_close(full[real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(restricted[real], expected[real][:, ids], atol=1e-5, rtol=1e-5)


def test_label_logits_are_float32_products_under_bfloat16() -> None:
    """The K label rows are multiplied in float32: a bfloat16 product would round each logit to 8 bits."""
    bb = tiny_backbone("llama")
    bb.model.to(torch.bfloat16)
    hidden = (torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(0)) * 40).to(torch.bfloat16)
    ids = torch.tensor([5, 17, 9, 30])
    weight = bb.model.get_output_embeddings().weight[ids]
    with torch.no_grad():
        got = bb.logits(hidden, ids)
        expected = hidden.float() @ weight.float().T
        rounded = (hidden @ weight.T).float()  # what a bfloat16 product returns
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(rounded, expected, rtol=1e-6, atol=1e-6)


def test_t5_without_output_rescaling_is_still_exact() -> None:
    bb = tiny_backbone("t5", seed=1)
    bb.model.config.scale_decoder_outputs = False  # T5 v1.1 style: no d_model**-0.5 before the LM head
    batch = bb.encode(TEXTS)
    with torch.no_grad():
        got = bb.logits(bb.hidden_states(batch))
    assert bb.output_scale == 1.0
    torch.testing.assert_close(got, reference_logits(bb, batch), atol=1e-5, rtol=1e-5)


def test_bart_final_logits_bias_is_included() -> None:
    from softprompt.models.tiny import tiny_bart_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_bart_lm(len(tok))
    model.final_logits_bias.normal_()
    bb = Seq2SeqBackbone(model, tok, name="tiny-bart")
    batch = bb.encode(TEXTS, continuations(bb))
    with torch.no_grad():
        got = bb.logits(bb.hidden_states(batch))
    real = batch.score_mask
    torch.testing.assert_close(got[real], reference_logits(bb, batch)[real], atol=1e-5, rtol=1e-5)


def test_shared_prompt_broadcasts(backbone: Backbone) -> None:
    batch = backbone.encode(TEXTS, continuations(backbone))
    prompt, deep = random_prompt(backbone), random_deep(backbone)
    with torch.no_grad():
        one = backbone.hidden_states(batch, inputs(prompt, deep))
        many = backbone.hidden_states(
            batch, inputs(prompt.expand(len(TEXTS), -1, -1), deep.expand(-1, len(TEXTS), -1, -1))
        )
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)


def test_per_row_prompts_equal_rows_one_at_a_time(backbone: Backbone) -> None:
    conts = continuations(backbone)
    prompts, deep = random_prompt(backbone, rows=len(TEXTS)), random_deep(backbone, rows=len(TEXTS))
    with torch.no_grad():
        batched = backbone.hidden_states(backbone.encode(TEXTS, conts), inputs(prompts, deep))
        for i, (text, cont) in enumerate(zip(TEXTS, conts, strict=True)):
            alone = backbone.hidden_states(
                backbone.encode([text], [cont]), inputs(prompts[i : i + 1], deep[:, i : i + 1])
            )
            torch.testing.assert_close(batched[i, : len(cont)], alone[0], atol=1e-5, rtol=1e-5)


def test_deep_prompt_zero_is_identity_and_nonzero_matters(backbone: Backbone) -> None:
    batch = backbone.encode(TEXTS)
    prompt = random_prompt(backbone)
    zeros = torch.zeros(backbone.num_layers, 1, N_PROMPT, backbone.hidden_size)
    with torch.no_grad():
        plain = backbone.hidden_states(batch, inputs(prompt))
        with_zeros = backbone.hidden_states(batch, inputs(prompt, zeros))
        with_deep = backbone.hidden_states(batch, inputs(prompt, random_deep(backbone)))
        without_prompt = backbone.hidden_states(batch)
    torch.testing.assert_close(with_zeros, plain, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(with_deep, plain, atol=1e-4)
    assert not torch.allclose(plain, without_prompt, atol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        backbone.hidden_states(batch, inputs(prompt, zeros[:1]))


def test_gradient_reaches_prompt_only(backbone: Backbone) -> None:
    batch = backbone.encode(TEXTS, continuations(backbone))
    prompt = random_prompt(backbone).requires_grad_(True)
    deep = random_deep(backbone).requires_grad_(True)
    backbone.logits(backbone.hidden_states(batch, inputs(prompt, deep)), torch.tensor([5, 9])).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert deep.grad is not None and deep.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


def test_multi_token_score_positions(backbone: Backbone) -> None:
    conts = continuations(backbone)
    batch = backbone.encode(TEXTS, conts)
    assert batch.score_index.shape == batch.score_mask.shape == (3, 3)
    assert batch.score_mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    index = batch.score_index
    if backbone.kind == "causal":  # consecutive positions ending just before the last continuation token
        for i, cont in enumerate(conts):
            pos = index[i, : len(cont)]
            assert (pos.diff() == 1).all()
            assert batch.input_ids[i, pos[1:]].tolist() == cont[:-1]
    elif backbone.kind == "seq2seq":  # decoder steps 0..m-1, fed [start] + continuation[:-1]
        dec = batch.extras["decoder_input_ids"]
        assert dec.shape == (3, 3) and batch.extras["decoder_attention_mask"].shape == (3, 3)
        assert index.tolist() == [[0, 1, 2], [0, 0, 0], [0, 1, 0]]
        for i, cont in enumerate(conts):
            assert dec[i, : len(cont)].tolist() == [backbone.decoder_start_token_id, *cont[:-1]]
    else:  # one <mask> per continuation token, right before the final special token
        mask_id = backbone.tokenizer.mask_token_id
        for i, cont in enumerate(conts):
            pos = index[i, : len(cont)]
            assert (batch.input_ids[i, pos] == mask_id).all()
            assert (batch.input_ids[i] == mask_id).sum() == len(cont)
            assert batch.input_ids[i, pos[-1] + 1] == backbone.tokenizer.eos_token_id
    hidden = backbone.hidden_states(batch)
    assert hidden.shape == (3, 3, backbone.hidden_size)
    # no continuation: one score position per row
    assert backbone.encode(TEXTS).score_index.shape == (3, 1)


def test_truncation_keeps_the_answer_slots(backbone: Backbone) -> None:
    short = type(backbone)(backbone.model, backbone.tokenizer, name="short", max_length=6)
    batch = short.encode(["the movie was very good and fun and great ."], [continuations(backbone)[0]])
    assert batch.num_truncated == 1
    assert batch.input_ids.shape[1] <= 6 + 2  # causal rows also carry the fed continuation
    with torch.no_grad():
        assert short.hidden_states(batch).shape == (1, 3, backbone.hidden_size)


def test_dispatch_and_generation() -> None:
    t5, roberta = tiny_backbone("t5"), tiny_backbone("roberta")
    assert backbone_class(t5.config) is Seq2SeqBackbone
    assert backbone_class(roberta.config) is MaskedLMBackbone
    out = t5.generate(["the movie was good"], inputs(random_prompt(t5)), max_new_tokens=3)
    assert len(out) == 1 and isinstance(out[0], str)
    with pytest.raises(NotImplementedError, match="masked LM"):
        roberta.generate(["the movie"], None)


# --- the prompt-input seam: one batch mixing prompts of different methods and lengths --------------------------------
def method_mix(bb: Backbone) -> list[PromptInputs]:
    """One row each: a plain prompt (PT/ULPT-like), a longer one with deep prompts (BBTv2-like), a short one with a
    text-embedding update (DePT-like), and no prompt at all."""
    g = torch.Generator().manual_seed(3)
    d = bb.hidden_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.5

    return [
        PromptInputs(embeds=rand(1, 2, d)),
        PromptInputs(embeds=rand(1, 5, d), deep=rand(bb.num_layers, 1, 5, d)),
        PromptInputs(embeds=rand(1, 1, d), text_delta=rand(1, 4, d)),
        PromptInputs(),
    ]


def test_mixed_batch_of_methods_and_lengths_scores_each_row_as_alone(backbone: Backbone) -> None:
    texts = [*TEXTS, "good fun"]
    conts = [*continuations(backbone), continuations(backbone)[1]]
    rows = method_mix(backbone)
    mixed = assert_each_row_as_alone(backbone, texts, conts, rows)
    # the rows really differ from having no prompt (a broken insert that drops prompts would pass the above)
    with torch.no_grad():
        bare = backbone.hidden_states(backbone.encode(texts, conts))
    for i in range(3):
        assert not torch.allclose(mixed[i, :1], bare[i, :1], atol=1e-4)


def test_mixed_batch_gradients_reach_every_rows_prompt(backbone: Backbone) -> None:
    rows = method_mix(backbone)[:3]
    for row in rows:
        for t in (row.embeds, row.deep, row.text_delta):
            if t is not None:
                t.requires_grad_(True)
    hidden = backbone.hidden_states(backbone.encode(TEXTS), PromptInputs.stack(rows))
    backbone.logits(hidden, torch.tensor([5, 9])).sum().backward()
    for row in rows:
        for t in (row.embeds, row.deep, row.text_delta):
            if t is not None:
                assert t.grad is not None and t.grad.abs().sum() > 0


def test_block_wrappers_leave_the_model_untouched_outside_softprompt(backbone: Backbone) -> None:
    batch = backbone.encode(TEXTS)
    with torch.no_grad():
        before = reference_logits(backbone, batch)
        backbone.hidden_states(batch, inputs(random_prompt(backbone), random_deep(backbone)))  # sets, then clears
        after = reference_logits(backbone, batch)
    torch.testing.assert_close(before, after, atol=0, rtol=0)


def test_concurrent_calls_do_not_see_each_others_prompts(backbone: Backbone) -> None:
    """No lock: two threads with different deep prompts each get exactly their single-threaded result."""
    from concurrent.futures import ThreadPoolExecutor

    batch = backbone.encode(TEXTS)
    jobs = [inputs(random_prompt(backbone, seed=s), random_deep(backbone, seed=s + 10)) for s in range(4)]
    with torch.no_grad():
        expected = [backbone.hidden_states(batch, job) for job in jobs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda job: backbone.hidden_states(batch, job), jobs * 3))
    for i, out in enumerate(got):
        torch.testing.assert_close(out, expected[i % 4], atol=1e-6, rtol=1e-6)


CAUSAL = ["llama", "gemma3"]


@pytest.mark.parametrize("arch", CAUSAL)
def test_prompt_prefix_acts_exactly_like_the_inserted_prompt(arch: str) -> None:
    """The prompt's own keys/values, computed once, stand in for it (deep prompts included): same scores."""
    bb = tiny_backbone(arch)
    batch = bb.encode(TEXTS, continuations(bb))
    for prompt in (inputs(random_prompt(bb)), inputs(random_prompt(bb), random_deep(bb))):
        prefix = bb.prompt_prefix(prompt)
        assert prefix.prefix_len == N_PROMPT and prefix.embeds is None
        with torch.no_grad():
            torch.testing.assert_close(bb.hidden_states(batch, prefix), bb.hidden_states(batch, prompt), atol=1e-5,
                                       rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("arch", CAUSAL)
def test_mixed_batch_with_key_value_prefixes_of_different_lengths(arch: str) -> None:
    bb = tiny_backbone(arch)
    texts, conts = TEXTS, continuations(bb)
    rows = [
        bb.prompt_prefix(inputs(random_prompt(bb, seed=1))),  # 3 slots
        bb.prompt_prefix(inputs(torch.randn(1, 6, bb.hidden_size) * 0.5)),  # 6 slots
        inputs(random_prompt(bb, seed=2)),  # an input-layer prompt, no prefix
    ]
    assert_each_row_as_alone(bb, texts, conts, rows)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "t5"])
def test_batched_generation_equals_one_by_one(arch: str) -> None:
    """Greedy decoding of a mixed batch (different prompts, lengths, a deep prompt) gives each row's own answer,
    and the first token is the argmax of the scoring path's logits."""
    bb = tiny_backbone(arch)
    texts = ["the movie was very good and fun .", "bad", "a film : it is not boring"]
    rows = [inputs(random_prompt(bb, seed=1)), inputs(torch.randn(1, 5, bb.hidden_size) * 0.5,
            random_deep(bb, seed=4, n=5)), PromptInputs()]  # fmt: skip
    batched = bb.generate(texts, PromptInputs.stack(rows), max_new_tokens=4)
    alone = [bb.generate([t], row, max_new_tokens=4)[0] for t, row in zip(texts, rows, strict=True)]
    assert batched == alone
    with torch.no_grad():
        first = bb.logits(bb.hidden_states(bb.encode(texts), PromptInputs.stack(rows))[:, 0]).argmax(-1)
    for i, text in enumerate(batched):
        if text:  # an immediate end-of-sequence gives ""
            assert bb.tokenizer.decode([int(first[i])], skip_special_tokens=True).strip() == text.split()[0]


def test_sampling_is_seeded_and_stop_strings_cut() -> None:
    bb = tiny_backbone("llama")
    a = bb.generate(["the movie"], max_new_tokens=6, do_sample=True, temperature=2.0, seed=3)
    b = bb.generate(["the movie"], max_new_tokens=6, do_sample=True, temperature=2.0, seed=3)
    assert a == b
    full = bb.generate(["the movie"], max_new_tokens=6)[0]
    if len(full.split()) >= 2:
        word = full.split()[1]
        cut = bb.generate(["the movie"], max_new_tokens=6, stop=[word])[0]
        assert word not in cut and full.startswith(cut)


class _OldModel:  # transformers 5.17 (what the GPU machines have) names the cache `past_key_values`
    def forward(self, inputs_embeds=None, past_key_values=None, use_cache=None, **kwargs): ...


class _NewModel:  # later versions name it `cache` (and keep `past_key_values` as a deprecated alias for a while)
    def forward(self, inputs_embeds=None, cache=None, use_cache=None, **kwargs): ...


def test_cache_keyword_follows_the_forward_signature():
    """A cache passed under the other name vanishes into **kwargs: the prefix would be ignored, not refused."""
    assert cache_keyword(_OldModel().forward) == "past_key_values"
    assert cache_keyword(_NewModel().forward) == "cache"


@pytest.mark.parametrize("arch", ["llama", "gemma3", "t5"])
def test_the_cache_keyword_is_a_named_parameter_of_the_installed_transformers(arch):
    bb = tiny_backbone(arch)
    forward = bb.model.get_decoder().forward if arch == "t5" else bb.model.base_model.forward
    assert cache_keyword(forward) in inspect.signature(forward).parameters
