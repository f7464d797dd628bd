"""The neutral start (softprompt/training/neutral.py): the full-vocabulary KL to the bare template against the model's
own forward, the fit lowering it on texts it never saw while only the prompt moves, and the encoder families."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic import learnable_backbone, synthetic_examples, synthetic_task

from softprompt.api import make_prompt_config, new_prompt
from softprompt.models.inputs import PromptInputs
from softprompt.scoring import Scorer
from softprompt.testing import tiny_backbone
from softprompt.training.neutral import (
    distillation_kl,
    every_position,
    fit_to_template,
    shared_inputs,
    template_kl,
    template_logprobs,
)


def model_kl(backbone, task, prompt, examples) -> float:
    """KL(bare ‖ prompted) over the vocabulary at every text position, text by text through the HF model itself."""
    vectors = prompt.materialize().embeds[0].detach()
    total = 0.0
    for ex in examples:
        ids = torch.tensor([backbone.tokenize(task.render(ex))])
        embeds = backbone.embed(ids)
        with torch.no_grad():
            bare = F.log_softmax(backbone.model(inputs_embeds=embeds).logits[0].float(), -1)
            both = torch.cat([vectors[None], embeds], 1)
            prompted = F.log_softmax(backbone.model(inputs_embeds=both).logits[0, len(vectors) :].float(), -1)
        total += float((bare.exp() * (bare - prompted)).sum(-1).mean())
    return total / len(examples)


@pytest.mark.parametrize("method", ["ulpt", "prompt_tuning"])
def test_template_kl_is_the_models_own_kl_at_every_text_position(method):
    backbone, task = learnable_backbone(), synthetic_task()
    scorer = Scorer(backbone, task)
    examples = synthetic_examples(6, 3)[:5] + [synthetic_examples(1, 4)[0]]  # texts of different lengths: padding
    prompt = new_prompt(make_prompt_config(method, 3, **({"rank": 2} if method == "ulpt" else {})), backbone, seed=1)
    expected = model_kl(backbone, task, prompt, examples)
    assert expected > 1e-3  # a random prompt changes the model
    assert template_kl(scorer, prompt, examples, batch_size=4) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # the key/value prefix the fit runs the prompt through is the inserted prompt, exactly
    assert shared_inputs(scorer, prompt).prefix_keys is not None


def test_a_prompt_that_changes_nothing_has_zero_kl():
    # three prompt vectors in slots the row does not use: the inserted sequence is the bare template again
    backbone, task = learnable_backbone(), synthetic_task()
    scorer = Scorer(backbone, task)
    examples = synthetic_examples(8, 0)
    batch = every_position(scorer, examples)
    unused = PromptInputs(embeds=torch.randn(1, 3, backbone.hidden_size), lengths=torch.tensor([0]))
    bare = template_logprobs(scorer, batch, None)
    kl = distillation_kl(bare, template_logprobs(scorer, batch, unused), batch.score_mask)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)
    used = PromptInputs(embeds=unused.embeds)
    assert float(distillation_kl(bare, template_logprobs(scorer, batch, used), batch.score_mask)) > 1e-3
    # every text token is read, and nothing else
    assert batch.score_mask.sum() == sum(len(backbone.tokenize(task.render(ex))) for ex in examples)


def test_fit_lowers_the_kl_on_unseen_texts_and_moves_only_the_prompt():
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    texts, held_out, unseen = synthetic_examples(32, 1), synthetic_examples(8, 2), synthetic_examples(16, 5)
    model_before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), backbone, seed=0)  # any method's start
    start = {k: v.clone() for k, v in prompt.state_dict().items()}
    before = template_kl(scorer, prompt, unseen)
    fit = fit_to_template(scorer, prompt, texts, steps=20, lr=0.03, batch_size=8, held_out=held_out, check_every=5)
    after = template_kl(scorer, prompt, unseen)
    assert before > 1e-3 and after < 0.75 * before, (before, after)
    assert len(fit.losses) == 20 and [s for s, _ in fit.held_out] == [0, 5, 10, 15, 20]
    # the prompt kept is the best held-out check, and that is what the prompt now scores
    assert template_kl(scorer, prompt, held_out) == pytest.approx(min(kl for _, kl in fit.held_out), rel=1e-5)
    assert dict(fit.held_out)[fit.best_step] == min(kl for _, kl in fit.held_out)
    assert all(torch.equal(v, model_before[k]) for k, v in backbone.model.state_dict().items())
    trainable = {name for name, p in prompt.named_parameters() if p.requires_grad}
    for name, value in prompt.state_dict().items():
        assert torch.equal(value, start[name]) != (name in trainable), name


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoder_families_fit_at_the_answer_position(arch):
    backbone = tiny_backbone(arch, init_scale=0.5) if arch == "roberta" else tiny_backbone(arch)
    scorer = Scorer(backbone, synthetic_task())
    texts = synthetic_examples(16, 1)
    prompt = new_prompt(make_prompt_config("prompt_tuning", 3), backbone, seed=0)
    before = template_kl(scorer, prompt, texts)
    fit_to_template(scorer, prompt, texts, steps=10, lr=0.01, batch_size=8)
    assert 0 <= template_kl(scorer, prompt, texts) < before


def test_fit_rejects_bad_settings():
    backbone = learnable_backbone()
    scorer = Scorer(backbone, synthetic_task())
    prompt = new_prompt(make_prompt_config("ulpt", 2, rank=2), backbone, seed=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        fit_to_template(scorer, prompt, synthetic_examples(4, 0), steps=-1, lr=0.01)
    with pytest.raises(ValueError, match="needs example texts"):
        fit_to_template(scorer, prompt, [], steps=1, lr=0.01)
    with pytest.raises(ValueError, match="check_every"):
        fit_to_template(scorer, prompt, synthetic_examples(4, 0), steps=1, lr=0.01, check_every=0)


def test_ulpt_neutral_start_is_the_sink_token_then_near_zero_vectors():
    backbone = learnable_backbone()
    config = make_prompt_config("ulpt", 6, rank=2, neutral_init=True, neutral_sink="review")
    prompt = new_prompt(config, backbone, seed=0)
    vectors = prompt.vectors().detach()
    sink = backbone.embed(torch.tensor([backbone.tokenize("review")[:1]]))[0, 0]
    torch.testing.assert_close(vectors[0], sink, atol=1e-5, rtol=1e-4)  # the token's own embedding
    rms = vectors[1:].pow(2).mean(-1).sqrt()
    assert bool((rms > 0.5e-4).all() and (rms < 2e-4).all()), rms
    # in ULPT's own form: the start is z, scale and shift, and the default stays the authors' z ~ N(0, 1)
    assert set(prompt.state_tensors()) == {"z", "scale", "shift"}
    default = new_prompt(make_prompt_config("ulpt", 6, rank=2), backbone, seed=0)
    assert torch.equal(default.scale, torch.ones_like(default.scale)) and not default.shift.any()
    assert torch.equal(default.z, torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))
