"""Artifacts written by earlier formats keep loading, and give the label probabilities they gave when written."""

import json
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_task

from softprompt.artifact import PromptArtifact
from softprompt.evaluation import label_probabilities
from softprompt.models.tiny import tiny_backbone
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("method", ["ulpt", "prompt", "bbt", "bbtv2"])
def test_format_1_artifacts_load_and_score_as_when_written(method):
    folder = FIXTURES / "format_v1"
    expected = json.loads((folder / "expected.json").read_text())
    backbone = tiny_backbone("llama", init_scale=0.5)  # the model make_fixtures.py used
    artifact = PromptArtifact.from_pretrained(folder / method, backbone)
    assert artifact.prompt.config.method == {"prompt": "prompt_tuning"}.get(method, method)
    examples = [Example(text) for text in expected["examples"]]
    probs = label_probabilities(Scorer(backbone, synthetic_task()), examples, artifact.prompt)
    torch.testing.assert_close(probs, torch.tensor(expected["probabilities"][method]), atol=1e-5, rtol=1e-4)


def test_format_1_checks_its_tensor_checksum_and_needs_no_metadata_checksum(tmp_path):
    import shutil

    from softprompt.artifact import ArtifactError, read_metadata

    folder = tmp_path / "ulpt"
    shutil.copytree(FIXTURES / "format_v1" / "ulpt", folder)
    meta = read_metadata(folder)
    assert meta["format_version"] == 2 and "artifact_sha256" not in meta
    data = bytearray((folder / "prompt.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "prompt.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        PromptArtifact.from_pretrained(folder)


def test_migrations_run_in_order_from_any_readable_version(monkeypatch, tmp_path):
    """A format-1 file passes through every step up to the current version, each seeing the previous one's output."""
    import shutil

    from softprompt import artifact

    folder = tmp_path / "prompt"
    shutil.copytree(FIXTURES / "format_v1" / "prompt", folder)
    seen = []

    def v2_to_v3(meta):
        seen.append((meta["format_version"], meta["method"]))
        return {**meta, "format_version": 3, "extra": {**meta["extra"], "lifted": True}}

    monkeypatch.setattr(artifact, "FORMAT_VERSION", 3)
    monkeypatch.setattr(artifact, "MIGRATIONS", {1: artifact._v1_to_v2, 2: v2_to_v3})
    monkeypatch.setattr(artifact, "READABLE_VERSIONS", (1, 2, 3))
    meta = artifact.read_metadata(folder)
    assert seen == [(2, "prompt_tuning")]
    assert meta["format_version"] == 3 and meta["extra"]["lifted"] and meta["method"] == "prompt_tuning"


def test_the_v1_fixtures_are_unchanged_by_loading():
    from softprompt.artifact import read_metadata

    path = FIXTURES / "format_v1" / "prompt" / "prompt.json"
    before = path.read_bytes()
    meta = read_metadata(path.parent)
    assert meta["method"] == "prompt_tuning" and meta["config"]["method"] == "prompt_tuning"
    assert path.read_bytes() == before and json.loads(before)["method"] == "prompt"
