"""LocalEvaluator scores through each prompt's key/value prefix on decoders: the same numbers as the inserted prompt."""

import pytest
import torch

from softprompt.evaluator import LocalEvaluator
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone
from softprompt.scoring import Scorer
from tests.mixed import record_prefixes
from tests.synthetic import synthetic_examples, synthetic_task


def random_prompts(backbone, rows: int, n: int, deep: bool = False, lengths=None, seed: int = 0) -> PromptInputs:
    gen = torch.Generator().manual_seed(seed)
    d = backbone.hidden_size
    embeds = 0.5 * torch.randn(rows, n, d, generator=gen)
    deep_t = 0.5 * torch.randn(backbone.num_layers, rows, n, d, generator=gen) if deep else None
    return PromptInputs(embeds=embeds, deep=deep_t, lengths=None if lengths is None else torch.tensor(lengths))


def both(backbone, prompts: PromptInputs, chunk_size: int = 64):
    scorer = Scorer(backbone, synthetic_task())
    examples = synthetic_examples(12, seed=3)
    fast, slow = LocalEvaluator(scorer, chunk_size, prefix=True), LocalEvaluator(scorer, chunk_size, prefix=False)
    return fast.label_scores(examples, prompts), slow.label_scores(examples, prompts)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize(
    ("rows", "deep", "lengths"),
    [(1, False, None), (5, False, None), (3, False, [4, 1, 2]), (4, True, None)],
    ids=["one prompt", "population", "mixed lengths", "deep (BBTv2)"],
)
def test_prefix_scores_equal_inserted_prompt_scores(arch, rows, deep, lengths):
    backbone = tiny_backbone(arch, seed=1, init_scale=0.5)
    prompts = random_prompts(backbone, rows, 4, deep=deep, lengths=lengths)
    fast, slow = both(backbone, prompts, chunk_size=16)  # several forward passes per candidate group
    assert fast.shape == slow.shape == (rows, 12, 2)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_the_prefix_path_is_taken_and_runs_each_prompt_once(monkeypatch):
    backbone = tiny_backbone("llama", seed=1)
    made = record_prefixes(backbone, monkeypatch)
    prompts = random_prompts(backbone, 3, 4)
    both(backbone, prompts, chunk_size=8)
    # once per candidate, not once per example or per chunk; prefix=False never calls it
    assert [p.num_rows for p in made] == [1, 1, 1]


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoders_keep_the_inserted_prompt(arch):
    backbone = tiny_backbone(arch, seed=1)
    fast, slow = both(backbone, random_prompts(backbone, 2, 4))
    assert torch.equal(fast, slow)  # no prefix exists for them: the very same computation


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_text_update_goes_along_with_the_prefix(arch, monkeypatch):
    """DePT: the prompt positions still never see the text, so they become a prefix; each row's update of the text's
    embeddings stays with its row and acts as with the inserted prompt."""
    backbone = tiny_backbone(arch, seed=1, init_scale=0.5)
    made = record_prefixes(backbone, monkeypatch)
    prompts = random_prompts(backbone, 3, 4)
    delta = 0.3 * torch.randn(3, backbone.max_length, backbone.hidden_size)  # DePT's update of the text's embeddings
    with_update = PromptInputs(embeds=prompts.embeds, text_delta=delta)
    fast, slow = both(backbone, with_update, chunk_size=16)
    assert [p.text_delta is not None for p in made] == [True, True, True]  # a prefix per row, with its update
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    without, _ = both(backbone, prompts, chunk_size=16)
    assert not torch.allclose(fast, without, atol=1e-3)  # the update does act


@pytest.mark.parametrize(("arch", "init"), [("llama", {"init_scale": 0.5}), ("gemma3", {})])
def test_generation_through_the_prefix_decodes_the_inserted_prompts_text(arch, init, monkeypatch):
    backbone = tiny_backbone(arch, seed=1, **init)  # inits at which greedy text follows the prompt
    made = record_prefixes(backbone, monkeypatch)
    scorer, examples = Scorer(backbone, synthetic_task()), synthetic_examples(5, seed=4)
    prompt = random_prompts(backbone, 1, 4, deep=True)
    fast = LocalEvaluator(scorer, prefix=True).generate(examples, prompt, max_new_tokens=6)
    assert len(made) == 1
    slow = LocalEvaluator(scorer, prefix=False).generate(examples, prompt, max_new_tokens=6)
    assert fast == slow and len(made) == 1
    assert slow != LocalEvaluator(scorer).generate(examples, None, max_new_tokens=6)  # the prompt does steer it
