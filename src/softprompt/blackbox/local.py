"""`LocalEvaluator`: the `PromptEvaluator` protocol on an in-process backbone.

A CMA-ES population is scored in as few forward passes as `chunk_size` (rows per forward) allows: the K examples
are encoded once, repeated once per candidate (`ScoringBatch.repeat`), and each row gets its candidate's prompt,
so P candidates × K examples cost ⌈P·K / chunk_size⌉ passes instead of P. Only the verbalizer logits are computed.
The statistics (embedding std, clipped hidden-state stds) are the endpoint's own functions, so local and remote
searches start from the same numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from softprompt.prompts.prompt_tuning import sample_vocab_embeddings
from softprompt.remote import inference
from softprompt.scoring import Scorer, ScoringBatch
from softprompt.tasks.base import Example


class LocalEvaluator:
    def __init__(self, scorer: Scorer, chunk_size: int = 64, cache_size: int = 8) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if scorer.task.kind != "classification":
            raise NotImplementedError(f"black-box scoring covers classification tasks; {scorer.task.name!r} is not")
        self.scorer = scorer
        self.backbone = scorer.backbone
        self.chunk_size = chunk_size
        self._encoded: OrderedDict[tuple[Example, ...], list[ScoringBatch]] = OrderedDict()
        self._cache_size = cache_size
        self.forward_passes = 0  # for benchmarks and tests

    # --- the protocol ------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def describe(self) -> dict[str, Any]:
        return self.backbone.describe()

    def embedding_std(self) -> float:
        return inference.embedding_std(self.backbone)

    def hidden_state_stds(self, examples: Sequence[Example], prompt: torch.Tensor) -> list[float]:
        batch = self.backbone.encode([self.scorer.task.render(ex) for ex in examples])
        return inference.hidden_state_stds(self.backbone, batch, prompt, chunk_rows=self.chunk_size)

    @torch.inference_mode()
    def label_scores(
        self,
        examples: Sequence[Example],
        prompts: torch.Tensor,
        deep: torch.Tensor | None = None,
        shared_layers: int = 0,
    ) -> torch.Tensor:
        """(P, K, C) label scores; prompts (P, n, D), deep (L, P, n, D) or None.

        `shared_layers` = l promises that the input prompt and deep[:l] are the same for every candidate (BBTv2 varies
        one layer at a time): on decoder-only models the layers below l then run once, not once per candidate.
        """
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0)
        device = self.backbone.device  # move once; the per-row copies below are then made on the model device
        prompts, deep = prompts.to(device), None if deep is None else deep.to(device)
        num = prompts.shape[0]
        if deep is not None and deep.shape[1] != num:
            raise ValueError(f"deep prompts cover {deep.shape[1]} candidates, prompts {num}")
        reuse = shared_layers > 0 and deep is not None and self.backbone.can_start_at_layer
        columns = []
        for part in self._encode(examples):
            rows = len(part.encoded)  # rows of one copy of this part
            per_pass = max(1, self.chunk_size // rows)  # candidates per forward pass
            shared = None
            if reuse:  # the input of layer `shared_layers`, once, with candidate 0's (shared) lower prompts
                inputs = self.backbone.layer_inputs(part.encoded, prompts[:1], deep[:, :1], layers=[shared_layers])
                shared = inputs[shared_layers]
            scores = []
            for start in range(0, num, per_pass):
                idx = torch.arange(start, min(start + per_pass, num))
                batch = part.repeat(len(idx))
                # repeat() is candidate-major: rows [c·rows, (c+1)·rows) belong to candidate c
                row_prompts = prompts[idx].repeat_interleave(rows, dim=0)
                row_deep = None if deep is None else deep[:, idx].repeat_interleave(rows, dim=1)
                resume_at = None if shared is None else (shared_layers, shared.repeat(len(idx), 1, 1))
                out = self.scorer.label_scores(batch, row_prompts, row_deep, start=resume_at)
                self.forward_passes += 1
                scores.append(out.view(len(idx), part.num_examples, -1).cpu())
            columns.append(torch.cat(scores))
        return torch.cat(columns, dim=1)

    # --- extension: the P₀ of BBT/BBTv2 from real token embeddings ------------------------------------------------
    def vocab_prompt(self, prompt_len: int, seed: int, pool: int = 5000) -> tuple[torch.Tensor, list[int]]:
        """n embeddings of seeded vocabulary ids (as vanilla prompt tuning initialises), and the ids."""
        return sample_vocab_embeddings(self.backbone, prompt_len, pool, seed)

    # --- encoding, once per example list ---------------------------------------------------------------------------
    def _encode(self, examples: Sequence[Example]) -> list[ScoringBatch]:
        """The examples as batches of at most `chunk_size` rows (one batch unless K·rows_per_example is larger)."""
        key = tuple(examples)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        per_example = 1 if self.scorer.single_token else self.scorer.num_labels
        step = max(1, self.chunk_size // per_example)
        parts = [self.scorer.encode(examples[i : i + step]) for i in range(0, len(examples), step)]
        self._encoded[key] = parts
        if len(self._encoded) > self._cache_size:
            self._encoded.popitem(last=False)
        return parts
