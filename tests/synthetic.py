"""A tiny synthetic sentiment task the tiny models can learn quickly (words from softprompt.models.tiny.WORDS)."""

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
    from softprompt.models.tiny import tiny_backbone

    return tiny_backbone("llama", seed=seed, init_scale=0.5)
