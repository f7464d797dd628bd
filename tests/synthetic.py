"""A tiny synthetic sentiment task the tiny models can learn quickly (words from softprompt.testing.WORDS)."""

import random

from softprompt.tasks.base import Example, Task

POSITIVE = ["good", "great", "fine", "fun"]
NEGATIVE = ["bad", "awful", "boring", "not"]
FILLER = ["the", "movie", "film", "was", "is", "it", "very", "a", "and"]


def synthetic_task() -> Task:
    return Task(
        name="synthetic-sentiment",
        template="review : {text} . sentiment :",
        labels=("negative", "positive"),
        verbalizer=(" negative", " positive"),
    )


def synthetic_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        out.append(Example(" ".join(words), label=label, source=f"synthetic:{i}"))
    return out


def learnable_backbone(seed: int = 0):
    """A tiny random Llama whose larger init scale lets a 4-vector prompt steer it (0.02 init barely can)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from softprompt.models.causal import CausalLMBackbone
    from softprompt.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.5,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return CausalLMBackbone(AutoModelForCausalLM.from_config(config), tok, name="tiny-learnable")
