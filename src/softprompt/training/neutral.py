"""Start a prompt where the bare template is: distil the template's own next-token distributions into the prompt.

    min_θ  mean_x  mean_{t ∈ T(x)}  KL( p(· | template(x)_{≤t})  ‖  p(· | [P_θ; template(x)_{≤t}]) )

over the whole vocabulary, on training texts (labels unused). T(x) is every text position for a decoder-only model
(the prompt is then a key/value prefix every position reads, and the teacher is the same forward without it) and the
answer position for the other families. The teacher is the frozen model on the bare template, so at KL = 0 the
prompted model predicts exactly what the template did.

Why this target: no closed form is the bare template (bench/results/ulpt_identical_vector_init.md: n copies of one
vector are n attention sinks, -18 to -24.5 points), and the 2-label KL of the first version gives one number per text,
so 30 steps fitted the training batches (KL 0.13 → 0.06) while dev accuracy fell further (-8.5 points against -5.5 for
the untouched start). The full distribution at every position gives |T|·V numbers per text about what the prompt
does to the text's hidden states, not only to the answer's two logits (bench/results/ulpt_neutral_init_rejected.md).

A decoder's prompt is computed once per step through its key/value prefix (`Backbone.prompt_prefix`, exact), not
once per text. The fit keeps the prompt with the lowest KL on `held_out` texts, checked every `check_every` steps.
It trains whatever `prompt.param_groups` holds, so it works for any method; ULPT runs it for `neutral_steps` after
its neutral start (default 0 steps). Measured: from the authors' start, 30 steps halve the held-out KL (1.06 → 0.56
nats per position) but SST-2 accuracy falls further (bench/results/ulpt_neutral_init_rejected.md); at ~20 s a step
on one CPU thread the hundreds of steps it would need are no init, so the closed-form start carries ULPT's option.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from softprompt.models.backbone import EncodedBatch
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import SoftPrompt
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example
from softprompt.training.batches import batch_indices

NEUTRAL_HELD_OUT = 32  # held-out texts the trainer checks the fit on (validation texts, labels unused)


@dataclass
class FitResult:
    losses: list[float]  # KL of each step's batch, before the update
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out KL) at each check
    best_step: int = 0  # the step whose prompt was kept (0: the start)


def every_position(scorer: Scorer, examples: Sequence[Example]) -> EncodedBatch:
    """The rendered templates of `examples`, read at every text position (decoders) or the answer position."""
    encoded = scorer.backbone.encode([scorer.task.render(ex) for ex in examples])
    if not scorer.backbone.prefix_in_cache:  # an encoder reads one answer position per text
        return encoded
    mask = encoded.attention_mask.bool()
    index = torch.arange(mask.shape[1]).expand_as(mask) * mask
    return EncodedBatch(encoded.input_ids, encoded.attention_mask, index, mask, encoded.extras, encoded.num_truncated)


def shared_inputs(scorer: Scorer, prompt: SoftPrompt) -> PromptInputs:
    """The prompt as the model reads it: one key/value prefix for a decoder (run once, not once per text)."""
    return scorer.backbone.as_prefix(prompt.materialize())


def template_logprobs(scorer: Scorer, batch: EncodedBatch, prompt: PromptInputs | None) -> torch.Tensor:
    """(B, S, V) next-token log-probabilities over the vocabulary at the batch's read positions."""
    return F.log_softmax(scorer.backbone.logits(scorer.backbone.hidden_states(batch, prompt)).float(), -1)


def distillation_kl(bare: torch.Tensor, prompted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over texts of the mean over their read positions of KL(bare ‖ prompted), from log-probabilities."""
    per_position = (bare.exp() * (bare - prompted)).sum(-1)  # (B, S)
    mask = mask.to(per_position.device, per_position.dtype)
    return ((per_position * mask).sum(-1) / mask.sum(-1)).mean()


def template_kl(scorer: Scorer, prompt: SoftPrompt, examples: Sequence[Example], batch_size: int = 16) -> float:
    """The objective above on `examples` (no gradients): 0 for a prompt that changes nothing."""
    total = 0.0
    with torch.no_grad():
        inputs = shared_inputs(scorer, prompt)
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = every_position(scorer, chunk)
            kl = distillation_kl(template_logprobs(scorer, batch, None), template_logprobs(scorer, batch, inputs),
                                 batch.score_mask)  # fmt: skip
            total += float(kl) * len(chunk)
    return total / len(examples)


def fit_to_template(
    scorer: Scorer,
    prompt: SoftPrompt,
    examples: Sequence[Example],
    *,
    steps: int,
    lr: float,
    batch_size: int = 8,
    seed: int = 0,
    held_out: Sequence[Example] = (),
    check_every: int = 10,
) -> FitResult:
    """`steps` Adam steps (constant lr) on the KL above; with `held_out` texts, the prompt ends at its best check."""
    if steps < 0:
        raise ValueError(f"neutral fit steps must be >= 0, got {steps}")
    if not examples:
        raise ValueError("fitting a prompt to the template needs example texts")
    if check_every <= 0:
        raise ValueError(f"check_every must be positive, got {check_every}")
    optimizer = torch.optim.Adam(prompt.param_groups(lr), lr=lr)
    result = FitResult([])
    best = (template_kl(scorer, prompt, held_out), copy.deepcopy(prompt.state_dict())) if held_out and steps else None
    if best:
        result.held_out.append((0, best[0]))
    for step in range(1, steps + 1):
        batch = every_position(scorer, [examples[i] for i in batch_indices(len(examples), batch_size, step - 1, seed)])
        with torch.no_grad():
            bare = template_logprobs(scorer, batch, None)
        loss = distillation_kl(bare, template_logprobs(scorer, batch, shared_inputs(scorer, prompt)), batch.score_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.losses.append(loss.item())
        if best and (step % check_every == 0 or step == steps):
            kl = template_kl(scorer, prompt, held_out)
            result.held_out.append((step, kl))
            if kl < best[0]:
                best, result.best_step = (kl, copy.deepcopy(prompt.state_dict())), step
    if best:
        prompt.load_state_dict(best[1])
    else:
        result.best_step = steps
    return result
