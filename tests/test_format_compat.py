"""Artifacts written by earlier formats keep loading, and give the label probabilities they gave when written."""

import json
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_task

from softprompt.artifact import PromptArtifact
from softprompt.evaluation import label_probabilities
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.testing import tiny_backbone

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
