"""Masked LMs (RoBERTa, XLM-R, BERT, ...): the prompt goes right after the first special token; the answer is read
at <mask> positions after the text.

Layout of one row: [<s>/CLS] [prompt (n)] [text tokens] [<mask> x m] [</s>/SEP] [padding], with m = the number of
continuation tokens (at least 1). Putting the prompt after <s> rather than before it (as BBT does) keeps the
sentence-start token where pre-training always saw it.

A key/value prefix goes into each block's self-attention (the wrapper in backbone.py) at the same place, after
<s>: <s> keeps position 0 and the text's positions move by the row's prefix length.

Multi-token label words are scored PET-style: all m masks are predicted in one pass, each independently of the
others (no teacher forcing — a masked LM cannot condition one mask on the next's answer). The label's score is then
the sum of the per-mask log-probabilities, an approximation of the word's true probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from softprompt.models.backbone import Backbone, EncodedBatch, GenerationOptions, Inserted, OnStep, pad_2d
from softprompt.models.inputs import PromptInputs


class MaskedLMBackbone(Backbone):
    kind = "mlm"
    prompt_offset = 1

    def _find_layers(self) -> nn.ModuleList:
        return self.model.base_model.encoder.layer

    @property
    def max_positions(self) -> int | None:
        """RoBERTa-style models number positions from padding_idx + 1: that many fewer are usable."""
        limit = super().max_positions
        if limit is not None and "roberta" in str(getattr(self.config, "model_type", "")):
            limit -= (self.config.pad_token_id or 0) + 1
        return limit

    def _special(self, *names: str) -> int:
        for name in names:  # explicit None checks: RoBERTa's <s> has id 0
            token_id = getattr(self.tokenizer, f"{name}_token_id", None)
            if token_id is not None:
                return token_id
        raise ValueError(f"the tokenizer of {self.name} has none of the tokens {names}")

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        continuations = continuations or [[] for _ in texts]
        cls, sep, mask = self._special("cls", "bos"), self._special("sep", "eos"), self._special("mask")
        rows, positions, truncated = [], [], 0
        for text, cont in zip(texts, continuations, strict=True):
            m = max(1, len(cont))
            ids, cut = self._truncate(self.tokenize(text), reserve=m + 2)
            truncated += cut
            rows.append([cls, *ids, *([mask] * m), sep])
            positions.append([1 + len(ids) + j for j in range(m)])
        input_ids, attention_mask = pad_2d(rows, self.tokenizer.pad_token_id)
        score_index, score_mask = pad_2d(positions, 0)
        return EncodedBatch(input_ids, attention_mask, score_index, score_mask.bool(), num_truncated=truncated)

    def _run(self, x: Inserted, batch: EncodedBatch) -> torch.Tensor:
        # Right padding keeps the position ids the model derives for inputs_embeds (0..T-1 + offset) exact; a
        # key/value prefix (after <s>, like an input-layer prompt) moves the text's positions by its length.
        positions = None if x.positions is None else x.positions + self._first_position
        return self.model.base_model(
            inputs_embeds=x.embeds, attention_mask=x.mask, position_ids=positions
        ).last_hidden_state

    @property
    def _first_position(self) -> int:
        """The position id of the first token: RoBERTa-style embeddings count from padding_idx + 1, BERT from 0."""
        embeddings = self.model.base_model.embeddings
        if hasattr(embeddings, "create_position_ids_from_inputs_embeds"):
            return embeddings.padding_idx + 1
        return 0

    def _read_out(self, hidden: torch.Tensor, batch: EncodedBatch, x: Inserted) -> torch.Tensor:
        """The MLM head's transform output at the masks: what its decoder matrix (the output embedding) multiplies."""
        return self._head_transform(super()._read_out(hidden, batch, x))

    def _head_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The MLM head up to (not including) the vocabulary projection."""
        lm_head = getattr(self.model, "lm_head", None)
        if lm_head is not None and hasattr(lm_head, "dense") and hasattr(lm_head, "layer_norm"):  # RoBERTa family
            from transformers.activations import gelu

            return lm_head.layer_norm(gelu(lm_head.dense(hidden)))
        cls = getattr(self.model, "cls", None)
        if cls is not None and hasattr(getattr(cls, "predictions", None), "transform"):  # BERT family
            return cls.predictions.transform(hidden)
        raise NotImplementedError(f"unknown masked-LM head on {type(self.model).__name__}")

    def _generate(
        self, texts: list[str], prompt: PromptInputs | None, options: GenerationOptions, on_step: OnStep | None = None
    ) -> list[str]:
        raise NotImplementedError(
            f"{self.name} is a masked LM: it fills <mask> slots but cannot generate free text; "
            "use a causal or seq2seq backbone for generation tasks"
        )
