"""How a soft prompt enters a frozen model, and where the answer is read.

A `Backbone` wraps a frozen Hugging Face model and its tokenizer behind one small interface:

    batch  = backbone.encode(texts, continuations)     # tokenise; mark the positions whose next token is scored
    hidden = backbone.hidden_states(batch, prompt)     # (B, S, D) final hidden states at those positions only
    logits = backbone.logits(hidden, token_ids)        # the LM head restricted to the tokens we need

`prompt` is (1, n, D) — one prompt for the whole batch — or (B, n, D): a different prompt per row, which is how
many users' prompts share one batch when serving, and how a CMA-ES population is scored in one pass.
`deep` (L, 1|B, n, D) is added to the hidden states entering every layer at the prompt positions (BBTv2).

Subclasses differ only in where the prompt goes and which position predicts the answer: the causal LM reads the
last text token; an encoder-decoder reads the first decoder step; a masked LM reads the mask position.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


class _StopForward(Exception):
    """Ends a forward pass early once the wanted layer inputs have been seen."""


@dataclass
class EncodedBatch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    score_index: torch.Tensor  # (B, S) positions in the sequence whose hidden state predicts a scored token
    score_mask: torch.Tensor  # (B, S) which of those are real (continuations differ in length)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # architecture-specific inputs
    num_truncated: int = 0  # rows whose text was cut to fit the model's limit

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class Backbone:
    """A frozen model plus tokenizer. The model never receives gradients and stays in eval mode."""

    kind: ClassVar[str] = ""
    can_start_at_layer: ClassVar[bool] = False

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, max_length: int = 256) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self._fingerprint: str | None = None

    # --- facts about the model -------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.word_embeddings.weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.word_embeddings.weight.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return self.word_embeddings.weight.device

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def layers(self) -> Sequence[nn.Module]:
        """The blocks a deep prompt is added in front of (the stack the prompt positions pass through)."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Identity of the weights: architecture facts plus a hash of a few weight slices (dtype-independent)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            facts = {"kind": self.kind, "d": self.hidden_size, "layers": self.num_layers, "vocab": self.vocab_size}
            h.update(json.dumps(facts, sort_keys=True).encode())
            params = [p for _, p in self.model.named_parameters()]
            for p in (params[0], params[len(params) // 2], params[-1]):
                h.update(p.detach().flatten()[:4096].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
        }

    # --- the three steps ---------------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids.to(self.device))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        """Tokenise texts; score the next token after each text, then each continuation token (teacher forced)."""
        raise NotImplementedError

    def hidden_states(
        self,
        batch: EncodedBatch,
        prompt: torch.Tensor | None = None,
        deep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S, D) final hidden states at `batch.score_index`, with the prompt in place."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """LM-head logits for `token_ids` only (all of the vocabulary if None): a K-row matmul instead of V rows."""
        head = self.model.get_output_embeddings()
        weight = head.weight if token_ids is None else head.weight[token_ids.to(self.device)]
        out = hidden @ weight.T
        if getattr(head, "bias", None) is not None:
            out = out + (head.bias if token_ids is None else head.bias[token_ids.to(self.device)])
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            out = torch.tanh(out / cap) * cap
        return out

    @torch.inference_mode()
    def layer_inputs(
        self,
        batch: EncodedBatch,
        prompt: torch.Tensor | None = None,
        deep: torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Hidden states entering each of `layers` (default all; before deep[l] is added). The forward pass stops
        after the last requested layer, so asking for low layers costs only those layers."""
        wanted = sorted(set(range(self.num_layers) if layers is None else layers))
        captured: dict[int, torch.Tensor] = {}

        def hook_for(i: int):  # noqa: ANN202 - torch hook signature
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                if i in captured:
                    raise RuntimeError(f"layer {i} ran twice in one forward pass; cannot read its input")
                captured[i] = args[0] if args else kwargs["hidden_states"]
                if i == wanted[-1]:
                    raise _StopForward

            return hook

        # registered before the deep-prompt hooks, so each sees its layer's input before deep[l] is added
        stack = self.layers
        handles = [stack[i].register_forward_pre_hook(hook_for(i), with_kwargs=True) for i in wanted]
        try:
            self.hidden_states(batch, prompt, deep)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    # --- shared plumbing ---------------------------------------------------------------------------------------
    def _truncate(self, ids: list[int], reserve: int) -> tuple[list[int], bool]:
        """Keep the *end* of the text (where the template asks its question) within the length limit."""
        limit = self.max_length - reserve
        if limit <= 0:
            raise ValueError(f"max_length {self.max_length} leaves no room for the text")
        return (ids[-limit:], True) if len(ids) > limit else (ids, False)

    @staticmethod
    def _batch_prompt(prompt: torch.Tensor, batch_size: int) -> torch.Tensor:
        if prompt.dim() == 2:
            prompt = prompt.unsqueeze(0)
        if prompt.shape[0] not in (1, batch_size):
            raise ValueError(f"prompt batch {prompt.shape[0]} does not match input batch {batch_size}")
        return prompt.expand(batch_size, -1, -1)

    @contextmanager
    def _deep_prompt_hooks(self, deep: torch.Tensor | None, start: int, batch_size: int) -> Iterator[None]:
        """Add deep[l] to the hidden states entering layer l at positions [start, start + n)."""
        if deep is None:
            yield
            return
        if deep.dim() == 3:  # (L, n, D) from SoftPrompt.deep_prompts(): the same for every row
            deep = deep.unsqueeze(1)
        if deep.shape[0] != self.num_layers:
            raise ValueError(f"deep prompt has {deep.shape[0]} layers, model has {self.num_layers}")
        n = deep.shape[2]

        def hook_for(layer_idx: int):  # noqa: ANN202 - torch hook signature
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                add = self._batch_prompt(deep[layer_idx], batch_size)
                if args:
                    h, rest = args[0], args[1:]
                else:
                    h, rest = kwargs.pop("hidden_states"), ()
                h = torch.cat([h[:, :start], h[:, start : start + n] + add.to(h.dtype), h[:, start + n :]], dim=1)
                return (h, *rest), kwargs

            return hook

        layers = self.layers
        handles = [layer.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def pad_2d(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer rows into (ids, mask)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def gather_positions(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, D), index (B, S) -> (B, S, D)."""
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
