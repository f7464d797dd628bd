"""Gradient training through the prompt's key/value prefix (`Backbone.as_prefix`, decoders): the prompt positions run
once per micro-batch instead of once per example, and the loss, every parameter's gradient and a whole training run
are those of the prompt inserted before every text."""

from __future__ import annotations

import pytest
import torch
from mixed import method_prompts, record_prefixes
from synthetic import synthetic_examples, synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.models.tiny import tiny_backbone
from softprompt.scoring import Scorer
from softprompt.training.trainer import TrainConfig, train_prompt


def loss_and_grads(scorer: Scorer, prompt: torch.nn.Module, through_prefix: bool) -> tuple[float, dict]:
    prompt.zero_grad(set_to_none=True)
    inputs = prompt.materialize()
    inputs = scorer.backbone.as_prefix(inputs) if through_prefix else inputs
    loss = scorer.loss(scorer.encode(synthetic_examples(6, seed=2)), inputs)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in prompt.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_loss_and_every_gradient_through_the_prefix_equal_the_inserted_prompts(arch: str) -> None:
    backbone = tiny_backbone(arch, seed=1, init_scale=0.5)
    scorer = Scorer(backbone, synthetic_task())
    prompts = method_prompts(backbone)
    prompts["prompt_tuning"] = new_prompt(make_prompt_config("prompt_tuning", 5), backbone, seed=7)
    layers = backbone.num_layers
    bbtv2 = new_prompt(make_prompt_config("bbtv2", 3, dim=8, num_layers=layers, projection_stds=[0.2] * layers),
                       backbone, seed=8)  # fmt: skip
    with torch.no_grad():
        bbtv2.z.normal_(0, 1.0)  # a deep prompt at every layer, off its zero start
    prompts["bbtv2"] = bbtv2
    taken = 0
    for name, prompt in prompts.items():
        inserted = prompt.materialize()
        taken += backbone.as_prefix(inserted) is not inserted
        fast, fast_grads = loss_and_grads(scorer, prompt, through_prefix=True)
        slow, slow_grads = loss_and_grads(scorer, prompt, through_prefix=False)
        assert fast == pytest.approx(slow, abs=1e-5), name
        assert fast_grads.keys() == slow_grads.keys() and fast_grads, name
        for key, grad in slow_grads.items():
            assert grad.abs().max() > 0, (name, key)  # a part without gradient would compare trivially
            torch.testing.assert_close(fast_grads[key], grad, atol=1e-5, rtol=1e-4, msg=f"{name}.{key}")
    # prompt tuning, DPT, DePT (its text update goes along), residual, the ULPT variants (the gate's too) and BBTv2
    # take the prefix; prefix tuning is one already
    assert taken == len(prompts) - 1


def test_a_sliding_window_shorter_than_the_prompt_keeps_the_inserted_prompt() -> None:
    backbone = tiny_backbone("gemma3", seed=1)  # sliding window 16: its cache keeps the newest 15 positions
    fits = new_prompt(make_prompt_config("prompt_tuning", 15), backbone, seed=0).materialize()
    too_long = new_prompt(make_prompt_config("prompt_tuning", 16), backbone, seed=0).materialize()
    assert backbone.as_prefix(fits).prefix_len == 15
    assert backbone.as_prefix(too_long) is too_long
    with pytest.raises(ValueError, match="sliding window"):
        backbone.prompt_prefix(too_long)  # what as_prefix avoids: the prefix would lose its first position


def train_counting_prefixes(tmp_path, monkeypatch, method: str, as_prefix: bool) -> tuple[dict, int]:
    """8 AdamW steps of 2 micro-batches on a tiny Llama: the prompt at the end, and how many prefixes were made."""
    backbone = tiny_backbone("llama", seed=1, init_scale=0.5)
    made = record_prefixes(backbone, monkeypatch)
    if not as_prefix:
        monkeypatch.setattr(backbone, "as_prefix", lambda p: p)
    prompt = new_prompt(make_prompt_config(method, 6, **({"rank": 2} if method == "ulpt" else {})), backbone, seed=0)
    config = TrainConfig(steps=8, batch_size=4, grad_accum=2, lr=0.05, eval_every=8, log_every=4)
    examples, validation = synthetic_examples(32, seed=0), synthetic_examples(8, seed=1)
    train_prompt(Scorer(backbone, synthetic_task()), prompt, examples, validation, config, tmp_path, progress=False)
    return prompt.state_tensors(), len(made)


@pytest.mark.parametrize("method", ["prompt_tuning", "ulpt"])
def test_training_through_the_prefix_ends_with_the_inserted_runs_prompt(tmp_path, monkeypatch, method) -> None:
    """The trainer as it is and with `as_prefix` turned off: the same prompt at the end, and the fast run made one
    prefix per micro-batch (plus one for its validation)."""
    fast, fast_calls = train_counting_prefixes(tmp_path / "prefix", monkeypatch, method, as_prefix=True)
    slow, slow_calls = train_counting_prefixes(tmp_path / "inserted", monkeypatch, method, as_prefix=False)
    assert fast_calls == 8 * 2 + 1 and slow_calls == 0
    assert fast.keys() == slow.keys()
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], atol=1e-5, rtol=1e-4, msg=key)
