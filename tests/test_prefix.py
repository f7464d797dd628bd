"""Key/value prefixes on all three families, and the `prefix` method (deep prefix tuning / P-tuning v2).

Ground truth: a prefix made of the model's own keys and values of a text acts exactly like that text written in
front (the model's own cache for decoders; keys and values captured from the prepended run for encoders); a mixed
batch scores every row as that row alone; generation equals greedy decoding one token at a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from mixed import assert_each_row_as_alone

from softprompt.api import new_prompt
from softprompt.artifact import PromptArtifact
from softprompt.models.backbone import Backbone
from softprompt.models.dims import ModelDims
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone
from softprompt.prompts import (
    BBTv2Config,
    PrefixConfig,
    PrefixTuning,
    PromptTuningConfig,
    ULPTConfig,
)
from softprompt.scoring import Scorer

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import synthetic_examples, synthetic_task

ARCHS = ["llama", "gemma3", "t5", "roberta"]
TEXTS = ["the movie was very good and fun .", "bad", "a film : it is not boring ? yes"]
PREPENDED = "review : very"  # three tokens of the tiny vocabulary


@pytest.fixture(scope="module", params=ARCHS)
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return tiny_backbone(request.param)


def continuations(bb: Backbone) -> list[list[int]]:
    ids = [bb.tokenize(w)[0] for w in ("good", "bad", "great", "fine", "awful")]
    return [ids[:3], ids[3:4], ids[:2]]


def captured_encoder_prefix(bb: Backbone, input_ids: torch.Tensor, slots: slice) -> PromptInputs:
    """Keys and values every encoder block's self-attention computes at `slots` of the model's own forward pass on
    `input_ids` (captured from the key/value projections, as (L, 1, H, m, d))."""
    seen: dict[str, list[torch.Tensor]] = {"k": [], "v": []}
    hooks = []
    shape = (bb.dims.num_kv_heads, bb.dims.head_dim)
    for block in bb.layers:
        attention = block.layer[0].SelfAttention if bb.kind == "seq2seq" else block.attention.self
        for name, proj in (("k", getattr(attention, "k", None) or attention.key),
                           ("v", getattr(attention, "v", None) or attention.value)):  # fmt: skip

            def grab(_m, _a, out, name=name) -> None:
                seen[name].append(out.view(*out.shape[:2], *shape).transpose(1, 2)[:, :, slots])

            hooks.append(proj.register_forward_hook(grab))
    try:
        with torch.no_grad():
            if bb.kind == "seq2seq":
                bb.model.get_encoder()(input_ids=input_ids)
            else:
                bb.model(input_ids=input_ids)
    finally:
        for hook in hooks:
            hook.remove()
    return PromptInputs(prefix_keys=torch.stack(seen["k"]), prefix_values=torch.stack(seen["v"]))


def encoder_states(bb: Backbone, batch, prompt: PromptInputs | None) -> torch.Tensor:
    """T5's encoder output for `batch` with `prompt` in place (the decoder reads the text positions only)."""
    x = bb.insert(batch, prompt)
    encoder = bb.model.get_encoder()
    with torch.no_grad():
        return bb._with_plan(bb._plan(x), lambda: encoder(inputs_embeds=x.embeds, attention_mask=x.mask))[0]


