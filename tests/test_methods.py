"""DPT, DePT, residual prompt tuning and the ULPT variants: parameter counts at the paper's settings, one mixed batch
of all of them scored row by row, artifact round trips (residual folds), two learning rates, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from mixed import assert_each_row_as_alone, method_prompts
from synthetic import synthetic_examples, synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.artifact import PromptArtifact
from softprompt.cli import main
from softprompt.cli.params import rows as param_rows
from softprompt.evaluator import BackboneAccess, LocalEvaluator
from softprompt.models.inputs import PromptInputs
from softprompt.models.shapes import known_configs, load_shape
from softprompt.models.tiny import tiny_backbone
from softprompt.prompts import REGISTRY, DePTConfig, DPTConfig, ResidualConfig, ULPTConfig, build_prompt
from softprompt.scoring import Scorer
from softprompt.training.trainer import TrainConfig, train_prompt

T5_BASE = load_shape("t5-base")  # D = 768, the paper's max length 256


# --- parameter counts: the ULPT paper's T5-base figures (D=768, n=100, s=256) ------------------------------------
@pytest.mark.parametrize(
    ("method", "options", "expected"),
    [
        ("prompt_tuning", {"prompt_len": 100}, 76_800),
        ("ulpt", {"prompt_len": 100, "rank": 2}, 1_736),
        ("ulpt", {"prompt_len": 100, "rank": 16}, 3_136),
        ("ulpt", {"prompt_len": 100, "rank": 64}, 7_936),
        ("ulpt", {"prompt_len": 100, "rank": 256}, 27_136),
        ("dpt", {"prompt_len": 100, "rank": 64}, 55_552),
        ("dpt", {"prompt_len": 100, "rank": 256}, 222_208),
        ("dept", {"prompt_len": 60, "rank": 30}, 76_800),
        # n·D + (D·m + m) + (m·D + D) + 2·D with m = 400
        ("residual", {"prompt_len": 100, "bottleneck": 400}, 76_800 + 768 * 400 + 400 + 400 * 768 + 768 + 2 * 768),
        ("ulpt", {"prompt_len": 100, "rank": 2, "tune": "projection"}, 2 * 768 + 2 * 768),  # r·D + 2·D
    ],
)
def test_parameter_counts_at_t5_base(method, options, expected):
    config = REGISTRY[method][0](**options)
    assert config.count_parameters(T5_BASE) == expected
    # the module built for a T5-base-sized model agrees (DePT's s comes from the model's max length)
    assert build_prompt(config.for_model(T5_BASE), 768).num_trainable_parameters() == expected


def test_params_command_prints_every_method_from_a_config_alone(capsys):
    assert main(["params", "--model", "t5-base", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    counts = {(r["method"], json.dumps(r["settings"], sort_keys=True)): r["trainable_parameters"]
              for r in table["rows"]}  # fmt: skip
    assert counts[("dpt", '{"prompt_len": 100, "rank": 256}')] == 222_208
    assert counts[("dept", '{"prompt_len": 60, "rank": 30}')] == 76_800
    assert counts[("prompt_tuning", '{"prompt_len": 100}')] == 76_800
    assert {r["method"] for r in table["rows"]} == set(REGISTRY)
    assert table["model"]["hidden_size"] == 768 and table["model"]["num_layers"] == 12


@pytest.mark.parametrize("name", known_configs())
def test_shipped_configs_give_the_published_sizes(name):
    hidden = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "bloomz-560m": 1024, "bloomz-1b7": 2048,
              "bloomz-3b": 2560, "smollm2-135m": 576, "gemma-3-270m": 640}  # fmt: skip
    shape = load_shape(name)
    assert shape.hidden_size == hidden[name]
    assert param_rows(name)[0]["trainable_parameters"] == 100 * hidden[name]  # prompt tuning: n·D


def test_every_embedded_model_name_has_a_shipped_shape(monkeypatch):
    """`softprompt params --model NAME` takes the names `--model` takes, offline (it once went to the hub for them).
    That each equals the loaded model's shape is checked in tests/test_integration_{smollm2,gemma3}.py."""
    from softprompt.models.loading import EMBEDDED

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, entry in EMBEDDED.items():
        assert entry.shape in known_configs()
        assert load_shape(name) == load_shape(entry.shape)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5", "tiny-gemma3-steerable"])
def test_tiny_model_names_have_the_loaded_models_shape_offline(monkeypatch, name):
    """`params --model tiny-llama` took five hub retries to fail; the names every other command takes work here."""
    from softprompt.models.loading import load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_shape(name, 64) == load_backbone(name, max_length=64).dims
    with pytest.raises(ValueError, match="unknown tiny model 'tiny-lama'"):
        load_shape("tiny-lama")


