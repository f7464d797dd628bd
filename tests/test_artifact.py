"""The artifact: small, self-describing, verified on load, and never carrying the random projection."""

import json

import pytest
import torch
from synthetic import synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.artifact import ArtifactError, PromptArtifact, read_metadata
from softprompt.models.tiny import tiny_backbone


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
    with pytest.raises(ArtifactError, match="fingerprint.*strict_model=False accepts any model of its hidden size"):
        PromptArtifact.from_pretrained(folder, other_weights)
    assert PromptArtifact.from_pretrained(folder, other_weights, strict_model=False).prompt.hidden_size == 32

    from softprompt.models.causal import CausalLMBackbone
    from softprompt.models.tiny import tiny_causal_lm, tiny_tokenizer

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


# --- format 2: the checksum covers the whole artifact ------------------------------------------------------------
def _edit_ulpt_scale(meta):
    meta["config"]["projection_scale"] = 0.5


@pytest.mark.parametrize(
    "edit",
    [
        lambda meta: meta["config"].update(projection_seed=meta["config"]["projection_seed"] + 1),  # another projection
        _edit_ulpt_scale,
        lambda meta: meta["task"].update(labels=meta["task"]["labels"][::-1]),  # label order
        lambda meta: meta["task"].update(verbalizer=meta["task"]["verbalizer"][::-1]),
        lambda meta: meta["task"].update(template="{text} . sentiment :"),
        lambda meta: meta["task"].update(kind="generation"),
        lambda meta: meta["metrics"].update(test={"accuracy": 0.99}),
        lambda meta: meta.update(hidden_size=meta["hidden_size"]),  # re-serialised unchanged: must still load
    ],
    ids=["seed", "projection_scale", "label_order", "verbalizer", "template", "task_kind", "metrics", "unchanged"],
)
def test_editing_any_metadata_field_is_caught(tmp_path, edit):
    backbone = tiny_backbone()
    _, folder = save(tmp_path, backbone, rank=2)
    meta = json.loads((folder / "prompt.json").read_text())
    before = json.dumps(meta, sort_keys=True)
    edit(meta)
    (folder / "prompt.json").write_text(json.dumps(meta, indent=2))  # other formatting: only content counts
    if json.dumps(meta, sort_keys=True) == before:
        assert PromptArtifact.from_pretrained(folder, backbone).prompt.config.projection_seed == 0
        return
    with pytest.raises(ArtifactError, match="artifact_sha256"):
        PromptArtifact.from_pretrained(folder, backbone)
    with pytest.raises(ArtifactError, match="metadata modified"):
        read_metadata(folder)


def test_removing_the_metadata_checksum_is_caught(tmp_path):
    _, folder = save(tmp_path, tiny_backbone())
    meta = json.loads((folder / "prompt.json").read_text())
    del meta["artifact_sha256"]
    (folder / "prompt.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="artifact_sha256"):
        PromptArtifact.from_pretrained(folder)


# --- refusing non-finite prompts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_diverged_prompt_is_not_saved_and_an_existing_artifact_survives(tmp_path, bad):
    backbone = tiny_backbone()
    prompt, folder = save(tmp_path, backbone)
    files = {name: (folder / name).read_bytes() for name in ("prompt.json", "prompt.safetensors")}
    with torch.no_grad():
        prompt.z[0, 0] = bad
    with pytest.raises(ArtifactError, match="non-finite"):
        PromptArtifact(prompt, backbone.describe(), synthetic_task()).save_pretrained(folder)
    with pytest.raises(ArtifactError, match="non-finite"):
        PromptArtifact(prompt, backbone.describe(), synthetic_task()).to_bytes()
    assert {name: (folder / name).read_bytes() for name in files} == files


def test_non_finite_metrics_are_written_as_null_so_the_json_stays_valid(tmp_path):
    backbone = tiny_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 4), backbone, seed=0)
    metrics = {"train_loss": float("nan"), "best": {"loss": float("inf"), "accuracy": 0.5}}
    folder = PromptArtifact(prompt, backbone.describe(), None, metrics).save_pretrained(tmp_path / "a")

    def refuse(token):
        raise AssertionError(f"invalid JSON token {token}")

    meta = json.loads((folder / "prompt.json").read_text(), parse_constant=refuse)
    assert meta["metrics"] == {"train_loss": None, "best": {"loss": None, "accuracy": 0.5}}
    assert PromptArtifact.from_pretrained(folder, backbone).metrics == meta["metrics"]


