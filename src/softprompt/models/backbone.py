"""How a soft prompt enters a frozen model, and where the answer is read: the one place.

A `Backbone` wraps a frozen Hugging Face model and its tokenizer behind one small interface:

    batch  = backbone.encode(texts, continuations)     # tokenise; mark the positions whose next token is scored
    hidden = backbone.hidden_states(batch, prompt)     # (B, S, D) final hidden states at those positions only
    logits = backbone.logits(hidden, token_ids)        # the LM head restricted to the tokens we need

`prompt` is a `PromptInputs` (softprompt/models/inputs.py): one row shared by the batch, or one row per example
(a mixed batch of many users' prompts, or a CMA-ES population). `insert` below is the single routine that puts it
into the model; the three families differ only in `prompt_offset` (where the input-layer vectors go), which stack
`_run` runs, and `_read_out` (which position predicts the answer):

    causal LM        [prompt][text][pad]            offset 0   read at the last text token
    encoder-decoder  [prompt][text][pad] (encoder)  offset 0   read on the decoder side
    masked LM        [<s>][prompt][text][pad]       offset 1   read at <mask>

Layer-level effects (deep prompts added at the prompt positions, reading a layer's input, starting at a layer from
a precomputed input) go through one wrapper installed on each block when the backbone is built. Each call passes
its instructions in a context variable, so concurrent calls from several threads never see each other's prompts
and no lock is needed for correctness.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from softprompt.models.inputs import PromptInputs


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

    def select(self, rows: torch.Tensor) -> EncodedBatch:
        """The rows `rows` (repeats allowed) of this batch."""
        return EncodedBatch(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.score_index[rows],
            self.score_mask[rows],
            {k: v[rows] for k, v in self.extras.items()},
        )


@dataclass
class Inserted:
    """The model-ready sequence after `Backbone.insert`."""

    embeds: torch.Tensor  # (B, T + n, D) with the input-layer prompt spliced in at the offset
    mask: torch.Tensor  # (B, m + T + n): key/value prefix slots, then the sequence
    shift: torch.Tensor  # (B,) how far each row's positions after the offset moved (its prompt length)
    deep: torch.Tensor | None = None  # (L, B, n, D), zero beyond each row's prompt length
    cache: Any = None  # the key/value prefix as the model's cache, or None
    positions: torch.Tensor | None = None  # (B, T + n) position ids when a prefix shifts them


@dataclass
class _LayerPlan:
    """What the block wrappers do during one forward pass (see `_block_call`)."""

    deep: torch.Tensor | None = None  # (L, B, n, D)
    offset: int = 0  # deep[l][:, j] is added at position offset + j of every row ...
    deep_positions: torch.Tensor | None = None  # ... or at deep_positions[row, j] (rows laid out differently)
    start: tuple[int, torch.Tensor] | None = None
    capture: frozenset[int] = frozenset()
    captured: dict[int, torch.Tensor] = field(default_factory=dict)


_PLAN: ContextVar[_LayerPlan | None] = ContextVar("softprompt_layer_plan", default=None)


def _block_call(index: int, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Every block's forward, wrapped once: without a plan (the usual case outside softprompt) it is untouched."""
    plan = _PLAN.get()
    if plan is None:
        return original(*args, **kwargs)
    if plan.start is not None and index < plan.start[0]:
        return plan.start[1]  # skipped: the last skipped block hands the precomputed input to block `start`
    hidden = args[0] if args else kwargs["hidden_states"]
    if index in plan.capture:
        plan.captured[index] = hidden  # the input before this layer's deep prompt is added
        if index == max(plan.capture):
            raise _StopForward
    if plan.deep is not None:
        add = plan.deep[index].to(hidden.dtype)
        if plan.deep_positions is None:
            n, o = add.shape[1], plan.offset
            hidden = torch.cat([hidden[:, :o], hidden[:, o : o + n] + add, hidden[:, o + n :]], dim=1)
        else:
            at = plan.deep_positions.unsqueeze(-1).expand(-1, -1, add.shape[-1])
            hidden = hidden.scatter_add(1, at, add)
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
    return original(*args, **kwargs)


