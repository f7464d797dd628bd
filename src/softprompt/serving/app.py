"""The prompt server's HTTP API (FastAPI): many tenants' prompts on one frozen model, OpenAI-compatible.

    GET    /v1/models                    the caller's prompts and other tenants' public ones (OpenAI "models")
    POST   /v1/completions               OpenAI completions; `model` names the prompt ("name", "name@3", "owner/name")
    POST   /v1/chat/completions          OpenAI chat; messages rendered with the tokenizer's chat template (else joined)
    POST   /v1/classify                  {model, texts} -> label probabilities under the prompt's task
    POST   /v1/prompts/{name}            upload artifact bytes (PromptArtifact.to_bytes, application/octet-stream)
    GET    /v1/prompts                   list;   GET /v1/prompts/{ref}  metadata;   GET /v1/prompts/{ref}/content  bytes
    PATCH  /v1/prompts/{name}            {"public": bool};   DELETE /v1/prompts/{name}[?version=N]
    POST   /v1/tenants, GET /v1/tenants, POST /v1/tenants/{t}/key, DELETE /v1/tenants/{t}   (admin key only)
    GET    /healthz, GET /metrics (admin key; Prometheus text), GET /openapi.json

Auth: `Authorization: Bearer KEY`; the registry maps a key to its tenant (keys are stored hashed there). A tenant
sees, uses and changes only its own prompts and reads other tenants' public ones; anything else is 404, so the
existence of another tenant's private prompt never shows. Uploads are parsed by `PromptArtifact.from_bytes` (shapes,
dtypes, finite values, sizes, checksums; no pickle) and must fit the served model; a path is never accepted.

Limits: body size (413) and its arrival time (408), texts per request, tokens per text and max_tokens (422), a
request timeout (504), a full queue (429). Text no tokenizer takes (a lone surrogate, which JSON can carry) is a 422
naming the field (`softprompt.utf8`). Streaming (`stream: true`) sends server-sent events in OpenAI's chunk
format ending in `data: [DONE]`: each choice's text as the batched generation decodes it (engine `on_delta` -> an
asyncio queue fed with call_soon_threadsafe, so the event loop never blocks), then its finish_reason, the usage if
asked, `[DONE]`.
`n` choices per prompt are n rows (choice j of a seeded sampling request uses seed + j, so they differ).
Errors use OpenAI's body, {"error": {"message", "type", "code"}}, so the official client raises its usual exceptions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from softprompt.artifact import ArtifactError, PromptArtifact
from softprompt.http_body import CLOSE, Disconnected, Receive, Refusal, Replay, Scope, Send, read_body
from softprompt.serving.engine import Completion, Engine, GenerationOptions, QueueFull
from softprompt.serving.metrics import ServerMetrics
from softprompt.utf8 import check_utf8
from softprompt.version import __version__

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADMIN = "<admin>"


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 8 << 20
    body_timeout_s: float = 60.0  # the whole request body must arrive within this many seconds (else 408)
    max_texts: int = 64  # texts per classify request, prompts per completions request
    max_input_tokens: int | None = None  # per text; default: the model's max_length
    max_new_tokens: int = 512
    max_prompt_len: int = 1024  # input-layer prompt vectors of an uploaded prompt
    request_timeout_s: float = 120.0
    metrics_max_prompts: int = 100  # per-prompt metric labels; the rest are counted as "other"


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


# --- request bodies -------------------------------------------------------------------------------------------------
class _Sampling(BaseModel):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0)  # 0: greedy (as in OpenAI's API); > 0: sampling
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1)  # choices per prompt, each its own row; seeded sampling: choice j uses seed + j
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    use_template: bool = False  # extension: render the text with the prompt's task template first


class ContentPart(BaseModel, extra="allow"):
    """One part of a message's content in OpenAI's list form; text parts are used, others (images) ignored."""

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class ClassifyRequest(BaseModel):
    model: str
    texts: list[str] = Field(min_length=1)


class TenantRequest(BaseModel):
    tenant: str


class PublicRequest(BaseModel):
    public: bool


# --- the app --------------------------------------------------------------------------------------------------------
def create_app(engine: Engine, registry: Any, *, admin_key: str | None = None, limits: ServerLimits | None = None,
               metrics: ServerMetrics | None = None) -> FastAPI:  # fmt: skip
    """The HTTP app over `engine` (which owns the model) and `registry` (prompts and tenant keys)."""
    limits = limits or ServerLimits()
    backbone = engine.backbone
    max_input_tokens = limits.max_input_tokens or backbone.max_length
    metrics = metrics or ServerMetrics(engine, limits.metrics_max_prompts)
    app = FastAPI(title="softprompt server", version=__version__, description=__doc__)
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.state.engine, app.state.registry, app.state.metrics = engine, registry, metrics

    # --- errors: one OpenAI-style body ------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    # --- auth ---------------------------------------------------------------------------------------------------------
    def bearer(request: Request) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "missing API key (send Authorization: Bearer KEY)", "authentication_error")
        return key.strip()

    def is_admin(key: str) -> bool:
        return admin_key is not None and hmac.compare_digest(key.encode(), admin_key.encode())

    async def tenant_of(request: Request) -> str:
        key = bearer(request)
        tenant = await run_in_threadpool(registry.tenant_for_key, key)
        if tenant is None:
            raise ApiError(401, "invalid API key" + (" (the admin key manages tenants only)" if is_admin(key) else ""),
                           "authentication_error")  # fmt: skip
        return tenant

    def require_admin(request: Request) -> None:
        if admin_key is None:
            raise ApiError(403, "this server has no admin key (start it with --admin-key-env)", "permission_error")
        if not is_admin(bearer(request)):
            raise ApiError(403, "admin key required", "permission_error")

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A registry/engine call in a worker thread, its errors mapped to HTTP statuses."""
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except Exception as err:
            raise _mapped(err) from err

    async def wait(future: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limits.request_timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise ApiError(504, f"request timed out after {limits.request_timeout_s:g} s", "timeout") from None
        except Exception as err:
            raise _mapped(err) from err

    def check_tokens(texts: list[str], what: str = "text") -> int:
        if len(texts) > limits.max_texts:
            raise ApiError(422, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
        total = 0
        for i, text in enumerate(texts):
            _valid_text(text, f"{what} {i}")
            n = engine.count_tokens(text)
            if n > max_input_tokens:
                raise ApiError(422, f"text {i} has {n} tokens; the limit is {max_input_tokens}")
            total += n
        return total

    def options(body: _Sampling, max_tokens: int | None) -> GenerationOptions:
        n = max_tokens or 16
        if n > limits.max_new_tokens:
            raise ApiError(422, f"max_tokens {n} is above the limit {limits.max_new_tokens}")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4:
            raise ApiError(422, "at most 4 stop strings")
        for i, text in enumerate(stop):
            _valid_text(text, f"stop string {i}")
        sample = body.temperature > 0
        return GenerationOptions(n, sample, body.temperature if sample else 1.0, body.top_p, tuple(stop), body.seed)

    # --- service ------------------------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": backbone.describe(), "version": __version__}

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        require_admin(request)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # --- OpenAI-compatible --------------------------------------------------------------------------------------------
    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        tenant = await tenant_of(request)
        records = await call(registry.list, tenant, include_public=True)
        return {"object": "list", "data": [{"id": _ref(tenant, r), "object": "model", "created": int(r.created),
                                            "owned_by": r.tenant} for r in records]}  # fmt: skip

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Any:
        tenant = await tenant_of(request)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts:
            raise ApiError(422, "prompt: at least one text")
        check_tokens(texts, "prompt")
        opts = options(body, body.max_tokens)
        return await generate(tenant, body, texts, opts, "text_completion", body.use_template)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request, body: ChatRequest) -> Any:
        tenant = await tenant_of(request)
        for i, message in enumerate(body.messages):
            _valid_text(message.role, f"message {i} role")
            _valid_text(_content(message.content), f"message {i} content")
        text = render_chat(backbone.tokenizer, body.messages)
        check_tokens([text])
        opts = options(body, body.max_completion_tokens or body.max_tokens)
        return await generate(tenant, body, [text], opts, "chat.completion", False)

    async def generate(tenant: str, body: _Sampling, texts: list[str], opts: GenerationOptions,
                       kind: str, use_template: bool) -> Any:  # fmt: skip
        started = time.monotonic()
        endpoint = "chat" if kind == "chat.completion" else "completions"
        rid, created = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
        record = None
        if len(texts) * body.n > limits.max_texts:
            raise ApiError(422, f"{len(texts)} prompts x n={body.n} choices; the limit is {limits.max_texts} rows")
        seeded = opts.do_sample and opts.seed is not None
        rows = [
            (text, dataclasses.replace(opts, seed=opts.seed + j) if seeded else opts)
            for text in texts
            for j in range(body.n)
        ]  # choice index = prompt * n + j, as in OpenAI's API
        events: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def post(i: int, item: Any) -> None:  # from the engine's thread: a text delta, or the finished future
            loop.call_soon_threadsafe(events.put_nowait, (i, item))

        futures: list[Any] = []
        try:
            record, _ = await call(engine.resolve, tenant, body.model)
            for i, (text, row_opts) in enumerate(rows):
                on_delta = functools.partial(post, i) if body.stream else None
                future = await call(engine.submit_complete, tenant, body.model, text, row_opts,
                                    use_template=use_template, on_delta=on_delta)  # fmt: skip
                if body.stream:
                    future.add_done_callback(functools.partial(post, i))
                futures.append(future)
            if not body.stream:
                outs: list[Completion] = [await wait(f) for f in futures]
        except ApiError as err:
            for future in futures:
                future.cancel()
            metrics.request(endpoint, record, err.status, time.monotonic() - started)
            raise

        def usage_of(outs: list[Completion]) -> dict[str, int]:
            usage = {"prompt_tokens": sum(o.prompt_tokens for o in outs[:: body.n]),  # each prompt once
                     "completion_tokens": sum(o.completion_tokens for o in outs)}  # fmt: skip
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return usage

        if body.stream:
            chat = kind == "chat.completion"
            chunk = functools.partial(_chunk, rid, created, body.model, "chat.completion.chunk" if chat else kind)
            include_usage = bool((body.stream_options or {}).get("include_usage"))

            async def stream() -> AsyncIterator[bytes]:
                """Chunks as the batched generation produces them: each choice's deltas, its finish_reason once
                its row is done, the usage (if asked), `data: [DONE]`; an error mid-stream is an error event."""
                finished: dict[int, Completion] = {}
                status = 200
                try:
                    if chat:
                        for i in range(len(rows)):
                            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}])  # fmt: skip
                    deadline = started + limits.request_timeout_s
                    while len(finished) < len(rows):
                        try:
                            i, item = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
                        except asyncio.TimeoutError:
                            raise ApiError(504, f"request timed out after {limits.request_timeout_s:g} s",
                                           "timeout") from None  # fmt: skip
                        if isinstance(item, str):
                            piece = {"delta": {"content": item}} if chat else {"text": item, "logprobs": None}
                            yield chunk([{"index": i, **piece, "finish_reason": None}])
                            continue
                        try:
                            finished[i] = item.result()
                        except Exception as err:
                            raise _mapped(err) from err
                        end = {"delta": {}} if chat else {"text": "", "logprobs": None}
                        yield chunk([{"index": i, **end, "finish_reason": finished[i].finish_reason}])
                    usage = usage_of([finished[i] for i in range(len(rows))])
                    if include_usage:
                        yield chunk([], usage=usage)
                    yield b"data: [DONE]\n\n"
                    metrics.request(endpoint, record, 200, time.monotonic() - started, usage)
                except ApiError as err:
                    status = err.status
                    yield _sse_data({"error": {"message": err.message, "type": err.kind, "code": err.status}})
                    yield b"data: [DONE]\n\n"
                except Exception:
                    status = 500
                    raise
                finally:
                    for future in futures:
                        future.cancel()  # a request still queued (client gone, timeout, error) is dropped
                    if status != 200:
                        metrics.request(endpoint, record, status, time.monotonic() - started)

            return StreamingResponse(stream(), media_type="text/event-stream")
        usage = usage_of(outs)
        metrics.request(endpoint, record, 200, time.monotonic() - started, usage)
        if kind == "chat.completion":
            choices = [{"index": i, "message": {"role": "assistant", "content": o.text}, "logprobs": None,
                        "finish_reason": o.finish_reason} for i, o in enumerate(outs)]  # fmt: skip
        else:
            choices = [{"index": i, "text": o.text, "logprobs": None, "finish_reason": o.finish_reason}
                       for i, o in enumerate(outs)]  # fmt: skip
        return {"id": rid, "object": kind, "created": created, "model": body.model, "choices": choices,
                "usage": usage, "system_fingerprint": backbone.fingerprint}  # fmt: skip

    @app.post("/v1/classify")
    async def classify(request: Request, body: ClassifyRequest) -> dict[str, Any]:
        tenant = await tenant_of(request)
        started = time.monotonic()
        record = None
        try:
            tokens = check_tokens(body.texts)
            record, _ = await call(engine.resolve, tenant, body.model)
            results = await wait(await call(engine.submit_classify, tenant, body.model, body.texts))
        except ApiError as err:
            metrics.request("classify", record, err.status, time.monotonic() - started)
            raise
        metrics.request("classify", record, 200, time.monotonic() - started, {"prompt_tokens": tokens})
        return {"object": "list", "model": _ref(tenant, record), "version": record.version,
                "data": [{"index": i, "label": r.label, "scores": r.scores} for i, r in enumerate(results)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    # --- prompts ------------------------------------------------------------------------------------------------------
    upload_body = {"requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}}  # fmt: skip

    @app.post("/v1/prompts/{name}", status_code=201, openapi_extra=upload_body)
    async def upload(request: Request, name: str, public: bool = Query(False)) -> dict[str, Any]:
        tenant = await tenant_of(request)
        if not NAME.match(name):
            raise ApiError(422, f"prompt name {name!r}: letters, digits, '.', '_', '-' (at most 64), no '/' or '@'")
        blob = await request.body()
        if not blob:
            raise ApiError(422, "empty body: send the bytes of PromptArtifact.to_bytes() (application/octet-stream)")

        def check() -> None:
            artifact = PromptArtifact.from_bytes(blob, backbone, strict_model=engine.config.strict_model)
            engine.check_artifact(artifact)
            n = getattr(artifact.prompt.config, "prompt_len", 0)
            if n > limits.max_prompt_len:
                raise ArtifactError(f"prompt length {n} is above this server's limit {limits.max_prompt_len}")

        await call(check)
        record = await call(registry.put, tenant, name, blob, public=public)
        return _meta(tenant, record)

    @app.get("/v1/prompts")
    async def list_prompts(request: Request, include_public: bool = True) -> dict[str, Any]:
        tenant = await tenant_of(request)
        records = await call(registry.list, tenant, include_public=include_public)
        return {"object": "list", "data": [_meta(tenant, r) for r in records]}

    @app.get("/v1/prompts/{ref:path}/content")
    async def download(request: Request, ref: str) -> Response:
        tenant = await tenant_of(request)
        record = await call(registry.resolve, tenant, ref)
        return Response(record.blob, media_type="application/octet-stream",
                        headers={"X-Prompt-Key": _ref(tenant, record), "X-Prompt-Sha256": record.sha256})  # fmt: skip

    @app.get("/v1/prompts/{ref:path}")
    async def show(request: Request, ref: str) -> dict[str, Any]:
        tenant = await tenant_of(request)
        return _meta(tenant, await call(registry.resolve, tenant, ref))

    @app.patch("/v1/prompts/{name}")
    async def set_public(request: Request, name: str, body: PublicRequest) -> dict[str, Any]:
        tenant = await tenant_of(request)
        await call(registry.set_public, tenant, name, body.public)
        return _meta(tenant, await call(registry.get, tenant, name))

    @app.delete("/v1/prompts/{name}")
    async def delete(request: Request, name: str, version: int | None = None) -> dict[str, Any]:
        tenant = await tenant_of(request)  # the tenant's own namespace only: "other/name" is simply not found
        removed = await call(registry.delete, tenant, name, version)
        return {"deleted": removed, "name": name, "version": version}

    # --- tenants (admin) ----------------------------------------------------------------------------------------------
    @app.post("/v1/tenants", status_code=201)
    async def create_tenant(request: Request, body: TenantRequest) -> dict[str, str]:
        require_admin(request)
        if not NAME.match(body.tenant):
            raise ApiError(422, f"tenant name {body.tenant!r}: letters, digits, '.', '_', '-' (at most 64)")
        return {"tenant": body.tenant, "api_key": await call(registry.create_tenant, body.tenant)}

    @app.get("/v1/tenants")
    async def list_tenants(request: Request) -> dict[str, Any]:
        require_admin(request)
        return {"object": "list", "data": await call(registry.tenants)}

    @app.post("/v1/tenants/{tenant}/key")
    async def rotate(request: Request, tenant: str) -> dict[str, str]:
        require_admin(request)
        return {"tenant": tenant, "api_key": await call(registry.rotate_key, tenant)}

    @app.delete("/v1/tenants/{tenant}")
    async def delete_tenant(request: Request, tenant: str) -> dict[str, Any]:
        require_admin(request)
        await call(registry.delete_tenant, tenant)
        return {"deleted": tenant}

    return app


# --- helpers --------------------------------------------------------------------------------------------------------
def render_chat(tokenizer: Any, messages: list[ChatMessage]) -> str:
    """The model input for a chat: the tokenizer's chat template with the assistant turn opened, else the messages
    joined as "role: content" lines ending in "assistant:"."""
    plain = [{"role": m.role, "content": _content(m.content)} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"


def _content(content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text or "" for part in content if part.type == "text")


def _valid_text(text: str, what: str) -> None:
    """A 422 naming the field for text no tokenizer takes (JSON can carry lone surrogates), not a 500 inside it."""
    try:
        check_utf8(text, what)
    except ValueError as err:
        raise ApiError(422, str(err)) from None


def _ref(caller: str, record: Any) -> str:
    """How the caller names a record: "name" for its own prompts, "owner/name" for other tenants' public ones."""
    return record.name if record.tenant == caller else f"{record.tenant}/{record.name}"


def _meta(caller: str, record: Any) -> dict[str, Any]:
    return {"id": _ref(caller, record), "owner": record.tenant, "name": record.name, "version": record.version,
            "public": record.public, "method": record.method, "sha256": record.sha256, "created": record.created,
            "bytes": len(record.blob)}  # fmt: skip


def _error(status: int, message: str, kind: str = "invalid_request_error",
           headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)  # fmt: skip


def _mapped(err: Exception) -> Exception:
    """Registry and engine errors -> ApiError with the right status; anything unexpected stays a 500."""
    if isinstance(err, ApiError):
        return err
    status = getattr(err, "status", None)
    if isinstance(status, int):
        kinds = {404: "not_found_error", 403: "permission_error", 409: "conflict_error"}
        return ApiError(status, str(err), kinds.get(status, "invalid_request_error"))
    if isinstance(err, QueueFull):
        return ApiError(429, str(err), "rate_limit_error")
    if isinstance(err, ValueError):  # ArtifactError, a bad verbalizer, a prompt of the wrong kind, ...
        return ApiError(422, str(err))
    return err


def _sse_data(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _chunk(rid: str, created: int, model: str, obj: str, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One server-sent event in OpenAI's streaming format."""
    return _sse_data({"id": rid, "object": obj, "created": created, "model": model, "choices": choices, **extra})


class _BodyLimit:
    """ASGI middleware: a body above `max_bytes` gets 413, one that has not fully arrived within `timeout_s` 408,
    before any handler reads it (`softprompt.http_body`)."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            body = await read_body(receive, None if declared is None else declared.decode("latin-1"), self.max_bytes,
                                   self.timeout_s)  # fmt: skip
        except Disconnected:
            return None
        if isinstance(body, Refusal):
            return await _error(body.status, body.detail, headers=CLOSE)(scope, receive, send)
        return await self.app(scope, Replay(body, receive), send)
