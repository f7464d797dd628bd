"""`GenerationOptions`: the one place generation settings are declared and checked, for every backbone family."""

import pytest
import torch

from softprompt.models import GenerationOptions
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_options_and_keywords_decode_identically(arch: str) -> None:
    bb = tiny_backbone(arch)
    texts = ["the movie was good", "bad"]
    prompt = PromptInputs(embeds=torch.randn(1, 3, bb.hidden_size, generator=torch.Generator().manual_seed(0)))
    sampled = GenerationOptions(max_new_tokens=5, do_sample=True, temperature=1.5, top_p=0.9, seed=7)
    assert bb.generate(texts, prompt, options=sampled) == bb.generate(
        texts, prompt, 5, do_sample=True, temperature=1.5, top_p=0.9, seed=7
    )
    greedy = bb.generate(texts, prompt, options=GenerationOptions(max_new_tokens=4))
    assert greedy == bb.generate(texts, prompt, max_new_tokens=4)
    # a nucleus so small that only the top token survives is greedy decoding, whatever the temperature
    assert bb.generate(texts, prompt, 4, do_sample=True, top_p=1e-6, temperature=3.0, seed=1) == greedy


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"do_sample": True, "temperature": 0.0}, "temperature > 0"),
        ({"do_sample": True, "top_p": 1.5}, "0 < top_p <= 1"),
    ],
)
@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_bad_settings_fail_before_any_model_work(arch: str, settings: dict, message: str) -> None:
    bb = tiny_backbone(arch)
    with pytest.raises(ValueError, match=message):
        bb.generate(["the movie"], **settings)
    with pytest.raises(ValueError, match=message):
        GenerationOptions(**settings)


def test_one_stop_string_is_one_stop_and_options_or_keywords_not_both() -> None:
    assert GenerationOptions(stop="\n").stop == ("\n",)
    assert GenerationOptions(stop=["a", "b"]).stop == ("a", "b")
    bb = tiny_backbone("llama")
    with pytest.raises(ValueError, match="either as `options` or as keywords"):
        bb.generate(["the movie"], options=GenerationOptions(), max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="masked LM"):
        tiny_backbone("roberta").generate(["the movie"], options=GenerationOptions())