class Backbone:
    """A frozen model plus tokenizer. The model never receives gradients and stays in eval mode."""

    kind: ClassVar[str] = ""
    prompt_offset: ClassVar[int] = 0  # sequence position where the input-layer prompt is inserted
    can_start_at_layer: ClassVar[bool] = False  # hidden_states(start=...) skips the layers below a given input

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, max_length: int = 256) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        if not (isinstance(max_length, int) and max_length > 0):
            raise ValueError(f"max_length must be a positive number of tokens, got {max_length!r}")
        self.max_length = max_length
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self._fingerprint: str | None = None
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent use ("Already borrowed")
        self._layers = self._find_layers()
        for i, block in enumerate(self._layers):
            if not getattr(block, "_softprompt_wrapped", False):  # a second Backbone on the same model
                block.forward = functools.partial(_block_call, i, block.forward)
                block._softprompt_wrapped = True

    # --- facts about the model -------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def max_positions(self) -> int | None:
        """Sequence positions the model can encode (its `max_position_embeddings`); None where it has no such
        limit (T5's relative positions)."""
        value = getattr(self.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def check_prompt_fits(self, prompt_len: int) -> None:
        """A prompt of `prompt_len` vectors before up to `max_length` text tokens must fit the model's positions:
        an error now, not a run that hangs on a huge sequence or reads positions the model never learnt."""
        limit = self.max_positions
        if limit is not None and prompt_len + self.max_length > limit:
            raise ValueError(
                f"prompt length {prompt_len} + max_length {self.max_length} = {prompt_len + self.max_length} "
                f"positions exceed the {limit} that {self.name} can encode; use a shorter --prompt-len or --max-length"
            )

    def _check_width(self, inserted: Inserted) -> Inserted:
        """The backstop for inputs built elsewhere (an artifact's prompt, a remote request): never past the limit."""
        limit = self.max_positions
        width = inserted.mask.shape[1]  # key/value prefix slots, prompt and text
        if limit is not None and width > limit:
            raise ValueError(f"input of {width} positions (prompt and text) exceeds the {limit} that {self.name} can "
                             "encode; use a shorter prompt or --max-length")  # fmt: skip
        return inserted

    @property
    def hidden_size(self) -> int:
        return self.word_embeddings.weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.word_embeddings.weight.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def device(self) -> torch.device:
        return self.word_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.weight.dtype

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def layers(self) -> Sequence[nn.Module]:
        """The blocks a deep prompt is added in front of (the stack the prompt positions pass through)."""
        return self._layers

    def _find_layers(self) -> nn.ModuleList:
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

    # --- tokenising --------------------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids.to(self.device))

    def tokenize(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _token_ids(self, text: str) -> list[int]:
        """The model's own tokenisation of a whole input (special tokens included, as the model expects)."""
        with self._tokenizer_lock:
            return self.tokenizer(text)["input_ids"]

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        """Tokenise texts; score the next token after each text, then each continuation token (teacher forced)."""
        raise NotImplementedError

    # --- the prompt goes in: one routine for every family --------------------------------------------------------
    def insert(self, batch: EncodedBatch, prompt: PromptInputs | None) -> Inserted:
        """Text embeddings with the prompt in place: the text-embedding update added, the input-layer vectors
        spliced in at `prompt_offset` (rows with shorter prompts move their unused slots behind the text, so every
        row's real tokens stay contiguous from position 0), and a key/value prefix as the model's cache."""
        embeds = self.embed(batch.input_ids)
        mask = batch.attention_mask.to(self.device)
        rows = embeds.shape[0]
        shift = torch.zeros(rows, dtype=torch.long, device=self.device)
        if prompt is None:
            return self._check_width(Inserted(embeds, mask, shift))
        prompt = prompt.expand(rows).to(self.device, embeds.dtype)
        if prompt.text_delta is not None:
            delta = prompt.text_delta[:, : embeds.shape[1]]
            embeds = torch.cat([embeds[:, : delta.shape[1]] + delta, embeds[:, delta.shape[1] :]], dim=1)
        deep = None
        if prompt.embeds is not None:
            n, o = prompt.prompt_len, self.prompt_offset
            lengths = prompt.row_lengths().to(self.device)
            slots = torch.arange(n, device=self.device) < lengths[:, None]  # (B, n) used prompt positions
            embeds = torch.cat([embeds[:, :o], prompt.embeds, embeds[:, o:]], dim=1)
            mask = torch.cat([mask[:, :o], slots.to(mask.dtype), mask[:, o:]], dim=1)
            if not bool(slots.all()):
                unused = torch.zeros_like(mask, dtype=torch.bool)
                unused[:, o : o + n] = ~slots
                order = torch.argsort(unused.to(torch.uint8), dim=1, stable=True)
                embeds = embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
                mask = mask.gather(1, order)
            shift = lengths
            if prompt.deep is not None:
                if prompt.deep.shape[0] != self.num_layers:
                    raise ValueError(f"deep prompt has {prompt.deep.shape[0]} layers, model has {self.num_layers}")
                deep = prompt.deep * slots[None, :, :, None].to(prompt.deep.dtype)
        inserted = Inserted(embeds, mask, shift, deep)
        if prompt.prefix_keys is not None:
            self._insert_prefix(inserted, prompt)
        return self._check_width(inserted)

    def _insert_prefix(self, inserted: Inserted, prompt: PromptInputs) -> None:
        """A per-layer key/value prefix as a pre-filled cache: every position attends to the row's prefix slots,
        which sit at the end of the slot axis (left-padded), and the sequence's positions continue after them."""
        from transformers import DynamicCache

        keys, values = prompt.prefix_keys, prompt.prefix_values
        if keys.shape[0] != self.num_layers:
            raise ValueError(f"key/value prefix has {keys.shape[0]} layers, model has {self.num_layers}")
        m, lengths = prompt.prefix_len, prompt.row_prefix_lengths().to(self.device)
        cache = DynamicCache(config=self.config)
        for layer in range(self.num_layers):
            cache.update(keys[layer], values[layer], layer)
        used = torch.arange(m, device=self.device) >= (m - lengths)[:, None]
        inserted.mask = torch.cat([used.to(inserted.mask.dtype), inserted.mask], dim=1)
        inserted.positions = lengths[:, None] + torch.arange(inserted.embeds.shape[1], device=self.device)
        inserted.cache = cache

    # --- forward ------------------------------------------------------------------------------------------------
    def hidden_states(
        self,
        batch: EncodedBatch,
        prompt: PromptInputs | None = None,
        *,
        start: tuple[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, S, D) final hidden states at `batch.score_index`, with the prompt in place.

        `start=(l, h)` (decoder-only models): h is the input of layer l for this batch and prompt (from
        `layer_inputs`); the layers below l are skipped. BBTv2 varies one layer's prompt per generation, so
        everything below it is shared by all candidates."""
        if start is not None and not self.can_start_at_layer:
            raise ValueError(f"{self.kind} backbones cannot start at a layer")
        x = self.insert(batch, prompt)
        plan = _LayerPlan(x.deep, self.prompt_offset, start=start) if x.deep is not None or start is not None else None
        return self._read_out(self._with_plan(plan, self._run, x, batch), batch, x)

    @torch.inference_mode()
    def layer_inputs(
        self, batch: EncodedBatch, prompt: PromptInputs | None = None, layers: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Hidden states entering each of `layers` (default all; before deep[l] is added). The forward pass stops
        after the last requested layer, so asking for low layers costs only those layers."""
        wanted = frozenset(range(self.num_layers) if layers is None else layers)
        x = self.insert(batch, prompt)
        plan = _LayerPlan(x.deep, self.prompt_offset, capture=wanted)
        try:
            self._with_plan(plan, self._run, x, batch)
        except _StopForward:
            pass
        return plan.captured

    @staticmethod
    def _with_plan(plan: _LayerPlan | None, fn: Callable[..., Any], *args: Any) -> Any:
        if plan is None:
            return fn(*args)
        token = _PLAN.set(plan)
        try:
            return fn(*args)
        finally:
            _PLAN.reset(token)

    def _run(self, x: Inserted, batch: EncodedBatch) -> torch.Tensor:
        """Run the model's stack on the inserted sequence: (B, ·, D) final hidden states."""
        raise NotImplementedError

    def _read_out(self, hidden: torch.Tensor, batch: EncodedBatch, x: Inserted) -> torch.Tensor:
        """The states at the scored positions: text positions after the offset moved by the row's prompt length."""
        index = batch.score_index.to(self.device)
        return gather_positions(hidden, index + torch.where(index >= self.prompt_offset, x.shift[:, None], 0))

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

    # --- generation -----------------------------------------------------------------------------------------------
    def generate(
        self,
        texts: Sequence[str],
        prompt: PromptInputs | None = None,
        max_new_tokens: int = 32,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[str]:
        """Batched decoding with a key/value cache: greedy, or sampling with temperature / nucleus (top_p), up to
        `max_new_tokens` per row, each row cut at its first `stop` string. `prompt` has one row or one per text."""
        raise NotImplementedError(f"{self.name} ({self.kind}) cannot generate text")

    # --- shared plumbing ---------------------------------------------------------------------------------------
    def _truncate(self, ids: list[int], reserve: int) -> tuple[list[int], bool]:
        """Keep the *end* of the text (where the template asks its question) within the length limit."""
        limit = self.max_length - reserve
        if limit <= 0:
            raise ValueError(f"max_length {self.max_length} leaves no room for the text")
        return (ids[-limit:], True) if len(ids) > limit else (ids, False)


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


def next_tokens(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, V) logits of the next position -> (B,) token ids: argmax, or a sample from the top-p nucleus."""
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # keep the smallest prefix reaching top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    picked = torch.multinomial(sorted_probs.cpu(), 1, generator=generator).to(logits.device)
    return order.gather(-1, picked).squeeze(-1)


@dataclass
class Decoded:
    """The tokens generated for each row so far; a row ends at end-of-sequence or once a stop string appears."""

    tokenizer: Any
    rows: int
    stop: Sequence[str] = ()
    ids: list[list[int]] = field(init=False)
    done: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [[] for _ in range(self.rows)]
        self.done = [False] * self.rows

    def add(self, tokens: torch.Tensor) -> bool:
        """Append one token per row; True once every row has ended."""
        for i, t in enumerate(tokens.tolist()):
            if self.done[i]:
                continue
            if t == self.tokenizer.eos_token_id:
                self.done[i] = True
                continue
            self.ids[i].append(t)
            if self.stop and cut_at_stop(self.tokenizer.decode(self.ids[i], skip_special_tokens=True), self.stop)[1]:
                self.done[i] = True
        return all(self.done)

    def texts(self) -> list[str]:
        return [cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop)[0] for ids in self.ids]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