@pytest.mark.parametrize("text", TEXTS)
def test_prefix_of_the_models_own_keys_values_equals_prepending_the_text(backbone: Backbone, text: str) -> None:
    bb = backbone
    prepended = f"{PREPENDED} {text}"
    m = len(bb.tokenize(PREPENDED))
    cont = continuations(bb)[0]
    if bb.kind == "causal":  # the model's own cache after reading the text
        ids = bb.encode([PREPENDED]).input_ids
        with torch.no_grad():
            cache = bb.model(input_ids=ids, use_cache=True).past_key_values
        prefix = PromptInputs(prefix_keys=torch.stack([layer.keys for layer in cache.layers]),
                              prefix_values=torch.stack([layer.values for layer in cache.layers]))  # fmt: skip
    else:  # the keys/values those tokens have in the prepended run (after <s> for a masked LM)
        start = bb.prompt_offset
        prefix = captured_encoder_prefix(bb, bb.encode([prepended]).input_ids, slice(start, start + m))
    assert prefix.prefix_keys.shape == (bb.num_layers, 1, bb.dims.num_kv_heads, m, bb.dims.head_dim)
    with torch.no_grad():
        if bb.kind == "seq2seq":
            want = encoder_states(bb, bb.encode([prepended]), None)[:, m:]
            got = encoder_states(bb, bb.encode([text]), prefix)
        else:
            want = bb.hidden_states(bb.encode([prepended], [cont]), None)
            got = bb.hidden_states(bb.encode([text], [cont]), prefix)
        bare = bb.hidden_states(bb.encode([text], [cont]))
    torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)  # float noise only: attention over m + T keys
    if bb.kind != "seq2seq":
        assert not torch.allclose(got, bare, atol=1e-3)  # the prefix matters


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoder_prefix_in_eager_attention_equals_sdpa(arch: str) -> None:
    """Both mask formats (boolean for sdpa, additive for eager), with rows of different prefix lengths."""
    bb = tiny_backbone(arch)
    rows = [random_prefix(bb, 2, seed=1), random_prefix(bb, 5, seed=2), PromptInputs()]
    batch = bb.encode(TEXTS, continuations(bb))
    with torch.no_grad():
        sdpa = bb.hidden_states(batch, PromptInputs.stack(rows))
        bb.model.set_attn_implementation("eager")
        eager = bb.hidden_states(batch, PromptInputs.stack(rows))
    assert bb.model.config._attn_implementation == "eager"
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)


def random_prefix(bb: Backbone, m: int, seed: int) -> PromptInputs:
    g = torch.Generator().manual_seed(seed)
    shape = (bb.num_layers, 1, bb.dims.num_kv_heads, m, bb.dims.head_dim)
    return PromptInputs(prefix_keys=torch.randn(shape, generator=g), prefix_values=torch.randn(shape, generator=g))


def method_rows(bb: Backbone) -> list[PromptInputs]:
    """One row per method: two prefixes (direct m=4, reparametrised m=2), PT, ULPT, BBTv2 (deep), no prompt."""
    direct = new_prompt(PrefixConfig(prompt_len=4, init="normal"), bb, seed=1)
    mlp = new_prompt(PrefixConfig(prompt_len=2, reparam=True, reparam_hidden=16), bb, seed=2)
    pt = new_prompt(PromptTuningConfig(prompt_len=3), bb, seed=3)
    ulpt = new_prompt(ULPTConfig(prompt_len=5, rank=2), bb, seed=4)
    bbtv2 = new_prompt(BBTv2Config(prompt_len=2, dim=4), bb, seed=5)
    bbtv2.config.projection_stds = [0.3] * bb.num_layers
    with torch.no_grad():
        bbtv2.z.normal_(generator=torch.Generator().manual_seed(6))
        return [p.materialize().detach() for p in (direct, mlp, pt, ulpt, bbtv2)] + [PromptInputs()]


def test_mixed_batch_with_prefix_rows_scores_each_row_as_alone(backbone: Backbone) -> None:
    bb = backbone
    rows = method_rows(bb)
    texts = [*TEXTS, "good fun", "it was awful", "the film"]
    conts = [*continuations(bb), *continuations(bb)]
    mixed = assert_each_row_as_alone(bb, texts, conts, rows)
    with torch.no_grad():
        bare = bb.hidden_states(bb.encode(texts, conts))
    for i in range(5):  # every prompted row really differs from no prompt
        assert not torch.allclose(mixed[i, :1], bare[i, :1], atol=1e-4)


@pytest.mark.parametrize("reparam", [False, True])
def test_gradient_reaches_every_prefix_parameter_and_not_the_model(backbone: Backbone, reparam: bool) -> None:
    prompt = new_prompt(PrefixConfig(prompt_len=3, reparam=reparam, reparam_hidden=8, init="normal"), backbone)
    scorer = Scorer(backbone, synthetic_task())
    scorer.loss(scorer.encode(synthetic_examples(4, 0)), prompt.materialize()).backward()
    for name, p in prompt.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in backbone.model.parameters())


LR = {False: 5e-2, True: 1e-2}


