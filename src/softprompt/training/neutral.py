"""Start a prompt where the bare template is: fit it to the template's own label distribution before training.

    min_θ  mean_x KL( p(y | template(x))  ‖  p(y | [P_θ; template(x)]) )      over the training texts (labels unused)

Why a fit and not a closed-form init: a prompt of n vectors always changes a causal LM's output. On 200 SST-2 dev
sentences with SmolLM2 and n = 100 (bench/results/ulpt_identical_vector_init.md), every position set to the
embedding of <|endoftext|> cost 24.5 accuracy points against the bare template, zero vectors 18 (and exact zeros
give NaN gradients through RMSNorm), the authors' random start 5.5. Identical copies act like one extra attention
sink whose logit grows by about log n; zeros take the first text token's attention sink away. A few optimiser steps
on this KL bring the prompt back to the template's behaviour from whatever start the method has, and work for any
method (`ULPTConfig.neutral_init` turns it on for ULPT; bench/results/ulpt_neutral_init.md measures it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.training.batches import batch_indices


def template_kl(scorer: Scorer, prompt: SoftPrompt, examples: Sequence[Example]) -> float:
    """Mean KL(bare template ‖ template with `prompt`) of the label distributions on `examples`."""
    with torch.no_grad():
        batch = scorer.encode(examples)
        bare = F.log_softmax(scorer.label_scores(batch, None), -1)
        with_prompt = F.log_softmax(scorer.label_scores(batch, prompt.materialize()), -1)
        return float(F.kl_div(with_prompt, bare, log_target=True, reduction="batchmean"))


def fit_to_template(
    scorer: Scorer,
    prompt: SoftPrompt,
    examples: Sequence[Example],
    *,
    steps: int,
    lr: float,
    batch_size: int = 8,
    seed: int = 0,
) -> list[float]:
    """`steps` AdamW steps (constant lr) on the KL above; returns the KL of each step's batch (before the update)."""
    if steps < 0:
        raise ValueError(f"neutral fit steps must be >= 0, got {steps}")
    if not examples:
        raise ValueError("fitting a prompt to the template needs example texts")
    optimizer = torch.optim.AdamW(prompt.param_groups(lr), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        batch = scorer.encode([examples[i] for i in batch_indices(len(examples), batch_size, step, seed + 7919)])
        with torch.no_grad():
            bare = F.log_softmax(scorer.label_scores(batch, None), -1)
        with_prompt = F.log_softmax(scorer.label_scores(batch, prompt.materialize()), -1)
        loss = F.kl_div(with_prompt, bare, log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
