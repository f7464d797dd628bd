"""A frozen model as an inference API for black-box prompt search: forward passes only, never weights or gradients.

    GET  /healthz                 liveness
    GET  /v1/info                 model description, hidden size, layer count, max_length, limits
    POST /v1/tokenize             JSON {texts, continuations?, words?} -> JSON encoded batch + label-word token ids
    POST /v1/scores               binary: batch + token_ids + prompts (P,n,D) [+ deep (L,P,n,D)] -> scores (P,K,S,C)
    POST /v1/embedding_std        -> JSON {std}
    POST /v1/hidden_state_stds    binary: batch + prompt (n,D) -> JSON {stds: [L floats]}

Binary bodies are safetensors buffers (`softprompt.remote.wire`) with a JSON object in the metadata. Every input
is checked against the model before it reaches it, so a wrong request gets a 4xx with a message, not a 500.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.remote import inference
from softprompt.remote.wire import (
    BATCH_FIELDS,
    EXTRA_PREFIX,
    MEDIA_TYPE,
    WireError,
    batch_from_tensors,
    batch_to_json,
    decode,
    encode,
)
from softprompt.version import __version__

T = TypeVar("T")
INT = (torch.int64, torch.int32)
MASK = (*INT, torch.bool)
FLOAT = (torch.float32,)


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 * 2**20
    max_rows: int = 8192  # P·K rows per scoring request (and texts per tokenize request)
    max_token_ids: int = 256  # logits per position: a verbalizer, not a way to read out the LM head
    max_prompt_len: int = 512
    chunk_rows: int = 64  # rows per forward pass


class TokenizeRequest(BaseModel):
    texts: list[str] = Field(default_factory=list)
    continuations: list[list[int]] | None = None  # token ids teacher-forced after each text (multi-token labels)
    words: list[str] = Field(default_factory=list)  # label words to tokenise the way the Scorer does


def _bad(message: str, status: int = 422) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _tensor(tensors: dict[str, torch.Tensor], name: str, dims: int, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    t = tensors.get(name)
    if t is None:
        raise _bad(f"missing tensor {name!r}")
    if t.dim() != dims:
        raise _bad(f"{name} must have {dims} dimensions, got shape {list(t.shape)}")
    if t.dtype not in dtypes:
        raise _bad(f"{name} must be {' or '.join(str(d).removeprefix('torch.') for d in dtypes)}, got {t.dtype}")
    return t


def _in_range(t: torch.Tensor, name: str, high: int) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
        raise _bad(f"{name} values must lie in [0, {high}), got [{int(t.min())}, {int(t.max())}]")


def create_app(backbone: Backbone, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    d, layers, vocab = backbone.hidden_size, backbone.num_layers, backbone.vocab_size
    extras = sorted(backbone.encode(["probe"]).extras)  # architecture-specific batch inputs the client must send
    # Deep prompts and statistics register hooks on the one shared model, and fast tokenizers reject concurrent
    # use: all model work runs one request at a time.
    lock = threading.Lock()
    app = FastAPI(title="softprompt LM endpoint", version=__version__)

    async def locked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with lock:
                try:
                    return fn(*args, **kwargs)
                except (ValueError, IndexError) as err:  # the model refused this input: the client's to fix
                    raise _bad(f"the model rejected the input: {err}") from err

        return await run_in_threadpool(call)

    async def read_payload(request: Request) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        body = bytearray()
        async for part in request.stream():  # counted as it arrives: a missing Content-Length is no way around
            body += part
            if len(body) > limits.max_request_bytes:
                raise _bad(f"request body exceeds {limits.max_request_bytes} bytes", 413)
        try:
            return decode(bytes(body))
        except WireError as err:
            raise _bad(str(err), 400) from err

    def check_batch(tensors: dict[str, torch.Tensor], allowed: set[str]) -> EncodedBatch:
        expected = set(BATCH_FIELDS) | {EXTRA_PREFIX + e for e in extras} | allowed
        if unknown := sorted(set(tensors) - expected):
            raise _bad(f"unexpected tensors {unknown}; this endpoint takes {sorted(expected)}")
        ids = _tensor(tensors, "input_ids", 2, INT)
        k, width = ids.shape
        if k == 0 or width == 0:
            raise _bad(f"input_ids is empty (shape {list(ids.shape)})")
        if width > backbone.max_length:
            raise _bad(f"input_ids has {width} positions; this endpoint's max_length is {backbone.max_length}")
        _in_range(ids, "input_ids", vocab)
        mask = _tensor(tensors, "attention_mask", 2, MASK)
        if mask.shape != ids.shape:
            raise _bad(f"attention_mask has shape {list(mask.shape)}, input_ids {list(ids.shape)}")
        score_index = _tensor(tensors, "score_index", 2, INT)
        if score_index.shape[0] != k or score_index.shape[1] == 0:
            raise _bad(f"score_index has shape {list(score_index.shape)}; expected ({k}, S >= 1)")
        if "score_mask" in tensors and _tensor(tensors, "score_mask", 2, MASK).shape != score_index.shape:
            raise _bad(f"score_mask must have the shape of score_index {list(score_index.shape)}")
        for name in extras:
            t = _tensor(tensors, EXTRA_PREFIX + name, 2, MASK)
            if t.shape[0] != k or not 0 < t.shape[1] <= backbone.max_length:
                raise _bad(f"{EXTRA_PREFIX}{name} has shape {list(t.shape)}; expected ({k}, 1..{backbone.max_length})")
            _in_range(t.long(), EXTRA_PREFIX + name, vocab)
        _in_range(mask.long(), "attention_mask", 2)
        # A seq2seq model reads its answer on the decoder side, so the score positions index the decoder inputs.
        positions = tensors[EXTRA_PREFIX + "decoder_input_ids"].shape[1] if "decoder_input_ids" in extras else width
        _in_range(score_index, "score_index", positions)
        return batch_from_tensors(tensors)

    def check_prompts(prompts: torch.Tensor, name: str) -> None:
        if prompts.shape[-1] != d:
            raise _bad(f"{name} has hidden size {prompts.shape[-1]}, the model's is {d}")
        n = prompts.shape[-2]
        if not 1 <= n <= limits.max_prompt_len:
            raise _bad(f"{name} has {n} prompt positions; 1 to {limits.max_prompt_len} allowed")
        if not torch.isfinite(prompts).all():
            raise _bad(f"{name} contains NaN or infinite values")

    @app.middleware("http")
    async def reject_oversize(request: Request, call_next: Callable) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_request_bytes:
            detail = f"request body of {length} bytes exceeds the limit of {limits.max_request_bytes} bytes"
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    def info() -> dict[str, Any]:
        return {
            "model": backbone.describe(),
            "hidden_size": d,
            "num_layers": layers,
            "max_length": backbone.max_length,
            "batch_extras": extras,
            "limits": asdict(limits),
            "version": __version__,
        }

    @app.post("/v1/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        if len(req.texts) > limits.max_rows or len(req.words) > limits.max_token_ids:
            raise _bad(f"at most {limits.max_rows} texts and {limits.max_token_ids} words per request")
        if req.continuations is not None:
            if len(req.continuations) != len(req.texts):
                raise _bad(f"{len(req.continuations)} continuations for {len(req.texts)} texts")
            for cont in req.continuations:
                _in_range(torch.tensor(cont, dtype=torch.long), "continuation token ids", vocab)

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {"words": [backbone.tokenize(w) for w in req.words]}
            if req.texts:
                batch = backbone.encode(req.texts, req.continuations)
                out |= {"batch": batch_to_json(batch), "num_truncated": batch.num_truncated}
            return out

        return await locked(run)

    @app.post("/v1/scores")
    async def scores(request: Request) -> Response:
        tensors, meta = await read_payload(request)
        batch = check_batch(tensors, {"token_ids", "prompts", "deep"})
        output = meta.get("output", "logits")
        if output not in ("logits", "logprobs"):
            raise _bad(f"metadata output must be 'logits' or 'logprobs', got {output!r}")
        token_ids = _tensor(tensors, "token_ids", 1, INT)
        if not 1 <= len(token_ids) <= limits.max_token_ids:
            raise _bad(f"token_ids has {len(token_ids)} entries; 1 to {limits.max_token_ids} allowed")
        _in_range(token_ids, "token_ids", vocab)
        prompts = _tensor(tensors, "prompts", 3, FLOAT)
        check_prompts(prompts, "prompts")
        p = prompts.shape[0]
        if not 1 <= p * len(batch) <= limits.max_rows:
            raise _bad(f"{p} prompts x {len(batch)} examples = {p * len(batch)} rows; 1 to {limits.max_rows} allowed")
        deep = tensors.get("deep")
        if deep is not None:
            deep = _tensor(tensors, "deep", 4, FLOAT)
            if tuple(deep.shape) != (layers, *prompts.shape):
                raise _bad(f"deep has shape {list(deep.shape)}, expected {[layers, *prompts.shape]} (layers, P, n, D)")
            check_prompts(deep, "deep")
        result = await locked(
            inference.candidate_scores,
            backbone,
            batch,
            token_ids.long(),
            prompts,
            deep,
            logprobs=output == "logprobs",
            chunk_rows=limits.chunk_rows,
        )
        body = encode({"scores": result}, {"fingerprint": backbone.fingerprint, "output": output})
        return Response(body, media_type=MEDIA_TYPE)

    @app.post("/v1/embedding_std")
    async def embedding_std() -> dict[str, float]:
        return {"std": await locked(inference.embedding_std, backbone)}

    @app.post("/v1/hidden_state_stds")
    async def hidden_state_stds(request: Request) -> dict[str, list[float]]:
        tensors, _ = await read_payload(request)
        batch = check_batch(tensors, {"prompt"})
        if len(batch) > limits.max_rows:
            raise _bad(f"{len(batch)} examples; at most {limits.max_rows} allowed")
        prompt = tensors.get("prompt")
        if prompt is None or prompt.dim() not in (2, 3) or (prompt.dim() == 3 and prompt.shape[0] != 1):
            raise _bad("prompt must be a (n, D) or (1, n, D) tensor")
        _tensor(tensors, "prompt", prompt.dim(), FLOAT)
        check_prompts(prompt, "prompt")
        stds = await locked(inference.hidden_state_stds, backbone, batch, prompt, limits.chunk_rows)
        return {"stds": stds}

    return app