def test_shape_of_a_loaded_model_matches_its_config_file(tmp_path):
    backbone = tiny_backbone("llama")
    backbone.model.config.to_json_file(tmp_path / "config.json")
    assert load_shape(str(tmp_path / "config.json"), backbone.max_length) == backbone.dims
    with pytest.raises(ValueError, match="no model config"):
        load_shape(str(tmp_path / "missing"))


# --- one mixed batch of every new method --------------------------------------------------------------------------
TEXTS = [
    "the movie was very good and fun .",
    "bad",
    "a film : it is not boring ? yes",
    "good fun",
    "it was",
    "fine",
    "so so .",
]


@pytest.mark.parametrize("arch", ["llama", "t5", "roberta"])
def test_mixed_batch_of_new_methods_scores_each_row_as_alone(arch):
    backbone = tiny_backbone(arch)
    prompts = method_prompts(backbone)
    rows = [p.materialize().detach() for p in prompts.values()]
    texts = (TEXTS * 2)[: len(rows)]
    ids = [backbone.tokenize(w)[0] for w in ("good", "bad")]
    conts = [ids] * len(rows)
    mixed = assert_each_row_as_alone(backbone, texts, conts, rows)
    with torch.no_grad():
        bare = backbone.hidden_states(backbone.encode(texts, conts))
    for i in range(len(rows)):
        assert not torch.allclose(mixed[i], bare[i], atol=1e-4)  # every row's prompt does something


def test_dept_text_update_reaches_the_text_tokens():
    backbone = tiny_backbone("llama")
    prompt = method_prompts(backbone)["dept"]
    full = prompt.materialize().detach()
    without = PromptInputs(embeds=full.embeds)
    batch = backbone.encode(["the movie was very good and fun ."])
    with torch.no_grad():
        assert not torch.allclose(backbone.hidden_states(batch, full), backbone.hidden_states(batch, without))
        # the update is A·B, added at the first text_len positions only
        torch.testing.assert_close(full.text_delta[0], prompt.lowrank_a @ prompt.lowrank_b)
    assert full.text_delta.shape == (1, 5, backbone.hidden_size)


# --- storage: round trips, folding, what an exporter may ask ---------------------------------------------------------
@pytest.mark.parametrize("name", ["dpt", "dept", "residual", "ulpt-projection", "ulpt-no-shift", "ulpt-neutral"])
def test_artifact_round_trip(tmp_path, name):
    backbone = tiny_backbone("llama")
    prompt = method_prompts(backbone)[name]
    artifact = PromptArtifact(prompt, backbone.describe(), synthetic_task())
    artifact.save_pretrained(tmp_path)
    loaded = PromptArtifact.from_pretrained(tmp_path, backbone)
    a, b = prompt.materialize(), loaded.prompt.materialize()
    torch.testing.assert_close(b.embeds, a.embeds, atol=1e-6, rtol=1e-6)
    for part in ("text_delta", "gate"):
        if getattr(a, part) is not None:
            torch.testing.assert_close(getattr(b, part), getattr(a, part), atol=1e-6, rtol=1e-6)
    meta = json.loads((tmp_path / "prompt.json").read_text())
    assert meta["num_trainable_parameters"] == prompt.num_trainable_parameters()
    blob = PromptArtifact.from_bytes(artifact.to_bytes(), backbone)
    assert torch.equal(blob.prompt.materialize().embeds, b.embeds)