# --- one blob for a database ---------------------------------------------------------------------------------------
def test_to_bytes_round_trips_the_whole_artifact(tmp_path):
    backbone = tiny_backbone()
    for method, options in [("ulpt", {"rank": 3}), ("prompt_tuning", {})]:
        prompt = new_prompt(make_prompt_config(method, 6, **options), backbone, seed=1)
        artifact = PromptArtifact(prompt, backbone.describe(), synthetic_task(), {"test": {"accuracy": 0.5}}, {"k": 1})
        blob = artifact.to_bytes()
        loaded = PromptArtifact.from_bytes(blob, backbone)
        assert torch.equal(loaded.prompt.materialize().embeds, prompt.materialize().embeds)
        assert loaded.task.to_dict() == synthetic_task().to_dict()
        assert (loaded.metrics, loaded.extra, loaded.model) == (artifact.metrics, artifact.extra, backbone.describe())
        # the blob holds exactly the two files save_pretrained writes
        folder = loaded.save_pretrained(tmp_path / method)
        again = PromptArtifact.from_pretrained(folder, backbone)
        assert torch.equal(again.prompt.materialize().embeds, prompt.materialize().embeds)
        assert len(blob) < sum((folder / name).stat().st_size for name in ("prompt.json", "prompt.safetensors")) + 16


def test_from_bytes_applies_the_same_checks(tmp_path):
    backbone = tiny_backbone()
    prompt = new_prompt(make_prompt_config("ulpt", 6, rank=2), backbone, seed=1)
    blob = PromptArtifact(prompt, backbone.describe(), synthetic_task()).to_bytes()
    head = 12 + int.from_bytes(blob[8:12], "little")
    flipped_tensor = blob[:-1] + bytes([blob[-1] ^ 1])
    edited_meta = blob.replace(b'"projection_seed":0', b'"projection_seed":1')
    assert edited_meta != blob
    cases = [
        (flipped_tensor, "checksum"),
        (edited_meta, "artifact_sha256"),
        (blob[:head] + b"garbage!" * 4, "safetensors"),
        (blob[: head - 5], "metadata length"),
        (b"not a blob at all", "magic"),
        (b"", "magic"),
        (blob[:8] + (2**32 - 1).to_bytes(4, "little") + blob[12:], "metadata length"),
    ]
    for data, message in cases:
        with pytest.raises(ArtifactError, match=message):
            PromptArtifact.from_bytes(data, backbone)
    other = tiny_backbone(seed=1)
    with pytest.raises(ArtifactError, match="fingerprint"):
        PromptArtifact.from_bytes(blob, other)


def test_ulpt_r2_n100_for_hidden_576_is_at_most_8_kb_as_bytes():
    from softprompt.prompts import ULPTConfig, build_prompt

    prompt = build_prompt(ULPTConfig(prompt_len=100, rank=2), 576)
    torch.nn.init.normal_(prompt.z, generator=torch.Generator().manual_seed(0))
    model = {"name": "HuggingFaceTB/SmolLM2-135M", "kind": "causal", "hidden_size": 576, "num_layers": 30,
             "vocab_size": 49152, "fingerprint": "0123456789abcdef"}  # fmt: skip
    metrics = {"validation": {"accuracy": 0.845}, "test": {"accuracy": 0.812}, "best_step": 50}
    blob = PromptArtifact(prompt, model, synthetic_task(), metrics).to_bytes()
    assert len(blob) <= 8 * 1024, len(blob)
    loaded = PromptArtifact.from_bytes(blob)
    assert torch.equal(loaded.prompt.materialize().embeds, prompt.materialize().embeds)
