"""How tuning and evaluation reach a model: score label words for many candidate prompts at once, and generate.

Every optimiser (gradient training's validation, CMA-ES search) and every evaluation talks to a model through the
`PromptEvaluator` protocol only. `LocalEvaluator` implements it on an in-process `Backbone`;
`softprompt.remote.client.RemoteEvaluator` over HTTP against `softprompt serve-lm`, with no access to weights or
gradients. Both must return the same numbers for the same inputs (tests/test_remote.py).

A population of P candidate prompts (a `PromptInputs` of P rows) is scored on K examples in about ⌈P·K / chunk_size⌉
forward passes of at most `chunk_size` rows: the K examples are sorted by token length and cut into parts of
⌊chunk_size / P⌋ examples (at least one), and each part is encoded once, padded only to its own longest text, and
repeated once per candidate (each row gets its candidate's prompt). On few-shot sets the texts' lengths vary
several-fold: one batch padded to its longest text is ~60% padding on 16-shot SST-2 and RTE (bench/eval_buckets.py).
Only the verbalizer logits are computed. The plan of passes is `softprompt.models.population`, which the remote
endpoint follows too.

On a decoder-only model an input-layer prompt (deep prompts included) is first turned into its key/value prefix
(`Backbone.prompt_prefix`, the prompt's exact effect: its positions never attend to the text), once per candidate,
so the n prompt positions run once instead of once per example; with n = 20 vectors in front of SST-2 sentences
that is about a third of every evaluation's tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from softprompt.models import population, statistics
from softprompt.models.backbone import Backbone
from softprompt.models.inputs import PromptInputs
from softprompt.prompts.base import ModelAccess
from softprompt.scoring import Scorer, ScoringBatch
from softprompt.tasks.base import Example, Task


class PromptEvaluator(ModelAccess, Protocol):
    task: Task

    def describe(self) -> dict[str, Any]:
        """Model identity (name, kind, hidden size, layers, fingerprint) for the artifact."""
        ...

    def label_scores(self, examples: Sequence[Example], prompts: PromptInputs, shared_layers: int = 0) -> torch.Tensor:
        """(P, K, C) label scores of K examples under each of the P rows of `prompts`.

        shared_layers = l: a promise that the rows agree on everything except the deep prompts of layers >= l,
        which an implementation may exploit (compute the lower layers once); it must not change the result."""
        ...

    def generate(self, examples: Sequence[Example], prompt: PromptInputs, **options: Any) -> list[str]:
        """The answer text for each example (generation tasks)."""
        ...


class BackboneAccess:
    """`ModelAccess` on an in-process backbone, for initialising prompts without a task."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.chunk_size = 64

    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def describe(self) -> dict[str, Any]:
        return self.backbone.describe()

    def check_prompt_fits(self, prompt_len: int) -> None:
        self.backbone.check_prompt_fits(prompt_len)

    def embedding_std(self) -> float:
        return statistics.embedding_std(self.backbone)

    def vocab_embeddings(self, n: int, pool: int, seed: int) -> tuple[torch.Tensor, list[int]]:
        return statistics.vocab_embeddings(self.backbone, n, pool, seed)

    def text_embeddings(self, text: str, n: int) -> torch.Tensor:
        return statistics.text_embeddings(self.backbone, text, n)

    def key_value_prefix(self, embeds: torch.Tensor) -> PromptInputs:
        """The model's own per-layer keys and values of (n, D) input vectors (decoder-only models; else ValueError)."""
        with torch.no_grad():
            return self.backbone.prompt_prefix(PromptInputs(embeds=embeds.unsqueeze(0))).to("cpu")

    def hidden_state_stds(self, examples: Sequence[Example], prompt: PromptInputs) -> list[float]:
        raise ValueError("hidden-state statistics are measured on a task's examples: use a LocalEvaluator")


class LocalEvaluator(BackboneAccess):
    """`PromptEvaluator` (and `ModelAccess`) on an in-process backbone."""

    def __init__(self, scorer: Scorer, chunk_size: int = 64, cache_size: int = 8, prefix: bool = True) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        super().__init__(scorer.backbone)
        self.scorer = scorer
        self.task = scorer.task
        self.chunk_size = chunk_size
        self._encoded: OrderedDict[tuple[tuple[Example, ...], int], list[tuple[ScoringBatch, torch.Tensor]]] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self.prefix = prefix  # score through each prompt's key/value prefix where the model has one (same numbers)
        self.forward_passes = 0  # for benchmarks and tests

    def hidden_state_stds(self, examples: Sequence[Example], prompt: PromptInputs) -> list[float]:
        batch = self.backbone.encode([self.task.render(ex) for ex in examples])
        return statistics.hidden_state_stds(self.backbone, batch, prompt, chunk_rows=self.chunk_size)

    # --- scoring -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def label_scores(self, examples: Sequence[Example], prompts: PromptInputs, shared_layers: int = 0) -> torch.Tensor:
        if self.task.kind != "classification":
            raise ValueError(f"label scores need a classification task; {self.task.name!r} is {self.task.kind}")
        prompts = prompts.to(self.backbone.device)  # move once; the per-row copies are made on the device
        parts = self._encode(examples, self.chunk_size // prompts.num_rows)
        scores = torch.empty(prompts.num_rows, len(examples), self.scorer.num_labels)
        encoded = [part.encoded for part, _ in parts]
        for step in population.passes(self.backbone, encoded, prompts, self.chunk_size, shared_layers, self.prefix):
            part, index = parts[step.part]
            c = len(step.candidates)
            out = self.scorer.label_scores(part.repeat(c), step.prompts, start=step.start)
            self.forward_passes += 1
            scores[step.candidates[:, None], index] = out.view(c, part.num_examples, -1).cpu().float()
        return scores

    def generate(self, examples: Sequence[Example], prompt: PromptInputs, **options: Any) -> list[str]:
        """Decoded through the prompt's key/value prefix where the model has one (the same text, the prompt run once
        instead of once per example)."""
        if prompt is not None and self.prefix:
            with torch.inference_mode():
                prompt = self.backbone.as_prefix(prompt)
        return self.backbone.generate([self.task.render(ex) for ex in examples], prompt, **options)

    def _encode(self, examples: Sequence[Example], per_part: int) -> list[tuple[ScoringBatch, torch.Tensor]]:
        """The examples sorted by token length and cut into parts of at most `per_part` examples (and at most
        `chunk_size` rows), each padded to its own longest and paired with its examples' positions in `examples`."""
        if not examples:
            raise ValueError("no examples to score")
        key = (tuple(examples), per_part)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        batch = self.scorer.encode(examples)
        step = min(per_part, self.chunk_size // batch.rows_per_example)
        parts = [(batch.select(index), index) for index in population.by_length(batch.lengths(), step)]
        self._encoded[key] = parts
        if len(self._encoded) > self._cache_size:
            self._encoded.popitem(last=False)
        return parts
