"""Decoder-only LMs (Llama, SmolLM2, Gemma, Qwen, GPT-2, ...): the prompt is prepended to the input embeddings.

Scoring layout of one row: [prompt (n)] [text tokens] [continuation tokens except the last] [padding]. Right padding
keeps each row's real tokens at positions 0.. so the model's default position ids are exact, and the answer is read
at the last text token. Generation left-pads instead (every row's next token is the last column) and passes the
position ids explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from softprompt.models.backbone import (
    Backbone,
    Decoded,
    EncodedBatch,
    GenerationOptions,
    Inserted,
    OnStep,
    _LayerPlan,
    cache_keyword,
    pad_2d,
)
from softprompt.models.inputs import PromptInputs


def find_layer_stack(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a decoder: the ModuleList whose length is the configured layer count."""
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")


class CausalLMBackbone(Backbone):
    kind = "causal"
    prompt_offset = 0
    can_start_at_layer = True
    prefix_in_cache = True

    def _find_layers(self) -> nn.ModuleList:
        return find_layer_stack(self.model)

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        continuations = continuations or [[] for _ in texts]
        rows, positions, truncated = [], [], 0
        for text, cont in zip(texts, continuations, strict=True):
            fed_cont = list(cont[:-1])  # the last continuation token is predicted, never fed
            ids, cut = self._truncate(self._token_ids(text), reserve=len(fed_cont))
            truncated += cut
            rows.append(ids + fed_cont)
            last = len(ids) - 1
            positions.append([last + j for j in range(max(1, len(cont)))])
        input_ids, attention_mask = pad_2d(rows, self.tokenizer.pad_token_id)
        score_index, score_mask = pad_2d(positions, 0)
        return EncodedBatch(input_ids, attention_mask, score_index, score_mask.bool(), num_truncated=truncated)

    def _insert_prefix(self, inserted: Inserted, prompt: PromptInputs) -> None:
        """The key/value prefix as a pre-filled cache (the model's own past_key_values): the attention mask gains
        the row's used slots in front, and the sequence's positions continue after them."""
        from transformers import DynamicCache

        self._check_prefix(prompt)
        used, inserted.positions = self._prefix_slots(inserted, prompt)
        cache = DynamicCache(config=self.config)
        for layer in range(self.num_layers):
            cache.update(prompt.prefix_keys[layer], prompt.prefix_values[layer], layer)
        inserted.mask = torch.cat([used.to(inserted.mask.dtype), inserted.mask], dim=1)
        inserted.cache = cache

    def _run(self, x: Inserted, batch: EncodedBatch | None) -> torch.Tensor:
        out = self.model.base_model(
            inputs_embeds=x.embeds,
            attention_mask=x.mask,
            position_ids=x.positions,
            use_cache=x.cache is not None,
            **{cache_keyword(self.model.base_model.forward): x.cache},
        )
        return out.last_hidden_state

    def prompt_prefix(self, prompt: PromptInputs) -> PromptInputs:
        """The key/value prefix that acts exactly like a one-row input prompt (its deep prompts included).

        In a decoder the prompt positions never attend to the text, so their keys and values depend on the prompt
        alone: computed once per prompt, they can stand in for it in every request (the prompt prefix cache). A gate
        acts on the text's attention to them only, and a text update (DePT) on the text's own embeddings, so both
        stay with the prefix."""
        from transformers import DynamicCache

        if prompt.num_rows != 1 or prompt.embeds is None:
            raise ValueError("a prompt prefix is made from one row of input-layer vectors")
        if prompt.prefix_keys is not None:
            raise ValueError("this prompt already carries a key/value prefix")
        n = int(prompt.row_lengths()[0])
        prompt = prompt.to(self.device, self.dtype)
        embeds = prompt.embeds[:, :n]
        deep = None if prompt.deep is None else prompt.deep[:, :, :n]
        cache = DynamicCache(config=self.config)
        plan = _LayerPlan(deep, self.prompt_offset) if deep is not None else None
        self._with_plan(
            plan, self._run, Inserted(embeds, embeds.new_ones(1, n, dtype=torch.long), None, deep, cache), None
        )
        keys = torch.stack([layer.keys for layer in cache.layers])  # (L, 1, H, n, d)
        values = torch.stack([layer.values for layer in cache.layers])
        if keys.shape[3] != n:
            raise ValueError(f"{self.name} keeps only {keys.shape[3]} positions in some layers (sliding window)")
        return PromptInputs(prefix_keys=keys, prefix_values=values, text_delta=prompt.text_delta, gate=prompt.gate)

    @torch.no_grad()
    def _generate(
        self, texts: list[str], prompt: PromptInputs | None, options: GenerationOptions, on_step: OnStep | None = None
    ) -> list[str]:
        from transformers import DynamicCache

        max_new_tokens = options.max_new_tokens
        rows = [self._truncate(self._token_ids(t), reserve=max_new_tokens)[0] for t in texts]
        window = getattr(self.config, "sliding_window", None)
        if prompt is not None and prompt.prefix_keys is not None and len(rows) > 1 and window:
            if prompt.prefix_len + prompt.prompt_len + max(map(len, rows)) + max_new_tokens > window:
                # Left padding puts a row's pad slots between its cached prefix and its text; a sliding window
                # counts them, so that row would lose its prefix sooner than alone: decode the rows one by one.
                one = prompt.expand(len(rows))
                return [self._generate([t], one.row(i), options, _row_step(on_step, i))[0] for i, t in enumerate(texts)]
        ids, mask = pad_2d(rows, self.tokenizer.pad_token_id)
        zeros = torch.zeros(len(rows), 1, dtype=torch.long)
        x = self.insert(EncodedBatch(ids, mask, zeros, zeros.bool()), prompt)
        # right -> left padding: roll each row so that its last real token is the last column
        m = x.mask.shape[1] - x.embeds.shape[1]  # key/value prefix slots in front of the sequence
        seq_mask = x.mask[:, m:]
        width = seq_mask.shape[1]
        roll = (width - seq_mask.sum(1)).to(self.device)  # (B,) how far each row moves right
        cols = (torch.arange(width, device=self.device) - roll[:, None]) % width
        embeds = x.embeds.gather(1, cols.unsqueeze(-1).expand(-1, -1, x.embeds.shape[-1]))
        seq_mask = seq_mask.gather(1, cols)
        prefix = x.mask[:, :m]
        positions = prefix.sum(1, keepdim=True) + (seq_mask.cumsum(1) - 1).clamp(min=0)
        at = None
        if x.deep is not None:  # deep prompts sit at [offset, offset + n) before the roll, shifted with their row
            at = (torch.arange(x.deep.shape[2], device=self.device) + roll[:, None]) % width
        bias = None if x.key_bias is None else torch.cat([x.key_bias[:, :m], x.key_bias[:, m:].gather(1, cols)], 1)
        plan = None if at is None and bias is None else _LayerPlan(deep=x.deep, deep_positions=at, key_bias=bias)
        cache = x.cache if x.cache is not None else DynamicCache(config=self.config)
        attention = torch.cat([prefix, seq_mask], dim=1)
        cache_name = cache_keyword(self.model.base_model.forward)

        def forward(inputs: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            out = self.model.base_model(
                inputs_embeds=inputs, attention_mask=attention, position_ids=pos, use_cache=True, **{cache_name: cache}
            )
            return out.last_hidden_state[:, -1]

        hidden = self._with_plan(plan, forward, embeds, positions)  # the prefill: deep prompts and gate
        next_pos = positions[:, -1:] + 1
        choose = options.sampler()
        decoded = Decoded(self.tokenizer, len(rows), options.stop, on_step)
        for step in range(max_new_tokens):
            token = choose(self.logits(hidden).float())
            if decoded.add(token) or step == max_new_tokens - 1:
                break
            attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
            plan = None  # deep prompts act on the prefill only; a gate on every step (each new token reads the prompt)
            if bias is not None:
                bias = torch.cat([bias, bias.new_zeros(len(rows), 1)], dim=1)
                plan = _LayerPlan(key_bias=bias)
            hidden = self._with_plan(plan, forward, self.embed(token[:, None]), next_pos)
            next_pos = next_pos + 1
        return decoded.texts()


def _row_step(on_step: OnStep | None, row: int) -> OnStep | None:
    """`on_step` for a one-row call that decodes row `row` of the caller's batch."""
    return None if on_step is None else lambda _, ids: on_step(row, ids)
