"""Decoder-only LMs (Llama, SmolLM2, Gemma, Qwen, GPT-2, ...): the prompt is prepended to the input embeddings.

Layout of one row: [prompt (n)] [text tokens] [continuation tokens except the last] [padding]. Right padding keeps
position ids contiguous for the real tokens, and the answer is read at the last text token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from softprompt.models.backbone import Backbone, EncodedBatch, gather_positions, pad_2d


def find_layer_stack(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a decoder: the ModuleList whose length is the configured layer count."""
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")


class CausalLMBackbone(Backbone):
    kind = "causal"
    can_start_at_layer = True  # hidden_states(start=...) skips the layers below a precomputed input

    @property
    def layers(self) -> nn.ModuleList:
        return find_layer_stack(self.model)

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        continuations = continuations or [[] for _ in texts]
        rows, positions, truncated = [], [], 0
        for text, cont in zip(texts, continuations, strict=True):
            fed_cont = list(cont[:-1])  # the last continuation token is predicted, never fed
            ids, cut = self._truncate(self.tokenizer(text)["input_ids"], reserve=len(fed_cont))
            truncated += cut
            rows.append(ids + fed_cont)
            last = len(ids) - 1
            positions.append([last + j for j in range(max(1, len(cont)))])
        input_ids, attention_mask = pad_2d(rows, self.tokenizer.pad_token_id)
        score_index, score_mask = pad_2d(positions, 0)
        return EncodedBatch(input_ids, attention_mask, score_index, score_mask.bool(), num_truncated=truncated)

    def hidden_states(
        self,
        batch: EncodedBatch,
        prompt: torch.Tensor | None = None,
        deep: torch.Tensor | None = None,
        start: tuple[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`start=(l, h)`: h (B, n+T, D) is the hidden state entering layer l (from `Backbone.layer_inputs`), and the
        layers below l are skipped. BBTv2 varies one layer's prompt per generation, so everything below it is shared
        by all candidates."""
        embeds = self.embed(batch.input_ids)
        mask = batch.attention_mask.to(self.device)
        size, n = embeds.shape[0], 0
        if prompt is not None:
            prompt = self._batch_prompt(prompt.to(self.device, embeds.dtype), size)
            n = prompt.shape[1]
            embeds = torch.cat([prompt, embeds], dim=1)
            mask = torch.cat([mask.new_ones(size, n), mask], dim=1)
        elif deep is not None:
            raise ValueError("a deep prompt needs an input prompt to mark its positions")
        with self._deep_prompt_hooks(deep, start=0, batch_size=size), self._skip_layers(start):
            out = self.model.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return gather_positions(out.last_hidden_state, batch.score_index.to(self.device) + n)

    @contextmanager
    def _skip_layers(self, start: tuple[int, torch.Tensor] | None) -> Iterator[None]:
        """Replace layers [0, l) by a stand-in that hands layer l the precomputed hidden state."""
        if start is None or start[0] == 0:
            yield
            return
        layer, hidden = start
        skipped = list(self.layers[:layer])
        for module in skipped:
            module.forward = lambda *args, **kwargs: hidden  # instance attribute shadows the class method
        try:
            yield
        finally:
            for module in skipped:
                del module.forward

    @torch.no_grad()
    def generate(self, texts: Sequence[str], prompt: torch.Tensor | None, max_new_tokens: int = 32) -> list[str]:
        """Greedy decoding after [prompt; text], one row at a time (no padding inside the prompt to reason about)."""
        outputs = []
        for text in texts:
            ids, _ = self._truncate(self.tokenizer(text)["input_ids"], reserve=max_new_tokens)
            embeds = self.embed(torch.tensor([ids]))
            if prompt is not None:
                embeds = torch.cat([self._batch_prompt(prompt.to(embeds.dtype), 1), embeds], dim=1)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
            new = self.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            outputs.append(self.tokenizer.decode(new[0], skip_special_tokens=True))
        return outputs
