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

Layer-level effects (deep prompts added at the prompt positions, a gate's offset on the attention logits of the
prompt's columns, reading a layer's input, starting at a layer from a precomputed input) go through one wrapper
installed on each block when the backbone is built. Each call passes its instructions in a context variable, so
concurrent calls from several threads never see each other's prompts and no lock is needed for correctness.

A key/value prefix (prefix tuning) enters a decoder as its own cache (the model's usual past_key_values). An encoder
has no cache, so a second wrapper, installed once on each encoder block's self-attention module, hands that module
a `_PrefixCache` holding the layer's prefix (the same `cache.update` the module calls when it serves as a decoder)
and widens its attention mask by the row's used slots. The prefix sits where the input-layer prompt would
(`prompt_offset`): text positions after it move by the row's prefix length (absolute position embeddings get the
shifted ids; T5's relative bias sees the slots as the m positions before the text).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from softprompt.models.dims import ModelDims
from softprompt.models.hardware import dtype_name
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

    def trimmed(self) -> EncodedBatch:
        """Without the trailing input columns that no row attends to and no score reads (padding of longer rows
        that are not in this batch): the same scores from fewer positions."""
        attended = self.attention_mask.any(0).nonzero()
        width = 1 + max(int(attended.max()) if len(attended) else 0, int(self.score_index.max()))
        if width >= self.input_ids.shape[1]:
            return self
        return replace(self, input_ids=self.input_ids[:, :width], attention_mask=self.attention_mask[:, :width])


@dataclass
class Inserted:
    """The model-ready sequence after `Backbone.insert`."""

    embeds: torch.Tensor  # (B, T + n, D) with the input-layer prompt spliced in at the offset
    mask: torch.Tensor  # (B, m + T + n): key/value prefix slots, then the sequence
    shift: torch.Tensor  # (B,) how far each row's positions after the offset moved (its prompt length)
    deep: torch.Tensor | None = None  # (L, B, n, D), zero beyond each row's prompt length
    cache: Any = None  # the key/value prefix as the model's cache (decoders), or None
    positions: torch.Tensor | None = None  # (B, T + n) position ids (from 0) when a prefix shifts them
    prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # encoders: (keys, values, used (B, m))
    key_bias: torch.Tensor | None = None  # (B, m + T + n) the row's gate on its prompt/prefix columns, else 0


@dataclass
class _LayerPlan:
    """What the block wrappers do during one forward pass (see `_block_call`)."""

    deep: torch.Tensor | None = None  # (L, B, n, D)
    offset: int = 0  # deep[l][:, j] is added at position offset + j of every row ...
    deep_positions: torch.Tensor | None = None  # ... or at deep_positions[row, j] (rows laid out differently)
    start: tuple[int, torch.Tensor] | None = None
    capture: frozenset[int] = frozenset()
    captured: dict[int, torch.Tensor] = field(default_factory=dict)
    prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # encoder self-attention: see below
    key_bias: torch.Tensor | None = None  # (B, k) added to every attention logit on key column k (a gate)


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
    if plan.key_bias is not None:
        args, kwargs = _with_biased_mask(original, args, kwargs, plan.key_bias, hidden)
    return original(*args, **kwargs)


def _with_biased_mask(
    block: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], bias: torch.Tensor, hidden: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A decoder block's arguments with `bias` (B, k) added to its attention mask (B|1, 1, q, k) for every query.

    The mask arrives as the model made it for this layer (a sliding window included): boolean (sdpa), additive
    (eager), or None (causal, nothing else masked), and leaves additive. Adding the same number to every logit a
    query sees changes nothing, so a decoder's prompt positions, which see only the prompt, stay as they are."""
    if "attention_mask" in kwargs:
        kwargs["attention_mask"] = _biased_mask(kwargs["attention_mask"], bias, hidden)
        return args, kwargs
    at = _mask_position(block)  # GPT-2 passes it positionally
    if at is None or at >= len(args):
        raise ValueError("a gated prompt needs blocks that take an `attention_mask` (Llama, Gemma, Qwen, GPT-2, ...)")
    return (*args[:at], _biased_mask(args[at], bias, hidden), *args[at + 1 :]), kwargs


_MASK_POSITIONS: weakref.WeakKeyDictionary[Callable[..., Any], int | None] = weakref.WeakKeyDictionary()


def _mask_position(block: Callable[..., Any]) -> int | None:
    """Where `attention_mask` sits among a block forward's positional parameters (looked up once per block)."""
    if block not in _MASK_POSITIONS:
        names = list(inspect.signature(block).parameters)
        _MASK_POSITIONS[block] = names.index("attention_mask") if "attention_mask" in names else None
    return _MASK_POSITIONS[block]


CACHE_KEYWORDS = ("cache", "past_key_values")  # transformers renamed past_key_values to cache (5.2x; 5.17 has the old)


def cache_keyword(forward: Callable[..., Any]) -> str:
    """The keyword under which a model's (or module's) forward takes its key/value cache, from its signature.

    Passing the other name is no error: the forward's **kwargs swallow it and the cache is silently ignored (a prefix
    left out, an empty cache read back), so the name is looked up rather than assumed."""
    return _cache_keyword(getattr(forward, "__func__", forward))


@functools.cache
def _cache_keyword(function: Callable[..., Any]) -> str:
    parameters = inspect.signature(function).parameters
    return next((name for name in CACHE_KEYWORDS if name in parameters), CACHE_KEYWORDS[0])


def _biased_mask(mask: torch.Tensor | None, bias: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """`mask` + `bias` on every query row. A sliding-window layer's cache keeps only the newest keys, so its mask
    covers the last columns of `bias` only."""
    q, k = hidden.shape[1], bias.shape[1]
    if mask is None:  # the q newest of k positions, each seeing itself and everything before it
        mask = torch.ones(q, k, dtype=torch.bool, device=hidden.device).tril(k - q)[None, None]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[-1] > k:
        raise ValueError(f"cannot gate this attention mask (need 4-d, at most {k} key columns): {mask!r:.80}")
    add = bias[:, k - mask.shape[-1] :].to(device=mask.device, dtype=hidden.dtype)[:, None, None, :]
    if mask.dtype == torch.bool:
        return torch.where(mask, add, torch.finfo(hidden.dtype).min)
    return mask + add


class _PrefixCache:
    """What an encoder self-attention module gets as its `cache` for one call: `update` puts the layer's prefix in
    front of the keys and values it just computed; nothing is stored, so the call leaves no state behind."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values  # (B, H, m, d)

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.keys.shape[-2]  # T5: the text's relative positions start after the m slots

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)


MASK_NAMES = ("mask", "attention_mask")
SELF_ATTENTION_NAMES = ("SelfAttention", "self", "self_attn")  # T5, BERT family (attention.self), BART family


def find_self_attention(block: nn.Module) -> nn.Module | None:
    """The self-attention module of an encoder block (the first one with a known name), or None."""
    for name, module in block.named_modules():
        if name.rsplit(".", 1)[-1] in SELF_ATTENTION_NAMES:
            return module
    return None  # T5 / BERT-family keyword for the self-attention mask


def _attention_call(index: int, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An encoder block's self-attention, wrapped once: with a key/value prefix in the plan, the module attends to
    the layer's prefix slots (those each row uses) before its own keys; otherwise it is untouched."""
    plan = _PLAN.get()
    if plan is None or plan.prefix is None:
        return original(*args, **kwargs)
    keys, values, used = plan.prefix
    hidden = args[0] if args else kwargs["hidden_states"]
    kwargs[cache_keyword(original)] = _PrefixCache(keys[index].to(hidden.dtype), values[index].to(hidden.dtype))
    config = getattr(getattr(original, "__self__", None), "config", None)
    eager = getattr(config, "_attn_implementation", None) == "eager"
    name = next((n for n in MASK_NAMES if n in kwargs), None)
    if name is None and len(args) > 1:
        args = (args[0], _prefix_mask(args[1], used, hidden, eager), *args[2:])
    else:
        kwargs[name or "attention_mask"] = _prefix_mask(kwargs.get(name) if name else None, used, hidden, eager)
    return original(*args, **kwargs)


def _prefix_mask(
    mask: torch.Tensor | None, used: torch.Tensor, hidden: torch.Tensor, eager: bool
) -> torch.Tensor | None:
    """The module's (B|1, 1, q|1, S) mask widened by m prefix columns: boolean masks (sdpa) get `used`, additive
    float masks (eager) 0 or the dtype's minimum; no mask stays none if every slot of every row is used."""
    rows, q = hidden.shape[:2]
    if mask is None:
        if bool(used.all()):
            return None
        mask = torch.zeros(rows, 1, 1, q, dtype=hidden.dtype, device=hidden.device) if eager else None
        mask = torch.ones(rows, 1, 1, q, dtype=torch.bool, device=hidden.device) if mask is None else mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise ValueError("key/value prefixes in an encoder need eager or sdpa attention (a 4-d mask)")
    mask = mask.expand(rows, 1, mask.shape[2], mask.shape[3])
    pre = used[:, None, None, :].expand(rows, 1, mask.shape[2], used.shape[1])
    if mask.dtype != torch.bool:
        pre = torch.zeros((), dtype=mask.dtype, device=mask.device).masked_fill(~pre, torch.finfo(mask.dtype).min)
    return torch.cat([pre.to(mask.device), mask], dim=-1)


class Backbone:
    """A frozen model plus tokenizer. The model never receives gradients and stays in eval mode."""

    kind: ClassVar[str] = ""
    prompt_offset: ClassVar[int] = 0  # sequence position where the input-layer prompt is inserted
    can_start_at_layer: ClassVar[bool] = False  # hidden_states(start=...) skips the layers below a given input
    prefix_in_cache: ClassVar[bool] = False  # True: a key/value prefix is the model's own cache (decoders)

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
        self._prefix_attention = [] if self.prefix_in_cache else [find_self_attention(b) for b in self._layers]
        for i, module in enumerate(self._prefix_attention):
            if module is not None and not getattr(module, "_softprompt_wrapped", False):
                module.forward = functools.partial(_attention_call, i, module.forward)
                module._softprompt_wrapped = True

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
    def dims(self) -> ModelDims:
        """Hidden size, layers, key/value heads and head width (what a key/value prefix is shaped by)."""
        return ModelDims.from_config(self.config, self.max_length)

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
            # the number format it runs in: a prompt tuned in one format serves in any (the fingerprint does not
            # change), but a run resumes only in its own (runs.RunFolder), as bf16 and fp32 score differently
            "dtype": dtype_name(self.dtype),
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
        in_prompt = torch.zeros_like(mask, dtype=torch.bool)  # (B, T + n) the row's input-layer prompt positions
        if prompt.embeds is not None:
            n, o = prompt.prompt_len, self.prompt_offset
            lengths = prompt.row_lengths().to(self.device)
            slots = torch.arange(n, device=self.device) < lengths[:, None]  # (B, n) used prompt positions
            embeds = torch.cat([embeds[:, :o], prompt.embeds, embeds[:, o:]], dim=1)
            mask = torch.cat([mask[:, :o], slots.to(mask.dtype), mask[:, o:]], dim=1)
            in_prompt = torch.cat([in_prompt[:, :o], slots, in_prompt[:, o:]], dim=1)
            if not bool(slots.all()):
                unused = torch.zeros_like(mask, dtype=torch.bool)
                unused[:, o : o + n] = ~slots
                order = torch.argsort(unused.to(torch.uint8), dim=1, stable=True)
                embeds = embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
                mask = mask.gather(1, order)
                in_prompt = in_prompt.gather(1, order)
            shift = lengths
            if prompt.deep is not None:
                if prompt.deep.shape[0] != self.num_layers:
                    raise ValueError(f"deep prompt has {prompt.deep.shape[0]} layers, model has {self.num_layers}")
                deep = prompt.deep * slots[None, :, :, None].to(prompt.deep.dtype)
        inserted = Inserted(embeds, mask, shift, deep)
        if prompt.prefix_keys is not None:
            self._insert_prefix(inserted, prompt)
        if prompt.gate is not None:
            self._insert_gate(inserted, prompt.gate, in_prompt)
        return self._check_width(inserted)

    def _insert_gate(self, inserted: Inserted, gate: torch.Tensor, in_prompt: torch.Tensor) -> None:
        """Each row's gate on its prompt's columns (prefix slots in front, then its input-layer positions).

        Decoders only: there the prompt never sees the text, so a gate of −∞ leaves the text exactly as without the
        prompt (with rotary positions; learnt absolute ones still move by n). In an encoder the prompt positions
        read the text and the decoder or head reads them, which one offset on the text's logits does not hide."""
        if not self.prefix_in_cache:
            raise ValueError(f"{self.name} ({self.kind}): a gated prompt needs a decoder-only model")
        m = inserted.mask.shape[1] - inserted.embeds.shape[1]
        columns = torch.cat([inserted.mask[:, :m].bool(), in_prompt], dim=1)
        inserted.key_bias = torch.where(columns, gate.to(inserted.embeds.dtype)[:, None], 0.0)

    def _insert_prefix(self, inserted: Inserted, prompt: PromptInputs) -> None:
        """A per-layer key/value prefix: every text position attends to the row's prefix slots, which sit at the
        end of the slot axis (left-padded), and the positions after `prompt_offset` move by the row's prefix length.
        Here (encoders) the prefix travels in the layer plan to the self-attention wrappers; decoders override this
        to pre-fill their cache."""
        self._check_prefix(prompt)
        if any(module is None for module in self._prefix_attention):
            raise ValueError(f"{self.name}: cannot find the self-attention of every block, so no key/value prefix")
        used, inserted.positions = self._prefix_slots(inserted, prompt)
        inserted.prefix = (prompt.prefix_keys, prompt.prefix_values, used)

    def _check_prefix(self, prompt: PromptInputs) -> None:
        keys, dims = prompt.prefix_keys, self.dims
        if keys.shape[0] != self.num_layers:
            raise ValueError(f"key/value prefix has {keys.shape[0]} layers, model has {self.num_layers}")
        if (keys.shape[2], keys.shape[4]) != (dims.num_kv_heads, dims.head_dim):
            raise ValueError(
                f"key/value prefix has {keys.shape[2]} heads of width {keys.shape[4]}, "
                f"{self.name} has {dims.num_kv_heads} key/value heads of width {dims.head_dim}"
            )

    def _prefix_slots(self, inserted: Inserted, prompt: PromptInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, m) the slots each row uses, and (B, T + n) position ids from 0 moved by the row's prefix length
        after `prompt_offset`."""
        m, lengths = prompt.prefix_len, prompt.row_prefix_lengths().to(self.device)
        used = torch.arange(m, device=self.device) >= (m - lengths)[:, None]
        index = torch.arange(inserted.embeds.shape[1], device=self.device)
        return used, index + torch.where(index >= self.prompt_offset, lengths[:, None], 0)

    def prompt_prefix(self, prompt: PromptInputs) -> PromptInputs:
        """A key/value prefix equal to an input-layer prompt: only decoder-only models have one (see causal.py)."""
        raise ValueError(
            f"{self.name} ({self.kind}): in an encoder the prompt positions attend to the text, so their keys and "
            "values change with every text; no fixed key/value prefix acts like the prompt (decoder-only models only)"
        )

    def as_prefix(self, prompt: PromptInputs) -> PromptInputs:
        """`prompt` with each row's input-layer vectors (deep prompts included) replaced by the key/value prefix that
        acts exactly like them, so their positions run once instead of once per text (a text update and a gate go
        along unchanged); unchanged where the model has no such prefix (encoders), the prompt is a prefix already,
        or a sliding-window cache would keep fewer than its n positions.

        The one place that decides it, for training, evaluation and the serving engine's prompt cache. It keeps the
        autograd graph: a loss through the prefix has the inserted prompt's gradient (to float tolerance)."""
        if not self.prefix_in_cache or prompt.embeds is None:
            return prompt
        if prompt.prefix_keys is not None:
            return prompt
        window = getattr(self.config, "sliding_window", None)
        if isinstance(window, int) and prompt.prompt_len > window - 1:  # the cache keeps the newest window - 1
            return prompt
        if prompt.num_rows == 1:
            return self.prompt_prefix(prompt)
        return PromptInputs.stack([self.prompt_prefix(prompt.row(i)) for i in range(prompt.num_rows)])

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
        layered = x.deep is not None or x.prefix is not None or x.key_bias is not None or start is not None
        plan = self._plan(x, start=start) if layered else None
        return self._read_out(self._with_plan(plan, self._run, x, batch), batch, x)

    @torch.inference_mode()
    def layer_inputs(
        self, batch: EncodedBatch, prompt: PromptInputs | None = None, layers: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Hidden states entering each of `layers` (default all; before deep[l] is added). The forward pass stops
        after the last requested layer, so asking for low layers costs only those layers."""
        wanted = frozenset(range(self.num_layers) if layers is None else layers)
        x = self.insert(batch, prompt)
        plan = self._plan(x, capture=wanted)
        try:
            self._with_plan(plan, self._run, x, batch)
        except _StopForward:
            pass
        return plan.captured

    def _plan(self, x: Inserted, **kwargs: Any) -> _LayerPlan:
        """The layer plan of an inserted prompt: its deep prompts, its gate and (encoders) its key/value prefix."""
        return _LayerPlan(x.deep, self.prompt_offset, prefix=x.prefix, key_bias=x.key_bias, **kwargs)

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
        """LM-head logits for `token_ids` only (all of the vocabulary if None): a K-row matmul instead of V rows.

        The K-row product runs in float32 whatever the model's dtype: label scores are what CMA-ES ranks and what
        accuracy reads, and a bfloat16 logit near 15 moves in steps of 0.06, coarser than late candidates differ."""
        head = self.model.get_output_embeddings()
        if token_ids is None:
            weight, bias = head.weight, getattr(head, "bias", None)
        else:
            ids = token_ids.to(self.device)
            hidden, weight = hidden.float(), head.weight[ids].float()
            bias = None if getattr(head, "bias", None) is None else head.bias[ids].float()
        out = hidden @ weight.T
        if bias is not None:
            out = out + bias
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            out = torch.tanh(out / cap) * cap
        return out

    # --- generation -----------------------------------------------------------------------------------------------
    def generate(
        self,
        texts: Sequence[str],
        prompt: PromptInputs | None = None,
        max_new_tokens: int | None = None,
        *,
        options: GenerationOptions | None = None,
        on_step: OnStep | None = None,
        **settings: Any,
    ) -> list[str]:
        """Batched decoding with a key/value cache (see `GenerationOptions`); `prompt` has one row or one per text.

        Pass `options`, or its fields as keywords: `generate(texts, prompt, 16, do_sample=True, seed=0)`.
        `on_step(row, ids)` is called from the decoding loop each time a row gains a token (`ids`: that row's
        generated ids so far, read-only), so a caller can stream text (`TextStream` turns ids into safe deltas)."""
        if options is None:
            options = GenerationOptions(**({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}),
                                        **settings)  # fmt: skip
        elif max_new_tokens is not None or settings:
            raise ValueError("pass generation settings either as `options` or as keywords, not both")
        return self._generate(list(texts), prompt, options, on_step)

    def _generate(
        self, texts: list[str], prompt: PromptInputs | None, options: GenerationOptions, on_step: OnStep | None = None
    ) -> list[str]:
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


@dataclass(frozen=True)
class GenerationOptions:
    """How `Backbone.generate` decodes, checked once: greedy, or sampling with `temperature` and nucleus `top_p`;
    at most `max_new_tokens` per row; each row cut at its first `stop` string; `seed` fixes the sampling stream."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)  # one string is one stop, not chars
        object.__setattr__(self, "stop", stop)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    def sampler(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, V) logits of the next position -> (B,) token ids: argmax, or a seeded sample from the top-p nucleus."""
        if not self.do_sample:
            return lambda logits: logits.argmax(-1)
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None

        def sample(logits: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(logits.float() / self.temperature, dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p  # keep the smallest prefix reaching top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            picked = torch.multinomial(sorted_probs.cpu(), 1, generator=generator).to(logits.device)
            return order.gather(-1, picked).squeeze(-1)

        return sample


OnStep = Callable[[int, list[int]], None]  # (row, the row's generated token ids so far) after each new token


@dataclass
class Decoded:
    """The tokens generated for each row so far; a row ends at end-of-sequence or once a stop string appears.

    The one bookkeeping of every family's decoding loop, so `on_step` (streaming) is called in one place."""

    tokenizer: Any
    rows: int
    stop: Sequence[str] = ()
    on_step: OnStep | None = None
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
            if self.on_step is not None:
                self.on_step(i, self.ids[i])
        return all(self.done)

    def texts(self) -> list[str]:
        return [cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop)[0] for ids in self.ids]


@dataclass
class TextStream:
    """One row's generated text as deltas that are safe to send before the row is finished.

        push(ids so far) -> delta     text = cut_at_stop(decode(ids)); send text[len(sent) : safe_end(text)]
        finish(final text) -> rest    final[len(sent):], the final text being `Decoded.texts()`'s row

    `safe_end` holds back what later tokens may still change: a trailing U+FFFD (a multi-byte character whose
    bytes are split over tokens decodes to it until the last byte arrives), trailing whitespace (decoders may merge
    or drop a space before what follows, e.g. clean_up_tokenization_spaces) and the longest end of the text that
    begins a stop string (a stop string is never sent in part). So the deltas join to exactly the final text. Were
    a tokenizer to rewrite text already sent anyway, nothing more is sent until its decoding agrees again."""

    tokenizer: Any
    stop: Sequence[str] = ()
    sent: str = ""

    def push(self, ids: Sequence[int]) -> str:
        text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop)
        return self._advance(text if stopped else text[: self._safe_end(text)])

    def finish(self, text: str) -> str:
        return self._advance(text)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def _safe_end(self, text: str) -> int:
        end = len(text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):  # the longest proper prefix of s ending the text
                if text.endswith(s[:k]):
                    end = min(end, len(text) - k)
                    break
        while end and (text[end - 1] == "\ufffd" or text[end - 1].isspace()):
            end -= 1
        return end


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
