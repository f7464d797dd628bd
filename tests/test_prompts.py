"""Prompt parametrisations: exact parameter counts, the ULPT formula, ablations and state round trips."""

import pytest
import torch

from softprompt.evaluator import BackboneAccess
from softprompt.models.tiny import tiny_backbone
from softprompt.prompts import ULPT, PromptTuning, PromptTuningConfig, ULPTConfig, build_prompt, config_from_dict


@pytest.mark.parametrize(
    ("rank", "expected"),
    [(2, 1_736), (16, 3_136), (64, 7_936), (256, 27_136)],  # the ULPT paper's T5-base figures (D=768, n=100)
)
def test_ulpt_parameter_count_matches_paper(rank, expected):
    assert ULPT(ULPTConfig(prompt_len=100, rank=rank), hidden_size=768).num_trainable_parameters() == expected


def test_vanilla_parameter_count_matches_paper():
    assert PromptTuning(PromptTuningConfig(prompt_len=100), hidden_size=768).num_trainable_parameters() == 76_800


def test_ulpt_count_for_smollm2_and_ablations():
    assert ULPT(ULPTConfig(prompt_len=100, rank=2), 576).num_trainable_parameters() == 1_352
    assert ULPT(ULPTConfig(prompt_len=100, rank=2, use_shift=False), 576).num_trainable_parameters() == 776
    assert (
        ULPT(ULPTConfig(prompt_len=100, rank=2, use_scale=False, use_shift=False), 576).num_trainable_parameters()
        == 200
    )


def test_ulpt_output_is_projected_scaled_and_shifted():
    prompt = ULPT(ULPTConfig(prompt_len=5, rank=3, projection_seed=11), hidden_size=8)
    prompt.initialize(None, seed=0)
    with torch.no_grad():
        prompt.scale.uniform_(0.5, 2.0)
        prompt.shift.normal_()
    expected = (prompt.z @ prompt.projection.weight) * prompt.scale + prompt.shift
    assert prompt.vectors().shape == (5, 8)
    assert torch.allclose(prompt.vectors(), expected)


def test_ulpt_state_holds_no_projection_and_round_trips():
    a = ULPT(ULPTConfig(prompt_len=4, rank=2, projection_seed=3), 16)
    a.initialize(None, seed=1)
    state = a.state_tensors()
    assert set(state) == {"z", "scale", "shift"}
    b = build_prompt(config_from_dict(a.config.to_dict()), 16)
    b.load_state_tensors(state)
    assert torch.equal(a.vectors(), b.vectors())


def test_disabled_scale_and_shift_are_frozen_and_not_stored():
    prompt = ULPT(ULPTConfig(prompt_len=4, rank=2, use_scale=False, use_shift=False), 16)
    assert set(prompt.state_tensors()) == {"z"}
    assert not prompt.scale.requires_grad and not prompt.shift.requires_grad
    other = ULPT(ULPTConfig(prompt_len=4, rank=2, use_scale=False, use_shift=False), 16)
    other.load_state_tensors(prompt.state_tensors())
    assert torch.equal(prompt.materialize().embeds, other.materialize().embeds)


def test_load_rejects_wrong_shapes_and_names():
    prompt = ULPT(ULPTConfig(prompt_len=4, rank=2), 16)
    with pytest.raises(ValueError, match="shape"):
        prompt.load_state_tensors({"z": torch.zeros(4, 3), "scale": torch.ones(16), "shift": torch.zeros(16)})
    with pytest.raises(ValueError, match="expects tensors"):
        prompt.load_state_tensors({"z": torch.zeros(4, 2)} | {"bogus": torch.zeros(1)})


def test_vanilla_initialisation_from_vocab_and_text():
    backbone = tiny_backbone()
    vocab = build_prompt(PromptTuningConfig(prompt_len=6), backbone.hidden_size)
    vocab.initialize(BackboneAccess(backbone), seed=0)
    table = backbone.word_embeddings.weight
    # every prompt row is one of the vocabulary embeddings
    assert all(torch.isclose(table, row).all(-1).any() for row in vocab.embedding)
    text = build_prompt(PromptTuningConfig(prompt_len=5, init="text", init_text="good movie"), backbone.hidden_size)
    text.initialize(BackboneAccess(backbone), seed=0)
    ids = backbone.tokenize("good movie")
    assert torch.equal(text.embedding[0], table[ids[0]]) and torch.equal(text.embedding[2], table[ids[0]])


def test_config_validation():
    with pytest.raises(ValueError):
        ULPTConfig(rank=0)
    with pytest.raises(ValueError):
        PromptTuningConfig(prompt_len=0)
    with pytest.raises(ValueError):
        PromptTuningConfig(init="text")
    with pytest.raises(ValueError, match="unknown prompt method"):
        config_from_dict({"method": "lora"})
