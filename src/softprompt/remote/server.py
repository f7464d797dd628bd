"""A frozen model as an inference API for black-box prompt search: forward passes only, never weights or gradients.

    GET  /healthz                 liveness
    GET  /v1/info                 model description, hidden size, layer count, max_length, limits
    POST /v1/tokenize             JSON {texts, continuations?, words?} -> JSON encoded batch + label-word token ids
    POST /v1/scores               binary: batch + token_ids + prompts (P,n,D) [+ deep (L,P,n,D)] -> scores (P,K,S,C)
    POST /v1/embedding_std        -> JSON {std}
    POST /v1/hidden_state_stds    binary: batch + prompt (n,D) -> JSON {stds: [L floats]}

Binary bodies are safetensors buffers (`softprompt.remote.wire`) with a JSON object in the metadata. Every input
is checked against the model before it reaches it, so a wrong request gets a 4xx with a message, not a 500 (text
that is not valid Unicode too, and a malformed body is named without echoing it back):
every dimension of a request is bounded, and so is its total work — token positions through the model
(rows × (prompt + text positions)), values returned (rows × scored positions × token ids), hidden-state values a
statistics request keeps — so no request can hold the model for long or allocate without bound (`Limits`).

Before a request reaches a route, `Guard` (plain ASGI, below FastAPI) checks the Host header against the allowed
names (a web page on another origin cannot reach the endpoint through DNS rebinding), the API key if one is set,
and the content type (binary routes take application/octet-stream, JSON routes application/json, which a page on
another origin cannot send without a CORS preflight the endpoint never grants); it then reads the body itself, with
or without Content-Length, up to the size cap and within a deadline, so slow or oversized bodies are cut off early.

No global lock: a forward pass carries its own layer plan (a ContextVar, models/backbone.py) and the tokenizer has
its own lock, so requests run side by side, at most `Limits.concurrency` at a time (which bounds memory).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from softprompt.http_body import CLOSE, Disconnected, Receive, Refusal, Replay, Scope, Send, read_body
from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.hardware import dtype_name
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
from softprompt.utf8 import check_utf8
from softprompt.version import __version__

T = TypeVar("T")
INT = (torch.int64, torch.int32)
MASK = (*INT, torch.bool)
FLOAT = (torch.float32,)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BINARY_ROUTES = ("/v1/scores", "/v1/hidden_state_stds")
JSON_ROUTES = ("/v1/tokenize",)
OPEN_ROUTES = ("/healthz",)  # answered without the API key (liveness probes)


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 * 2**20
    max_rows: int = 8192  # P·K rows per scoring request (and texts per tokenize request)
    max_token_ids: int = 256  # logits per position: a verbalizer, not a way to read out the LM head
    max_prompt_len: int = 512
    max_score_positions: int = 32  # S: scored positions per row (the longest label word's tokens)
    max_text_chars: int = 100_000  # per text to tokenise (the model reads at most max_length tokens anyway)
    max_work_tokens: int = 2**20  # P·K·(n + positions): token positions one request sends through the model
    max_output_values: int = 2**24  # P·K·S·C scores one request returns (64 MB of float32)
    max_stats_values: int = 2**27  # K·(n + positions)·D·L hidden-state values one statistics request keeps
    chunk_rows: int = 64  # rows per forward pass
    concurrency: int = 4  # requests doing model work at the same time (each holds at most one chunk's activations)
    body_timeout_s: float = 60.0  # the whole body must arrive within this many seconds

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")


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
        raise _bad(f"{name} must be {' or '.join(dtype_name(d) for d in dtypes)}, got {t.dtype}")
    return t


def _in_range(t: torch.Tensor, name: str, high: int) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
        raise _bad(f"{name} values must lie in [0, {high}), got [{int(t.min())}, {int(t.max())}]")


def _valid_text(text: str, what: str) -> None:
    """JSON can carry lone surrogates, which no tokenizer takes: a 422 naming the field, not a 500 inside the model."""
    try:
        check_utf8(text, what)
    except ValueError as err:
        raise _bad(str(err)) from None


def _within(value: int, limit: int, what: str) -> None:
    if value > limit:
        raise _bad(f"{what} = {value:,}; this endpoint allows at most {limit:,}")


# --- below the routes: host, key, content type, bounded and timely body ---------------------------------------------
class Guard:
    """ASGI middleware that answers bad requests itself (JSON `{"detail": ...}`, 4xx) before the app sees them."""

    def __init__(self, app: Callable[..., Awaitable[None]], limits: Limits, allowed_hosts: Iterable[str],
                 api_key: str | None) -> None:  # fmt: skip
        self.app, self.limits, self.api_key = app, limits, api_key
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope, headers)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                body = await read_body(receive, headers.get("content-length"), self.limits.max_request_bytes,
                                       self.limits.body_timeout_s)  # fmt: skip
            except Disconnected:
                return None
            if isinstance(body, Refusal):
                return await _json_response(send, body.status, body.detail, close=True)
            receive = Replay(body, receive)
        if refusal is not None:
            return await _json_response(send, *refusal, close=False)
        return await self.app(scope, receive, send)

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = _hostname(headers.get("host", ""))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            return 400, (f"Host header {headers.get('host', '')!r} is not allowed here; start serve-lm with "
                         f"--allowed-host {host or 'NAME'} to accept it")  # fmt: skip
        path = scope["path"]
        if self.api_key is not None and path not in OPEN_ROUTES:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return 401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'"
        if scope["method"] == "POST":
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            want = MEDIA_TYPE if path in BINARY_ROUTES else "application/json" if path in JSON_ROUTES else None
            if (want is not None and media != want) or (want is None and media not in ("", "application/json")):
                return 415, f"content type {media or '(none)'!r} is not accepted here; send {want or 'no body'}"
        return None


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8765
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _invalid_body(request: Request, err: RequestValidationError) -> Response:
    """A body the request model refuses: 422 and one line naming the field, never the input (FastAPI's default
    echoes it, and fails on text it cannot encode), serialised as ASCII so that nothing in it can fail to encode."""
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    detail = f"{where}: {first.get('msg', 'invalid request')}".strip(": ")
    return Response(json.dumps({"detail": detail}), status_code=422, media_type="application/json")


async def _json_response(send: Send, status: int, detail: str, close: bool) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:
        headers += [(k.encode(), v.encode()) for k, v in CLOSE.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    backbone: Backbone,
    limits: Limits | None = None,
    *,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    api_key: str | None = None,
) -> Guard:
    """The endpoint as an ASGI app. `allowed_hosts`: names the Host header may carry ("*": any); `api_key`: if set,
    every route but /healthz needs `Authorization: Bearer <api_key>`."""
    limits = limits or Limits()
    if api_key is not None and not api_key:
        raise ValueError("the API key is empty")
    d, layers, vocab = backbone.hidden_size, backbone.num_layers, backbone.vocab_size
    extras = sorted(backbone.encode(["probe"]).extras)  # architecture-specific batch inputs the client must send
    app = FastAPI(title="softprompt LM endpoint", version=__version__)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    slots = asyncio.Semaphore(limits.concurrency)

    async def in_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Model work in a worker thread (no lock: see the module docstring), `concurrency` requests at a time."""

        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except (ValueError, IndexError) as err:  # the model refused this input: the client's to fix
                raise _bad(f"the model rejected the input: {err}") from err

        async with slots:
            return await run_in_threadpool(call)

    async def read_payload(request: Request) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        try:
            return decode(await request.body())  # read and bounded by `Guard` already
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
        _within(k, limits.max_rows, "examples (input_ids rows)")
        score_index = _tensor(tensors, "score_index", 2, INT)
        if score_index.shape[0] != k or score_index.shape[1] == 0:
            raise _bad(f"score_index has shape {list(score_index.shape)}; expected ({k}, S >= 1)")
        _within(score_index.shape[1], limits.max_score_positions, "scored positions per row (S)")
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

    def positions(batch: EncodedBatch, n: int) -> int:
        """Token positions one row sends through the model: the prompt, the text, and a decoder side if any."""
        return n + batch.input_ids.shape[1] + sum(t.shape[1] for t in batch.extras.values())

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
        _within(max(map(len, [*req.texts, *req.words]), default=0), limits.max_text_chars, "characters in one text")
        for what, texts in (("text", req.texts), ("word", req.words)):
            for i, text in enumerate(texts):
                _valid_text(text, f"{what} {i}")
        if req.continuations is not None:
            if len(req.continuations) != len(req.texts):
                raise _bad(f"{len(req.continuations)} continuations for {len(req.texts)} texts")
            for cont in req.continuations:
                _within(len(cont), limits.max_score_positions, "continuation tokens (scored positions)")
                _in_range(torch.tensor(cont, dtype=torch.long), "continuation token ids", vocab)

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {"words": [backbone.tokenize(w) for w in req.words]}
            if req.texts:
                batch = backbone.encode(req.texts, req.continuations)
                out |= {"batch": batch_to_json(batch), "num_truncated": batch.num_truncated}
            return out

        return await in_worker(run)

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
        shared = meta.get("shared_layers", 0)
        if shared:
            if not isinstance(shared, int) or isinstance(shared, bool) or not 0 < shared < layers or deep is None:
                raise _bad(f"metadata shared_layers must be an integer from 1 to {layers - 1} with deep prompts")
            if not (bool((prompts == prompts[:1]).all()) and bool((deep[:shared] == deep[:shared, :1]).all())):
                raise _bad(f"shared_layers={shared}: the candidates' prompts differ below layer {shared}")
        rows = p * len(batch)
        _within(rows * positions(batch, prompts.shape[1]), limits.max_work_tokens, "token positions (rows x (n+text))")
        _within(rows * batch.score_index.shape[1] * len(token_ids), limits.max_output_values, "scores (rows x S x C)")
        result = await in_worker(
            inference.candidate_scores,
            backbone,
            batch,
            token_ids.long(),
            prompts,
            deep,
            logprobs=output == "logprobs",
            chunk_rows=limits.chunk_rows,
            shared_layers=shared,
        )
        body = encode({"scores": result}, {"fingerprint": backbone.fingerprint, "output": output})
        return Response(body, media_type=MEDIA_TYPE)

    @app.post("/v1/embedding_std")
    async def embedding_std() -> dict[str, float]:
        return {"std": await in_worker(inference.embedding_std, backbone)}

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
        work = len(batch) * positions(batch, prompt.shape[-2])
        _within(work, limits.max_work_tokens, "token positions (rows x (n + text))")
        _within(work * d * layers, limits.max_stats_values, "hidden-state values (positions x D x layers)")
        stds = await in_worker(inference.hidden_state_stds, backbone, batch, prompt, limits.chunk_rows)
        return {"stds": stds}

    return Guard(app, limits, allowed_hosts, api_key)