def test_residual_artifact_stores_the_folded_prompt_and_info_says_so(tmp_path, capsys):
    backbone = tiny_backbone("llama")
    prompt = method_prompts(backbone)["residual"]
    PromptArtifact(prompt, backbone.describe(), synthetic_task()).save_pretrained(tmp_path)
    loaded = PromptArtifact.from_pretrained(tmp_path).prompt
    assert loaded.mlp is None and loaded.config.folded and set(loaded.state_tensors()) == {"embedding"}
    assert loaded.num_trainable_parameters() == 4 * backbone.hidden_size  # a fixed n×D prompt from here on
    torch.testing.assert_close(loaded.materialize().embeds, prompt.materialize().embeds)
    assert prompt.mlp is not None  # saving did not fold the prompt being trained
    assert main(["info", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stored_numbers"] == 4 * backbone.hidden_size and "folded" in info["stored_as"]
    assert info["trainable_parameters"] == prompt.num_trainable_parameters()
    # loading a folded state into a training-form module folds it, with the same prompt
    fresh = new_prompt(prompt.config, backbone)
    fresh.load_state_tensors(loaded.state_tensors())
    assert fresh.mlp is None
    torch.testing.assert_close(fresh.materialize().embeds, prompt.materialize().embeds)


def test_beyond_input_embeds_names_what_a_prompt_tuning_adapter_cannot_hold():
    backbone = tiny_backbone("llama")
    prompts = method_prompts(backbone)
    for name in ("dpt", "residual", "ulpt", "ulpt-projection", "ulpt-no-shift"):
        assert prompts[name].beyond_input_embeds() is None
    line = prompts["dept"].beyond_input_embeds()
    assert line is not None and "text" in line and "\n" not in line
    assert "attention gate" in prompts["ulpt-neutral"].beyond_input_embeds()
    bbtv2 = new_prompt(make_prompt_config("bbtv2", 2, dim=3), backbone)
    bbtv2.calibrate(LocalEvaluator(Scorer(backbone, synthetic_task())), synthetic_examples(4, 0))
    assert "deep prompts" in bbtv2.beyond_input_embeds()


# --- ULPT variants -------------------------------------------------------------------------------------------------
def test_ulpt_tune_projection_freezes_z_and_learns_a():
    prompt = build_prompt(ULPTConfig(prompt_len=4, rank=2, projection_seed=5, tune="projection"), 16)
    prompt.initialize(None, seed=0)
    assert not prompt.z.requires_grad and prompt.weight.requires_grad
    reference = build_prompt(ULPTConfig(prompt_len=4, rank=2, projection_seed=5), 16)
    assert torch.equal(prompt.weight, reference.projection.weight)  # A starts at the seeded projection
    assert set(prompt.state_tensors()) == {"z", "weight", "scale", "shift"}
    prompt.vectors().sum().backward()
    assert prompt.z.grad is None and prompt.weight.grad.abs().sum() > 0


def test_ulpt_variant_settings_are_checked():
    with pytest.raises(ValueError, match="neutral_gate"):
        ULPTConfig(neutral_init=True, neutral_gate=float("-inf"))
    with pytest.raises(ValueError, match="gate_lr"):
        ULPTConfig(neutral_init=True, gate_lr=0.0)
    with pytest.raises(ValueError, match="tune"):
        ULPTConfig(tune="both")


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_ulpt_neutral_init_starts_at_the_bare_template_and_its_gate_learns(tmp_path, arch):
    """At the start gate the label probabilities are the bare template's; the z is the authors' start; training
    moves the gate at its own learning rate (Adam's first step: exactly gate_lr) with no weight decay."""
    backbone = tiny_backbone(arch)
    scorer, examples = Scorer(backbone, synthetic_task()), synthetic_examples(16, 0)
    neutral = new_prompt(make_prompt_config("ulpt", 6, rank=2, neutral_init=True), backbone, seed=3)
    authors = new_prompt(make_prompt_config("ulpt", 6, rank=2), backbone, seed=3)
    assert torch.equal(neutral.z, authors.z) and neutral.gate.item() == -20.0
    assert neutral.num_trainable_parameters() == authors.num_trainable_parameters() + 1
    batch = scorer.encode(examples)
    with torch.no_grad():
        bare = scorer.label_scores(batch, None)
        torch.testing.assert_close(scorer.label_scores(batch, neutral.materialize()), bare, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(scorer.label_scores(batch, authors.materialize()), bare, atol=1e-3)
    groups = neutral.param_groups(0.01)
    assert groups[-1] == {"params": [neutral.gate], "lr": 1.0, "weight_decay": 0.0}
    neutral.gate.data.fill_(-2.0)  # open enough for every part to get a gradient of a usable size
    config = TrainConfig(steps=1, batch_size=8, lr=0.01, warmup_steps=0, weight_decay=0.1, max_grad_norm=None)
    train_prompt(scorer, neutral, examples, examples[:4], config, tmp_path, progress=False)
    assert abs(neutral.gate.item() + 2.0) == pytest.approx(1.0, rel=1e-3)  # one Adam step of gate_lr, no decay


def test_ulpt_neutral_init_needs_a_decoder():
    backbone = tiny_backbone("t5")
    prompt = new_prompt(make_prompt_config("ulpt", 3, rank=2, neutral_init=True), backbone)
    with pytest.raises(ValueError, match="decoder-only"):
        backbone.hidden_states(backbone.encode(["good"]), prompt.materialize())


def test_black_box_search_refuses_the_gradient_only_ulpt_variants():
    from softprompt.blackbox.spaces import make_space

    for options in ({"tune": "projection"}, {"neutral_init": True}):
        with pytest.raises(ValueError, match="gradient-training variants"):
            make_space(build_prompt(ULPTConfig(prompt_len=4, rank=2, **options), 16))


def test_dpt_starts_at_the_best_rank_r_approximation_of_the_vocabulary_start():
    backbone = tiny_backbone("llama")
    prompt = new_prompt(DPTConfig(prompt_len=6, rank=2), backbone, seed=3)
    start, _ = BackboneAccess(backbone).vocab_embeddings(6, 5000, 3)
    u, s, vt = torch.linalg.svd(start)
    torch.testing.assert_close(prompt.vectors().detach(), (u[:, :2] * s[:2]) @ vt[:2], atol=1e-5, rtol=1e-5)
    wide = new_prompt(DPTConfig(prompt_len=3, rank=8), backbone, seed=3)  # rank above n: the start is exact
    full, _ = BackboneAccess(backbone).vocab_embeddings(3, 5000, 3)
    torch.testing.assert_close(wide.vectors().detach(), full, atol=1e-5, rtol=1e-5)


# --- two learning rates ----------------------------------------------------------------------------------------------
def test_dept_trains_prompt_and_low_rank_pair_at_their_own_learning_rates(tmp_path):
    backbone = tiny_backbone("llama")
    prompt = new_prompt(DePTConfig(prompt_len=2, rank=2, text_len=8, lr_lowrank=1e-4), backbone)
    groups = prompt.param_groups(0.1)
    assert [g["lr"] for g in groups] == [0.1, 1e-4]
    assert [len(g["params"]) for g in groups] == [1, 2]
    before = {k: v.clone() for k, v in prompt.state_tensors().items()}
    config = TrainConfig(steps=1, batch_size=4, lr=0.1, warmup_steps=0, weight_decay=0.0, max_grad_norm=None)
    examples = synthetic_examples(8, 0)
    train_prompt(Scorer(backbone, synthetic_task()), prompt, examples, examples[:4], config, tmp_path, progress=False)
    # AdamW's first step moves every parameter with a gradient by its group's lr (times sign), no more
    moved = {k: (prompt.state_tensors()[k] - before[k]).abs().max().item() for k in before}
    assert moved["embedding"] == pytest.approx(0.1, rel=1e-3)
    assert moved["lowrank_b"] == pytest.approx(1e-4, rel=1e-2)
    assert moved["lowrank_a"] == 0.0  # B = 0 at the start: A gets no gradient on the first step (LoRA style)


def test_residual_is_built_from_its_config():
    prompt = build_prompt(ResidualConfig(prompt_len=3, bottleneck=5), 8)
    assert prompt.fold().config.folded and not prompt.config.folded


# --- the command line -----------------------------------------------------------------------------------------------
def test_train_help_lists_every_new_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in "--lr-lowrank --text-len --bottleneck --tune --neutral-init --neutral-gate --gate-lr".split():
        assert flag in text
    assert "--folded" not in text


@pytest.mark.parametrize(
    ("method", "options", "expected"),
    [
        ("dpt", ["--rank", "2"], {"rank": 2}),
        ("dept", ["--rank", "2", "--lr-lowrank", "0.001"], {"rank": 2, "lr_lowrank": 0.001, "text_len": 256}),
        ("residual", ["--bottleneck", "8"], {"bottleneck": 8, "folded": True}),
        ("ulpt", ["--tune", "projection"], {"tune": "projection"}),
        ("ulpt", ["--neutral-init", "--neutral-gate", "-15"], {"neutral_init": True, "neutral_gate": -15.0}),
    ],
)
def test_cli_trains_saves_and_evaluates_each_method(
    tmp_path, capsys, tiny_model_dir, data_dir, method, options, expected
):
    out = tmp_path / method
    argv = [
        "train", "--task", "sst2", "--data-dir", str(data_dir), "--model", tiny_model_dir, "--method", method,
        "--prompt-len", "4", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--max-train-examples", "16",
        "--max-eval-examples", "8", "--max-test-examples", "8", "--out", str(out), "--quiet", *options,
    ]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["method"] == method
    assert {k: meta["config"][k] for k in expected} == expected
    capsys.readouterr()
    assert main(["eval", str(out), "--data-dir", str(data_dir), "--split", "test", "--limit", "8",
                 "--model", tiny_model_dir]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])


def test_cli_refuses_an_option_of_another_method(capsys, tiny_model_dir, tmp_path):
    code = main(["train", "--task", "sst2", "--method", "dpt", "--lr-lowrank", "0.1", "--out", str(tmp_path / "x"),
                 "--model", tiny_model_dir])  # fmt: skip
    assert code == 2 and "does not take" in capsys.readouterr().err