@pytest.mark.parametrize("arch", ["llama", "t5", "roberta"])
@pytest.mark.parametrize("reparam", [False, True])
def test_a_few_steps_lower_the_loss(arch: str, reparam: bool) -> None:
    bb = tiny_backbone(arch, init_scale=0.5)  # a random model at the usual 0.02 barely reads its input (synthetic.py)
    prompt = new_prompt(PrefixConfig(prompt_len=4, reparam=reparam, reparam_hidden=16), bb, seed=0)
    scorer = Scorer(bb, synthetic_task())
    batch = scorer.encode(synthetic_examples(16, 0))
    optimizer = torch.optim.AdamW(prompt.param_groups(LR[reparam]))
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = scorer.loss(batch, prompt.materialize())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = scorer.loss(batch, prompt.materialize()).item()
    assert final < losses[0] - 0.05, (losses, final)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_generate_with_prefix_equals_greedy_one_token_at_a_time(arch: str) -> None:
    """gemma3's sliding window (16) is shorter than prefix + text + answer here: rows of a batch keep their prefix
    exactly as long as alone."""
    bb = tiny_backbone(arch)
    rows = [random_prefix(bb, 3, seed=1), random_prefix(bb, 6, seed=2), PromptInputs(embeds=torch.randn(1, 2, 32))]
    texts = ["the movie was very good and fun .", "bad", "a film : it is not boring"]
    steps = 10
    batched = bb.generate(texts, PromptInputs.stack(rows), max_new_tokens=steps)
    for text, row, got in zip(texts, rows, batched, strict=True):
        ids: list[int] = []
        for _ in range(steps):
            with torch.no_grad():
                hidden = bb.hidden_states(bb.encode([text], [[*ids, 0]]), row)[0, len(ids)]
            token = int(bb.logits(hidden).argmax())
            if token == bb.tokenizer.eos_token_id:
                break
            ids.append(token)
        assert got == bb.tokenizer.decode(ids, skip_special_tokens=True)
        assert got == bb.generate([text], row, max_new_tokens=steps)[0]


def test_a_row_of_a_stack_is_the_prompt_that_went_in(backbone: Backbone) -> None:
    rows = method_rows(backbone)
    stack = PromptInputs.stack(rows)
    for i, row in enumerate(rows):
        got = stack.row(i)
        for name in ("embeds", "deep", "prefix_keys", "prefix_values"):
            want, have = getattr(row, name), getattr(got, name)
            if want is None:  # a part the prompt lacks: absent, or the zeros of the stack (which change nothing)
                assert have is None or not have.any(), (i, name)
            else:
                assert torch.equal(have, want), (i, name)


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoders_refuse_to_turn_a_prompt_into_a_prefix(arch: str) -> None:
    bb = tiny_backbone(arch)
    with pytest.raises(ValueError, match="attend to the text"):
        bb.prompt_prefix(PromptInputs(embeds=torch.randn(1, 3, bb.hidden_size)))


def test_t5_generation_with_a_prefix_matches_the_scoring_path() -> None:
    bb = tiny_backbone("t5")
    rows = [random_prefix(bb, 3, seed=1), PromptInputs(), random_prefix(bb, 1, seed=3)]
    texts = ["the movie was very good", "bad", "a film"]
    batched = bb.generate(texts, PromptInputs.stack(rows), max_new_tokens=3)
    assert batched == [bb.generate([t], r, max_new_tokens=3)[0] for t, r in zip(texts, rows, strict=True)]
    with torch.no_grad():
        first = bb.logits(bb.hidden_states(bb.encode(texts), PromptInputs.stack(rows))[:, 0]).argmax(-1)
    for i, text in enumerate(batched):
        if text:
            assert bb.tokenizer.decode([int(first[i])]).strip() == text.split()[0]


def test_prefix_of_the_wrong_shape_is_a_clear_error(backbone: Backbone) -> None:
    good = random_prefix(backbone, 2, seed=0)
    batch = backbone.encode(TEXTS[:1])
    with pytest.raises(ValueError, match="layers"):
        backbone.hidden_states(batch, PromptInputs(prefix_keys=good.prefix_keys[:1],
                                                   prefix_values=good.prefix_values[:1]))  # fmt: skip
    wide = torch.cat([good.prefix_keys, good.prefix_keys], dim=-1)
    with pytest.raises(ValueError, match="heads"):
        backbone.hidden_states(batch, PromptInputs(prefix_keys=wide, prefix_values=wide))


# --- parameters, folding, artifacts ---------------------------------------------------------------------------
@pytest.mark.parametrize("reparam", [False, True])
def test_parameter_count_from_sizes_equals_the_module(backbone: Backbone, reparam: bool) -> None:
    config = PrefixConfig(prompt_len=5, reparam=reparam, reparam_hidden=24)
    prompt = new_prompt(config, backbone)
    assert config.count_parameters(backbone.dims) == sum(p.numel() for p in prompt.parameters() if p.requires_grad)
    assert prompt.num_trainable_parameters() == config.count_parameters(backbone.dims)


