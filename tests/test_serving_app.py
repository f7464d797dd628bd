"""The HTTP server: OpenAI compatibility (with the official client), classification, prompt CRUD, tenant isolation
through every endpoint, limits, metrics, and two replicas on one registry."""

import hashlib
import json
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from serving_helpers import (
    TEXTS,
    alone_probabilities,
    artifacts,
    as_vector,
    backbone,
    live_server,
    make_cache,
    make_registry,
    raw_exchange,
)

from softprompt.artifact import PromptArtifact
from softprompt.models.tiny import tiny_backbone
from softprompt.serving.app import ServerLimits, create_app, render_chat
from softprompt.serving.engine import Engine, EngineConfig
from softprompt.serving.registry import open_registry

ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def bb():
    return backbone()


@pytest.fixture(scope="module")
def arts():
    return artifacts()


class Server:
    """An app over its own engine and a registry (shared when given), with tenants a and b."""

    def __init__(self, bb, registry=None, limits=None, config=None):
        self.registry = registry or make_registry()
        self.engine = Engine(bb, make_cache(self.registry), config or EngineConfig(max_wait_ms=2))
        self.app = create_app(self.engine, self.registry, admin_key=ADMIN, limits=limits)
        self.http = TestClient(self.app)
        self.keys = {}

    def tenant(self, name):
        r = self.http.post("/v1/tenants", json={"tenant": name}, headers=auth(ADMIN))
        assert r.status_code == 201, r.text
        self.keys[name] = r.json()["api_key"]
        return self.keys[name]

    def as_(self, tenant):
        return auth(self.keys[tenant])

    def upload(self, tenant, name, artifact, public=False):
        return self.http.post(f"/v1/prompts/{name}", content=artifact.to_bytes(), params={"public": public},
                              headers={**self.as_(tenant), "Content-Type": "application/octet-stream"})  # fmt: skip

    def close(self):
        self.engine.close()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server(bb, arts):
    s = Server(bb)
    for t in ("a", "b"):
        s.tenant(t)
    for name in ("ulpt", "bbtv2", "ulpt_yes_no"):
        assert s.upload("a", name, arts[name]).status_code == 201
    assert s.upload("b", "secret", arts["prompt_tuning"]).status_code == 201
    assert s.upload("b", "pub", arts["bbtv2_two_token"], public=True).status_code == 201
    yield s
    s.close()


