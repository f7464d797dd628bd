"""The artifact: small, self-describing, verified on load, and never carrying the random projection."""

import json

import pytest
import torch
from synthetic import synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.artifact import ArtifactError, PromptArtifact
from softprompt.testing import tiny_backbone


def save(tmp_path, backbone, method="ulpt", **options):
    prompt = new_prompt(make_prompt_config(method, 10, **options), backbone, seed=0)
    artifact = PromptArtifact(prompt, backbone.describe(), synthetic_task(), {"test": {"accuracy": 0.5}})
    return prompt, artifact.save_pretrained(tmp_path / method)


def test_round_trip_restores_the_same_prompt_and_metadata(tmp_path):
    backbone = tiny_backbone()
    prompt, folder = save(tmp_path, backbone, rank=3)
    loaded = PromptArtifact.from_pretrained(folder, backbone)
    assert torch.equal(loaded.prompt.materialize().embeds, prompt.materialize().embeds)
    assert loaded.task.to_dict() == synthetic_task().to_dict()
    meta = json.loads((folder / "prompt.json").read_text())
    assert meta["method"] == "ulpt" and meta["config"]["rank"] == 3 and meta["config"]["projection_seed"] == 0
    assert meta["model"]["fingerprint"] == backbone.fingerprint
    assert meta["num_trainable_parameters"] == 10 * 3 + 2 * backbone.hidden_size
    assert {"library_version", "tensors_sha256", "hidden_size", "metrics", "task"} <= meta.keys()


def test_ulpt_artifact_stores_z_scale_shift_but_never_the_projection(tmp_path):
    from safetensors.torch import load_file

    _, folder = save(tmp_path, tiny_backbone(), rank=2)
    assert set(load_file(str(folder / "prompt.safetensors"))) == {"z", "scale", "shift"}


def test_tampered_tensor_file_is_rejected(tmp_path):
    backbone = tiny_backbone()
    _, folder = save(tmp_path, backbone)
    data = bytearray((folder / "prompt.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "prompt.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        PromptArtifact.from_pretrained(folder, backbone)


def test_other_hidden_size_or_other_weights_are_rejected(tmp_path):
    backbone = tiny_backbone()
    _, folder = save(tmp_path, backbone)
    other_weights = tiny_backbone(seed=1)
    with pytest.raises(ArtifactError, match="fingerprint"):
        PromptArtifact.from_pretrained(folder, other_weights)
    assert PromptArtifact.from_pretrained(folder, other_weights, strict_model=False).prompt.hidden_size == 32

    from softprompt.models.causal import CausalLMBackbone
    from softprompt.testing import tiny_causal_lm, tiny_tokenizer

    wide = CausalLMBackbone(tiny_causal_lm(vocab_size=len(tiny_tokenizer()), hidden=64), tiny_tokenizer(), "wide")
    with pytest.raises(ArtifactError, match="hidden size 32"):
        PromptArtifact.from_pretrained(folder, wide)


def test_missing_or_broken_files_give_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not a softprompt artifact"):
        PromptArtifact.from_pretrained(tmp_path)
    backbone = tiny_backbone()
    _, folder = save(tmp_path, backbone)
    (folder / "prompt.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        PromptArtifact.from_pretrained(folder)