def test_dims_and_count_at_published_sizes() -> None:
    """SmolLM2-135M (grouped-query attention: 3 key/value heads of 64 for 9 query heads) and T5-base."""
    from transformers import LlamaConfig, T5Config

    smollm2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
    assert ModelDims.from_config(smollm2) == ModelDims(576, 30, 3, 64)
    assert PrefixConfig(prompt_len=20).count_parameters(ModelDims.from_config(smollm2)) == 2 * 30 * 20 * 3 * 64
    t5_base = T5Config(d_model=768, num_layers=12, num_heads=12, d_kv=64)
    assert ModelDims.from_config(t5_base) == ModelDims(768, 12, 12, 64)
    assert PrefixConfig(prompt_len=100).count_parameters(ModelDims.from_config(t5_base)) == 1_843_200


def test_reparametrised_prefix_folds_for_the_artifact_and_keeps_the_mlp_in_checkpoints(tmp_path: Path) -> None:
    bb = tiny_backbone("llama")
    prompt = new_prompt(PrefixConfig(prompt_len=3, reparam=True, reparam_hidden=8), bb, seed=0)
    assert set(prompt.state_tensors()) == {"embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    folded = prompt.fold()
    assert set(folded.state_tensors()) == {"keys", "values"}
    PromptArtifact(prompt, bb.describe()).save_pretrained(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "prompt.json").read_text())
    assert meta["config"]["reparam"] is True
    assert meta["stored_numbers"] == 2 * 3 * bb.dims.num_layers * bb.dims.kv_width
    assert meta["num_trainable_parameters"] == prompt.num_trainable_parameters() > meta["stored_numbers"]
    loaded = PromptArtifact.from_pretrained(tmp_path / "a", bb).prompt
    assert isinstance(loaded, PrefixTuning) and not loaded.is_reparametrised
    batch = bb.encode(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(bb.hidden_states(batch, loaded.materialize()),
                                   bb.hidden_states(batch, prompt.materialize()), atol=1e-6, rtol=1e-6)  # fmt: skip
    resumed = new_prompt(PrefixConfig(prompt_len=3, reparam=True, reparam_hidden=8), bb, seed=1)
    resumed.load_state_tensors(prompt.state_tensors())  # a checkpoint: the MLP again, exactly
    assert resumed.is_reparametrised
    torch.testing.assert_close(resumed.materialize().prefix_keys, prompt.materialize().prefix_keys)


def test_init_auto_uses_the_models_own_keys_on_decoders_and_noise_on_encoders() -> None:
    from softprompt.models.statistics import vocab_embeddings

    llama, t5 = tiny_backbone("llama"), tiny_backbone("t5")
    p = new_prompt(PrefixConfig(prompt_len=3), llama, seed=0)
    assert p.config.init == "vocab"  # what "auto" chose, on record
    embeds, _ = vocab_embeddings(llama, 3, 5000, 0)  # the same seeded tokens
    own = llama.prompt_prefix(PromptInputs(embeds=embeds.unsqueeze(0)))
    torch.testing.assert_close(p.keys.detach(), own.prefix_keys[:, 0])
    q = new_prompt(PrefixConfig(prompt_len=3), t5, seed=0)
    assert q.config.init == "normal"
    with pytest.raises(ValueError, match="decoder-only"):
        new_prompt(PrefixConfig(prompt_len=3, init="vocab"), t5)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="init"):
        PrefixConfig(init="text")
    with pytest.raises(ValueError, match="reparam_hidden"):
        PrefixConfig(reparam_hidden=0)
    with pytest.raises(ValueError, match="limit"):
        PrefixConfig(prompt_len=10_000, num_layers=100, num_kv_heads=100, head_dim=100)


# --- from the command line, on each family --------------------------------------------------------------------
REPO_DATA = Path(__file__).resolve().parents[1] / "data"  # the quick-start SST-2 slice in the repository


