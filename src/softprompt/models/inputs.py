"""`PromptInputs`: everything a soft prompt does to a frozen model, as one value.

For R rows (one prompt shared by a batch has R = 1; a mixed batch has one row per example):

    embeds      (R, n, D)          input-layer vectors; row r uses embeds[r, :lengths[r]], inserted before the text
    lengths     (R,)               per-row prompt length (None: every row uses all n) — rows may differ in length
    deep        (L, R, n, D)       added to the hidden states entering layer l at the row's prompt positions (BBTv2)
    prefix_keys (L, R, H, m, d)    a per-layer key/value prefix every text position attends to (prefix tuning);
    prefix_values                  row r uses the *last* prefix_lengths[r] of the m slots
    text_delta  (R, S, D)          added to the embeddings of the first S text tokens (DePT's low-rank update)
    gate        (R,)               added to every attention logit on the row's prompt positions and prefix slots, in
                                   every layer and head (decoders): log of the weight the text gives the prompt.
                                   0 leaves the prompt as it is; −∞ hides it (ULPT's gated neutral start)

Every prompt method's `SoftPrompt.materialize()` returns one of these; a batch of many users' prompts is
`PromptInputs.stack([...])` of theirs, padded with zeros, and `Backbone.hidden_states` inserts it in one routine.
Padding rows with zeros is exact: a zero addition changes nothing and padded positions are masked out (a zero
gate is no gate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch

TensorMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PromptInputs:
    embeds: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    deep: torch.Tensor | None = None
    prefix_keys: torch.Tensor | None = None
    prefix_values: torch.Tensor | None = None
    prefix_lengths: torch.Tensor | None = None
    text_delta: torch.Tensor | None = None
    gate: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.gate is not None and (self.gate.dim() != 1 or (self.embeds is None and self.prefix_keys is None)):
            raise ValueError("a gate is one number per row, for a prompt with input-layer vectors or a prefix")
        rows = {t.shape[0] for t in (self.embeds, self.text_delta, self.gate) if t is not None}
        rows |= {t.shape[1] for t in (self.deep, self.prefix_keys, self.prefix_values) if t is not None}
        if len(rows) > 1:
            raise ValueError(f"prompt inputs disagree on the number of rows: {sorted(rows)}")
        if self.deep is not None and self.embeds is None:
            raise ValueError("a deep prompt needs input-layer vectors to mark its positions")
        if self.deep is not None and self.deep.shape[2:] != self.embeds.shape[1:]:
            raise ValueError(f"deep prompt positions {tuple(self.deep.shape)} do not match {tuple(self.embeds.shape)}")
        if (self.prefix_keys is None) != (self.prefix_values is None):
            raise ValueError("a key/value prefix needs both keys and values")
        if self.prefix_keys is not None and self.prefix_keys.shape != self.prefix_values.shape:
            raise ValueError("prefix keys and values must have the same shape")
        for name, lengths, size in (("lengths", self.lengths, self.prompt_len),
                                    ("prefix_lengths", self.prefix_lengths, self.prefix_len)):  # fmt: skip
            bad = lengths is not None and (lengths.dim() != 1 or (lengths.numel() and (
                int(lengths.min()) < 0 or int(lengths.max()) > size)))  # fmt: skip
            if bad:
                raise ValueError(f"{name} must be a vector of values in [0, {size}]")

    # --- shape facts ----------------------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        for t in (self.embeds, self.text_delta, self.gate):
            if t is not None:
                return t.shape[0]
        for t in (self.deep, self.prefix_keys):
            if t is not None:
                return t.shape[1]
        return 1

    @property
    def prompt_len(self) -> int:
        """n: input-layer positions per row (the longest row's, in a mixed batch)."""
        return 0 if self.embeds is None else self.embeds.shape[1]

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix_keys is None else self.prefix_keys.shape[3]

    def row_lengths(self) -> torch.Tensor:
        """(R,) input-layer prompt length of each row."""
        if self.lengths is not None:
            return self.lengths
        return torch.full((self.num_rows,), self.prompt_len, dtype=torch.long)

    def row_prefix_lengths(self) -> torch.Tensor:
        if self.prefix_lengths is not None:
            return self.prefix_lengths
        return torch.full((self.num_rows,), self.prefix_len, dtype=torch.long)

    # --- rows -----------------------------------------------------------------------------------------------------
    def _map(self, row_fn: TensorMap, layer_fn: TensorMap) -> PromptInputs:
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None:
                t = layer_fn(t) if f.name in ("deep", "prefix_keys", "prefix_values") else row_fn(t)
            out[f.name] = t
        return PromptInputs(**out)

    def select(self, index: torch.Tensor) -> PromptInputs:
        """The rows `index` (repeats allowed): e.g. one row per example, each with its candidate's prompt."""
        index = index.long()
        return self._map(lambda t: t[index.to(t.device)], lambda t: t[:, index.to(t.device)])

    def row(self, index: int) -> PromptInputs:
        """Row `index` on its own, without the zero padding a stack gave it (each part at the row's own length)."""
        one = self.select(torch.tensor([index]))
        n, m = int(one.row_lengths()[0]), int(one.row_prefix_lengths()[0])
        has_prompt, has_prefix = one.embeds is not None and n > 0, one.prefix_keys is not None and m > 0
        return PromptInputs(
            embeds=one.embeds[:, :n] if has_prompt else None,
            deep=one.deep[:, :, :n] if has_prompt and one.deep is not None else None,
            prefix_keys=one.prefix_keys[:, :, :, one.prefix_len - m :] if has_prefix else None,
            prefix_values=one.prefix_values[:, :, :, one.prefix_len - m :] if has_prefix else None,
            text_delta=one.text_delta,
            gate=one.gate if has_prompt or has_prefix else None,
        )

    def expand(self, rows: int) -> PromptInputs:
        """Broadcast a one-row prompt to `rows` rows (a view, no copy); a prompt with `rows` rows is returned as is."""
        if self.num_rows == rows:
            return self
        if self.num_rows != 1:
            raise ValueError(f"prompt has {self.num_rows} rows, the batch {rows}")
        return self._map(lambda t: t.expand(rows, *t.shape[1:]), lambda t: t.expand(t.shape[0], rows, *t.shape[2:]))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptInputs:
        """Floating tensors to `dtype` (the model's), everything to `device`; lengths stay integer."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return self._map(move, move)

    def detach(self) -> PromptInputs:
        return self._map(torch.Tensor.detach, torch.Tensor.detach)

    def with_lengths(self) -> PromptInputs:
        """The same inputs with explicit per-row lengths (what a stack of prompts of several lengths needs)."""
        return replace(
            self,
            lengths=self.row_lengths() if self.embeds is not None else None,
            prefix_lengths=self.row_prefix_lengths() if self.prefix_keys is not None else None,
        )

    @staticmethod
    def stack(items: Sequence[PromptInputs]) -> PromptInputs:
        """One batch from many prompts (each with one or more rows): rows concatenated, shorter ones zero-padded.

        Prompts of different methods mix freely: a row whose prompt lacks a part (no deep prompt, no prefix, ...)
        gets zeros there and length 0, which leaves the model exactly as that prompt alone leaves it."""
        if not items:
            raise ValueError("nothing to stack")
        items = [p.with_lengths() for p in items]
        n = max(p.prompt_len for p in items)
        m = max(p.prefix_len for p in items)
        ref = {f.name: next((getattr(p, f.name) for p in items if getattr(p, f.name) is not None), None)
               for f in fields(PromptInputs)}  # fmt: skip
        out: dict[str, torch.Tensor | None] = dict.fromkeys(ref)
        if ref["embeds"] is not None:
            d = ref["embeds"].shape[-1]
            out["embeds"] = torch.cat([_pad_rows(p.embeds, p.num_rows, n, d, ref["embeds"], dim=1) for p in items])
            out["lengths"] = torch.cat([p.lengths if p.lengths is not None else _zeros_long(p.num_rows) for p in items])
        if ref["deep"] is not None:
            layers, d = ref["deep"].shape[0], ref["deep"].shape[-1]
            out["deep"] = torch.cat([_pad_deep(p.deep, layers, p.num_rows, n, d, ref["deep"]) for p in items], dim=1)
        if ref["prefix_keys"] is not None:
            out["prefix_lengths"] = torch.cat(
                [p.prefix_lengths if p.prefix_lengths is not None else _zeros_long(p.num_rows) for p in items]
            )
            for name in ("prefix_keys", "prefix_values"):
                out[name] = torch.cat([_pad_prefix(getattr(p, name), p.num_rows, m, ref[name]) for p in items], 1)
        if ref["text_delta"] is not None:
            s, d = max(p.text_delta.shape[1] for p in items if p.text_delta is not None), ref["text_delta"].shape[-1]
            out["text_delta"] = torch.cat(
                [_pad_rows(p.text_delta, p.num_rows, s, d, ref["text_delta"], dim=1) for p in items]
            )
        if ref["gate"] is not None:  # a row without a gate gets 0: its prompt as it is
            out["gate"] = torch.cat([p.gate.expand(p.num_rows) if p.gate is not None
                                     else ref["gate"].new_zeros(p.num_rows) for p in items])  # fmt: skip
        return PromptInputs(**out)


def _zeros_long(rows: int) -> torch.Tensor:
    return torch.zeros(rows, dtype=torch.long)


def _pad_rows(t: torch.Tensor | None, rows: int, size: int, d: int, like: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, k, D) zero-padded at the end to (rows, size, D); a missing part becomes zeros."""
    if t is None:
        return like.new_zeros(rows, size, d)
    t = t.expand(rows, *t.shape[1:]) if t.shape[0] != rows else t
    return torch.nn.functional.pad(t, (0, 0, 0, size - t.shape[dim]))


def _pad_deep(t: torch.Tensor | None, layers: int, rows: int, n: int, d: int, like: torch.Tensor) -> torch.Tensor:
    if t is None:
        return like.new_zeros(layers, rows, n, d)
    if t.shape[0] != layers:
        raise ValueError(f"deep prompts for {t.shape[0]} and {layers} layers cannot share a batch")
    return torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[2]))


def _pad_prefix(t: torch.Tensor | None, rows: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """(L, rows, H, k, d) padded at the *front* of the slot axis to m (a row's prefix is its last slots)."""
    if t is None:
        return like.new_zeros(like.shape[0], rows, like.shape[2], m, like.shape[4])
    return torch.nn.functional.pad(t, (0, 0, m - t.shape[3], 0))