def test_official_openai_client_completions_chat_and_streaming(server, bb, arts):
    openai = pytest.importorskip("openai")
    with live_server(server.app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=server.keys["a"], max_retries=0)
        ids = {m.id for m in client.models.list()}
        assert {"ulpt", "bbtv2", "ulpt_yes_no", "b/pub"} <= ids and "b/secret" not in ids

        out = client.completions.create(model="ulpt", prompt=TEXTS[0], max_tokens=4, temperature=0)
        with torch.no_grad():
            want = bb.generate([TEXTS[0]], arts["ulpt"].prompt.materialize(), max_new_tokens=4)[0]
        assert out.choices[0].text == want
        assert out.usage.prompt_tokens == len(bb.tokenize(TEXTS[0]))
        assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens

        messages = [{"role": "user", "content": "is the movie good ?"}]
        chat = client.chat.completions.create(model="bbtv2", messages=messages, max_tokens=5, temperature=0)
        rendered = render_chat(bb.tokenizer, [type("M", (), m)() for m in messages])
        with torch.no_grad():
            want_chat = bb.generate([rendered], arts["bbtv2"].prompt.materialize(), max_new_tokens=5)[0]
        assert chat.choices[0].message.content == want_chat and chat.choices[0].message.role == "assistant"

        stream = client.completions.create(model="ulpt", prompt=TEXTS[0], max_tokens=4, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in stream) == want
        stream = client.chat.completions.create(model="bbtv2", messages=messages, max_tokens=5, temperature=0,
                                                stream=True, stream_options={"include_usage": True})  # fmt: skip
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want_chat
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="b/secret", prompt="x", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def sse_events(http, path, headers, body):
    with http.stream("POST", path, headers=headers, json={**body, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and all(x.startswith("data: ") for x in lines), lines
    return lines


def test_stream_sends_each_choices_deltas_then_finish_reason_then_done(server):
    """Two prompts in one request (one batch): per choice, several text chunks that join to the non-streamed text,
    then one chunk with its finish_reason; the usage on request; `data: [DONE]` last."""
    body = {"model": "ulpt", "prompt": [TEXTS[2], TEXTS[1]], "max_tokens": 6, "temperature": 0}
    plain = server.http.post("/v1/completions", headers=server.as_("a"), json=body).json()
    lines = sse_events(server.http, "/v1/completions", server.as_("a"),
                       {**body, "stream_options": {"include_usage": True}})  # fmt: skip
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    for choice in plain["choices"]:
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["index"] == choice["index"]]
        assert "".join(c["text"] for c in mine) == choice["text"]
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + [choice["finish_reason"]]
        assert sum(1 for c in mine if c["text"]) > 2  # streamed in pieces as generated
    # chat: the role first, then content deltas
    chat = {"model": "bbtv2", "messages": [{"role": "user", "content": "good ?"}], "max_tokens": 5, "temperature": 0}
    want = server.http.post("/v1/chat/completions", headers=server.as_("a"), json=chat).json()["choices"][0]
    chunks = [json.loads(line[6:]) for line in sse_events(server.http, "/v1/chat/completions", server.as_("a"),
                                                          chat)[:-1]]  # fmt: skip
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == want["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == want["finish_reason"]


def test_n_choices_are_rows_seeded_sampling_gives_each_its_own_seed(server, bb, arts):
    """n > 1: one row per choice, index = prompt * n + j; with a seed, choice j is the sample of seed + j alone."""
    body = {"model": "ulpt", "prompt": [TEXTS[0], TEXTS[2]], "max_tokens": 5, "temperature": 1.5, "seed": 7, "n": 3}
    r = server.http.post("/v1/completions", headers=server.as_("a"), json=body)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == list(range(6))
    with torch.no_grad():
        for p, text in enumerate(body["prompt"]):
            want = [bb.generate([text], arts["ulpt"].prompt.materialize(), 5, do_sample=True, temperature=1.5,
                                seed=7 + j)[0] for j in range(3)]  # fmt: skip
            assert [c["text"] for c in choices[p * 3 : p * 3 + 3]] == want
            assert len(set(want)) > 1  # distinct choices
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == sum(len(bb.tokenize(t)) for t in body["prompt"])  # each prompt counted once
    # streamed, the same choices; greedy choices are all the greedy completion; too many rows is 422
    lines = sse_events(server.http, "/v1/completions", server.as_("a"), body)
    chunks = [json.loads(line[6:])["choices"][0] for line in lines[:-1]]
    assert ["".join(c["text"] for c in chunks if c["index"] == i) for i in range(6)] == [c["text"] for c in choices]
    greedy = {"model": "ulpt", "prompt": TEXTS[0], "max_tokens": 4, "temperature": 0, "n": 2}
    r = server.http.post("/v1/completions", headers=server.as_("a"), json=greedy)
    texts = [c["text"] for c in r.json()["choices"]]
    with torch.no_grad():
        assert texts == [bb.generate([TEXTS[0]], arts["ulpt"].prompt.materialize(), max_new_tokens=4)[0]] * 2
    r = server.http.post("/v1/completions", headers=server.as_("a"), json={**greedy, "n": 65})
    assert r.status_code == 422 and "n=65" in r.json()["error"]["message"]


def test_classify_matches_the_library_and_reports_usage(server, bb, arts):
    r = server.http.post("/v1/classify", headers=server.as_("a"), json={"model": "ulpt_yes_no", "texts": TEXTS[:3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ulpt_yes_no" and body["version"] == 1
    assert body["usage"]["prompt_tokens"] == sum(len(bb.tokenize(t)) for t in TEXTS[:3])
    for text, row in zip(TEXTS[:3], body["data"], strict=True):
        got = as_vector(type("C", (), row), arts["ulpt_yes_no"].task)
        torch.testing.assert_close(got, alone_probabilities(bb, arts["ulpt_yes_no"], text), atol=1e-5, rtol=1e-4)
    # another tenant's public prompt (two-token labels) is usable by name
    r = server.http.post("/v1/classify", headers=server.as_("a"), json={"model": "b/pub", "texts": TEXTS[:1]})
    assert r.status_code == 200 and r.json()["model"] == "b/pub"


PART = {"type": "text", "text": "\udfff"}  # a chat content part


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/classify", {"texts": ["good", "\ud800x"]}, "text 1"),
        ("/v1/completions", {"prompt": "\ud800"}, "prompt 0"),
        ("/v1/completions", {"prompt": ["a", "b\udc00"]}, "prompt 1"),
        ("/v1/completions", {"prompt": "a", "stop": ["\n", "\ud800"]}, "stop string 1"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udfff"}]}, "message 0 content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [PART]}]}, "message 0 content"),
        ("/v1/chat/completions", {"messages": [{"role": "\udfff", "content": "hi"}]}, "message 0 role"),
    ],
)
def test_text_that_is_not_valid_unicode_is_a_422_naming_the_field(server, path, body, field):
    """JSON carries lone surrogates ("\\ud800"), which no tokenizer takes: an OpenAI-style 422, not a 500."""
    raw = json.dumps({"model": "ulpt", "max_tokens": 2, **body})  # ASCII, the surrogates as \\u escapes
    http = TestClient(server.app, raise_server_exceptions=False)
    r = http.post(path, content=raw, headers={**server.as_("a"), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 422
    assert error["message"].startswith(f"{field} is not valid Unicode: surrogates not allowed at position ")


def test_chat_content_parts_are_typed_text_used_others_ignored(server):
    """OpenAI's list form of a message's content: text parts are joined, an image part is ignored, and a text part
    whose text is not a string is a 422 naming it (it was a 500 inside the server)."""
    http = TestClient(server.app, raise_server_exceptions=False)
    ask = {"model": "ulpt", "max_tokens": 2, "temperature": 0}

    def chat(content):
        return http.post("/v1/chat/completions", headers=server.as_("a"),
                         json={**ask, "messages": [{"role": "user", "content": content}]})  # fmt: skip

    parts = [{"type": "text", "text": "the movie "}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "was fine"}]  # fmt: skip
    assert chat(parts).json()["choices"] == chat("the movie was fine").json()["choices"]
    bad = chat([{"type": "text", "text": 5}])
    assert bad.status_code == 422 and "messages.0.content" in bad.json()["error"]["message"]


def test_tenant_a_cannot_read_use_list_overwrite_or_delete_tenant_b_prompts(server):
    a, http = server.as_("a"), server.http
    before = http.get("/v1/prompts/secret", headers=server.as_("b")).json()
    # read
    for path in ("/v1/prompts/b/secret", "/v1/prompts/b/secret@1", "/v1/prompts/b/secret/content"):
        r = http.get(path, headers=a)
        assert r.status_code == 404 and "secret" not in str(http.get("/v1/prompts", headers=a).json())
    # use
    for path, body in (
        ("/v1/classify", {"texts": ["x"]}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
    ):
        assert http.post(path, headers=a, json={"model": "b/secret", **body}).status_code == 404  # fmt: skip
    # list
    ids = {m["id"] for m in http.get("/v1/models", headers=a).json()["data"]}
    assert "b/secret" not in ids and "b/pub" in ids
    # change or delete: own namespace only, so b's prompts are simply not found
    assert http.delete("/v1/prompts/secret", headers=a).status_code == 404
    assert http.delete("/v1/prompts/pub", headers=a).status_code == 404  # public means readable, not writable
    assert http.delete("/v1/prompts/b/secret", headers=a).status_code in (404, 405)
    assert http.patch("/v1/prompts/secret", headers=a, json={"public": True}).status_code == 404
    # "overwrite": uploading the same name creates a's own prompt; b's stays as it was
    assert server.upload("a", "secret", artifacts()["ulpt"]).json()["owner"] == "a"
    assert http.get("/v1/prompts/secret", headers=server.as_("b")).json() == before
    assert server.upload("a", "b/secret", artifacts()["ulpt"]).status_code in (404, 405, 422)
    # tenant administration is the admin's only
    assert http.get("/v1/tenants", headers=a).status_code == 403
    assert http.post("/v1/tenants", headers=a, json={"tenant": "c"}).status_code == 403
    assert http.delete("/v1/tenants/b", headers=a).status_code == 403
    assert http.get("/v1/prompts").status_code == 401 and http.get("/v1/prompts", headers=auth("x")).status_code == 401
    # b still has everything
    assert {p["id"] for p in http.get("/v1/prompts", headers=server.as_("b")).json()["data"]} >= {"secret", "pub"}


def test_prompt_crud_versions_and_public_flag(server, arts):
    http, a, b = server.http, server.as_("a"), server.as_("b")
    r = server.upload("a", "ulpt", arts["prompt_tuning"])
    assert r.status_code == 201 and r.json()["version"] == 2
    assert http.get("/v1/prompts/ulpt", headers=a).json()["method"] == "prompt_tuning"
    assert http.get("/v1/prompts/ulpt@1", headers=a).json()["method"] == "ulpt"
    r = http.get("/v1/prompts/ulpt@1/content", headers=a)
    assert hashlib.sha256(r.content).hexdigest() == r.headers["X-Prompt-Sha256"] == http.get(
        "/v1/prompts/ulpt@1", headers=a).json()["sha256"]  # fmt: skip
    assert PromptArtifact.from_bytes(r.content).method == "ulpt"
    assert http.get("/v1/prompts/a/ulpt", headers=b).status_code == 404
    assert http.patch("/v1/prompts/ulpt", headers=a, json={"public": True}).json()["public"] is True
    assert http.get("/v1/prompts/a/ulpt", headers=b).status_code == 200
    assert http.delete("/v1/prompts/ulpt", headers=a, params={"version": 2}).json()["deleted"] == 1
    assert http.get("/v1/prompts/ulpt", headers=a).json()["version"] == 1
    assert http.delete("/v1/prompts/ulpt", headers=a).json()["deleted"] == 1
    assert http.get("/v1/prompts/ulpt", headers=a).status_code == 404


def test_uploads_are_checked_before_they_reach_the_model(server, arts):
    http = server.http
    headers = {**server.as_("a"), "Content-Type": "application/octet-stream"}
    blob = bytearray(arts["ulpt"].to_bytes())
    blob[-3] ^= 0x55  # a flipped tensor byte: checksum
    for bad in (b"", b"not an artifact", bytes(blob)):
        r = http.post("/v1/prompts/bad", content=bad, headers=headers)
        assert r.status_code == 422 and r.json()["error"]["message"]
    other = artifacts()["ulpt"]
    other.model = {**other.model, "fingerprint": "0" * 16}  # tuned on another model
    r = server.upload("a", "other", other)
    assert r.status_code == 422 and "fingerprint" in r.json()["error"]["message"]
    assert http.post("/v1/prompts/bad%2Fname", content=arts["ulpt"].to_bytes(), headers=headers).status_code in (405,
        404, 422)  # fmt: skip


def test_limits_answer_413_422_429_and_504(bb, arts):
    limits = ServerLimits(max_body_bytes=20_000, max_texts=3, max_input_tokens=8, max_new_tokens=5,
                          request_timeout_s=0.3)  # fmt: skip
    s = Server(bb, limits=limits, config=EngineConfig(max_batch_rows=64, max_wait_ms=60_000, max_queue_rows=4))
    try:
        s.tenant("a")
        assert s.upload("a", "ulpt", arts["ulpt"]).status_code == 201
        h = s.as_("a")
        assert s.http.post("/v1/prompts/big", content=b"x" * 20_001, headers=h).status_code == 413
        assert s.http.post("/v1/classify", headers=h, json={"model": "ulpt", "texts": ["x"] * 4}).status_code == 422
        long = " ".join(["good"] * 9)
        assert s.http.post("/v1/classify", headers=h, json={"model": "ulpt", "texts": [long]}).status_code == 422
        r = s.http.post("/v1/completions", headers=h, json={"model": "ulpt", "prompt": "x", "max_tokens": 6})
        assert r.status_code == 422 and "max_tokens" in r.json()["error"]["message"]
        # the batcher waits a minute for company: the request times out (504) and is dropped from the queue
        r = s.http.post("/v1/classify", headers=h, json={"model": "ulpt", "texts": ["good", "bad", "fun"]})
        assert r.status_code == 504
        # the timed-out request's 3 rows still sit in the queue (dropped when the batch is taken): 3 + 2 > 4 rows
        r = s.http.post("/v1/classify", headers=h, json={"model": "ulpt", "texts": ["good", "bad"]})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    finally:
        s.close()


def test_slow_and_endless_bodies_are_cut_off_before_a_handler_reads_them(bb):
    """Over a real socket: a body that stalls gets 408 within the deadline, a chunked body (no Content-Length) that
    grows past the cap 413, each closing the connection; the server then answers the next client as usual."""
    s = Server(bb, limits=ServerLimits(max_body_bytes=1000, body_timeout_s=0.5))
    try:
        with live_server(s.app) as url:
            host, port = url.removeprefix("http://").split(":")
            head = f"POST /v1/tenants HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            start = time.monotonic()
            status, body = raw_exchange(host, int(port), f"{head}Content-Length: 500\r\n\r\n".encode() + b"{")
            assert status.startswith("HTTP/1.1 408") and time.monotonic() - start < 3
            assert body["error"] == {"message": "the request body did not arrive within 0.5 s",
                                     "type": "invalid_request_error", "code": 408}  # fmt: skip
            chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"  # 1 KiB chunks, never a last one
            endless = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunk * 2
            status, body = raw_exchange(host, int(port), endless)
            assert status.startswith("HTTP/1.1 413") and "exceeds the limit of 1000 bytes" in body["error"]["message"]
            r = httpx.post(url + "/v1/tenants", json={"tenant": "c"}, headers=auth(ADMIN))
            assert r.status_code == 201, r.text
    finally:
        s.close()


def test_a_stream_that_times_out_ends_with_an_error_event_and_done(bb, arts):
    s = Server(bb, limits=ServerLimits(request_timeout_s=0.3), config=EngineConfig(max_wait_ms=60_000))
    try:
        s.tenant("a")
        assert s.upload("a", "ulpt", arts["ulpt"]).status_code == 201
        lines = sse_events(s.http, "/v1/completions", s.as_("a"), {"model": "ulpt", "prompt": "x", "max_tokens": 2})
        assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["error"]["code"] == 504
        assert s.engine.stats()["queued_rows"] == 1 and s.engine.batches == 0  # cancelled: dropped, never run
    finally:
        s.close()


def test_metrics_per_prompt_with_a_label_cap(bb, arts):
    s = Server(bb, limits=ServerLimits(metrics_max_prompts=1))
    try:
        s.tenant("a")
        for name in ("ulpt", "bbtv2"):
            s.upload("a", name, arts[name])
            r = s.http.post("/v1/classify", headers=s.as_("a"), json={"model": name, "texts": ["good"]})
            assert r.status_code == 200
        assert s.http.get("/metrics", headers=s.as_("a")).status_code == 403
        text = s.http.get("/metrics", headers=auth(ADMIN)).text
        assert 'softprompt_requests_total{endpoint="classify",prompt="a/ulpt",status="200"} 1.0' in text
        assert 'softprompt_requests_total{endpoint="classify",prompt="other",status="200"} 1.0' in text
        assert "a/bbtv2" not in text
        assert "softprompt_prefix_cache_entries 2.0" in text and "softprompt_request_seconds_bucket" in text
        assert 'softprompt_tokens_total{kind="prompt",prompt="a/ulpt"}' in text
    finally:
        s.close()


def within_a_second(request, done):
    """Poll `request()` until `done(response)`, for at most one second (a replica's promise); the last response."""
    deadline = time.monotonic() + 1.0
    while True:
        r = request()
        if done(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_two_replicas_on_one_registry_serve_a_new_prompt_version_and_delete_within_a_second(bb, arts, registry_url):
    """Two servers on real uvicorn (HTTP), each with its own model copy and its own connection to one registry
    (SQLite file, PostgreSQL database): what is written through replica A is served by replica B within 1 s."""
    import httpx

    one = Server(bb, registry=open_registry(registry_url))
    two = Server(tiny_backbone("llama", init_scale=0.5), registry=open_registry(registry_url))
    try:
        with live_server(one.app) as url_a, live_server(two.app) as url_b:
            r = httpx.post(f"{url_a}/v1/tenants", json={"tenant": "a"}, headers=auth(ADMIN))
            assert r.status_code == 201, r.text
            key = auth(r.json()["api_key"])  # made on A, valid on B
            assert httpx.get(f"{url_b}/v1/prompts", headers=key).json()["data"] == []

            def upload(artifact):
                r = httpx.post(f"{url_a}/v1/prompts/p", content=artifact.to_bytes(),
                               headers={**key, "Content-Type": "application/octet-stream"})  # fmt: skip
                assert r.status_code == 201, r.text
                return r.json()["version"]

            def classify_on_b():
                return httpx.post(f"{url_b}/v1/classify", headers=key, json={"model": "p", "texts": ["good"]})

            def served_by_b(version, artifact):
                r = within_a_second(classify_on_b, lambda r: r.status_code == 200 and r.json()["version"] == version)
                assert r.status_code == 200 and r.json()["version"] == version, r.text
                got = as_vector(type("C", (), r.json()["data"][0]), artifact.task)
                torch.testing.assert_close(got, alone_probabilities(bb, artifact, "good"), atol=1e-5, rtol=1e-4)

            assert classify_on_b().status_code == 404  # B looked p up (and found nothing) before it existed
            assert upload(arts["ulpt"]) == 1
            served_by_b(1, arts["ulpt"])  # a new prompt
            assert upload(arts["bbtv2"]) == 2
            served_by_b(2, arts["bbtv2"])  # a new version
            assert httpx.delete(f"{url_a}/v1/prompts/p", headers=key, params={"version": 2}).json()["deleted"] == 1
            served_by_b(1, arts["ulpt"])  # the newest version deleted: back to version 1
            assert httpx.delete(f"{url_a}/v1/prompts/p", headers=key).json()["deleted"] == 1
            assert within_a_second(classify_on_b, lambda r: r.status_code == 404).status_code == 404  # deleted
    finally:
        for server in (one, two):
            server.close()
            server.registry.close()


def test_openapi_schema_lists_the_endpoints(server):
    paths = server.http.get("/openapi.json").json()["paths"]
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/models", "/v1/prompts",
                 "/v1/prompts/{name}", "/v1/tenants", "/healthz", "/metrics"):  # fmt: skip
        assert path in paths
    assert "application/octet-stream" in str(paths["/v1/prompts/{name}"]["post"]["requestBody"])


def test_python_client_round_trip(server, bb, arts):
    from softprompt import Client
    from softprompt.serving.client import ServerError

    with live_server(server.app) as url, Client(url, api_key=server.keys["b"]) as client:
        assert client.register("mine", arts["ulpt"])["version"] == 1
        assert {"mine", "secret", "pub"} <= {p["id"] for p in client.prompts()}
        (row,) = client.classify("mine", ["good"])
        torch.testing.assert_close(as_vector(type("C", (), row), arts["ulpt"].task),
                                   alone_probabilities(bb, arts["ulpt"], "good"), atol=1e-5, rtol=1e-4)  # fmt: skip
        with torch.no_grad():
            want = bb.generate(["good"], arts["ulpt"].prompt.materialize(), max_new_tokens=3)[0]
        assert client.complete("mine", "good", max_tokens=3, temperature=0) == want
        assert client.download("mine").prompt.config == arts["ulpt"].prompt.config
        assert client.delete("mine") == 1
        with pytest.raises(ServerError, match="404"):
            client.classify("mine", ["good"])
        with pytest.raises(ServerError, match="403"):
            client.create_tenant("c")


def test_serve_command_rejects_bad_limits_with_one_line(capsys):
    from softprompt.cli import main

    assert main(["serve", "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--max-batch" in err
    assert main(["serve", "--body-timeout", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--body-timeout" in err