@pytest.mark.parametrize(("arch", "reparam"), [("llama", False), ("t5", True), ("roberta", False)])
def test_cli_trains_a_prefix_saves_and_reloads_it_for_eval_and_predict(
    arch: str, reparam: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from softprompt.cli import main

    model_dir, out = tmp_path / arch, tmp_path / "run"
    bb = tiny_backbone(arch)
    bb.model.save_pretrained(model_dir)
    bb.tokenizer.save_pretrained(model_dir)
    argv = ["train", "--task", "sst2", "--data-dir", str(REPO_DATA), "--model", str(model_dir), "--method", "prefix",
            "--prompt-len", "4", "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--max-train-examples",
            "32", "--max-eval-examples", "16", "--max-test-examples", "16", "--out", str(out), "--quiet",
            "--reparam" if reparam else "--no-reparam", "--reparam-hidden", "8", "--max-length", "96"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((out / "prompt.json").read_text())
    dims = ModelDims.from_config(bb.config)
    assert meta["method"] == "prefix" and meta["config"]["reparam"] is reparam
    assert meta["stored_numbers"] == 2 * 4 * dims.num_layers * dims.kv_width
    assert (
        summary["trainable_parameters"]
        == meta["num_trainable_parameters"]
        == PrefixConfig(prompt_len=4, reparam=reparam, reparam_hidden=8).count_parameters(dims)
    )
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ("stored_as" in info) is reparam and info["stored_numbers"] == meta["stored_numbers"]
    assert main(["eval", str(out), "--data-dir", str(REPO_DATA), "--split", "test", "--limit", "16",
                 "--model", str(model_dir)]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])  # same numbers after reload
    assert main(["predict", str(out), "a good movie", "--model", str(model_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in ("negative", "positive")


def test_bart_encoder_takes_a_prefix_and_mixed_rows_score_as_alone() -> None:
    from softprompt.models.seq2seq import Seq2SeqBackbone
    from softprompt.models.tiny import tiny_bart_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    bb = Seq2SeqBackbone(tiny_bart_lm(len(tok)), tok, name="tiny-bart")
    rows = [random_prefix(bb, 2, seed=1), PromptInputs(embeds=torch.randn(1, 3, 32)), random_prefix(bb, 4, seed=2)]
    conts = continuations(bb)
    mixed = assert_each_row_as_alone(bb, TEXTS, conts, rows)
    with torch.no_grad():
        bare = bb.hidden_states(bb.encode(TEXTS, conts))
    for i in range(len(TEXTS)):
        assert not torch.allclose(mixed[i, :1], bare[i, :1], atol=1e-4)


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_concurrent_encoder_calls_do_not_see_each_others_prefixes(arch: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bb = tiny_backbone(arch)
    batch = bb.encode(TEXTS)
    jobs = [random_prefix(bb, 2 + s, seed=s) for s in range(4)]
    with torch.no_grad():
        expected = [bb.hidden_states(batch, job) for job in jobs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda job: bb.hidden_states(batch, job), jobs * 3))
        plain = bb.hidden_states(batch)
    for i, out in enumerate(got):
        torch.testing.assert_close(out, expected[i % 4], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(plain, expected[0], atol=1e-4)  # and the wrappers leave no prefix behind
    with torch.no_grad():
        torch.testing.assert_close(bb.hidden_states(batch), plain, atol=0, rtol=0)


class _Interrupted(Exception):
    pass


def test_an_interrupted_reparametrised_run_resumes_exactly(tmp_path: Path) -> None:
    """Checkpoints keep E and the MLP (and the optimiser's state for them): resuming after a crash ends with the
    same artifact as the uninterrupted run."""
    from softprompt.training.trainer import TrainConfig, train_prompt

    bb, task = tiny_backbone("llama", init_scale=0.5), synthetic_task()
    train, validation = synthetic_examples(32, 0), synthetic_examples(8, 1)
    config = TrainConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=1, eval_every=3, log_every=1)

    def run(out: Path, scorer: Scorer, resume: bool = False) -> None:
        prompt = new_prompt(PrefixConfig(prompt_len=3, reparam=True, reparam_hidden=8), bb, seed=0)
        train_prompt(scorer, prompt, train, validation, config, out, resume=resume, progress=False)

    run(tmp_path / "whole", Scorer(bb, task))
    crashing, calls = Scorer(bb, task), [0]
    loss = crashing.loss

    def crash_at_step_5(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise _Interrupted
        return loss(*args, **kwargs)

    crashing.loss = crash_at_step_5
    with pytest.raises(_Interrupted):
        run(tmp_path / "resumed", crashing)
    run(tmp_path / "resumed", Scorer(bb, task), resume=True)
    whole = PromptArtifact.from_pretrained(tmp_path / "whole", bb).prompt.state_tensors()
    resumed = PromptArtifact.from_pretrained(tmp_path / "resumed", bb).prompt.state_tensors()
    assert set(whole) == {"keys", "values"}
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=0, rtol=0)
