"""The inference endpoint and its client: same numbers as local scoring, clear 4xx errors, and retries that carry a
search across an endpoint that starts late or restarts. Tiny models, loopback sockets only."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
import uvicorn
from fastapi.testclient import TestClient
from serving_helpers import raw_exchange

from softprompt.models.backbone import Backbone, EncodedBatch
from softprompt.models.inputs import PromptInputs
from softprompt.models.statistics import clipped_std
from softprompt.models.tiny import tiny_backbone
from softprompt.remote.client import EndpointError, EndpointUnavailable, RemoteEvaluator
from softprompt.remote.server import Limits, create_app
from softprompt.remote.wire import BATCH_FIELDS, EXTRA_PREFIX, MEDIA_TYPE, encode
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task

EXAMPLES = [
    Example("the movie was very good and fun", label=1),
    Example("bad", label=0),
    Example("a film : it is not boring ? yes", label=1),
    Example("awful", label=0),
    Example("it is fine", label=1),
]
SINGLE = Task("single", "{text} . sentiment :", labels=("negative", "positive"), verbalizer=("bad", "good"))
MULTI = Task("multi", "{text} . it was", labels=("neg", "pos", "mid"), verbalizer=("not good", "very good", "fine"))
P, N = 3, 4
FAST = {"retries": 40, "backoff": 0.05, "max_backoff": 0.2, "max_wait": 10.0, "timeout": 10.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matmuls on a shared, busy machine: thread hand-offs cost far more than the arithmetic.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llama() -> Backbone:
    return tiny_backbone("llama")


def candidates(bb: Backbone, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randn(P, N, bb.hidden_size, generator=g) * 0.5
    deep = torch.randn(bb.num_layers, P, N, bb.hidden_size, generator=g) * 0.5
    return prompts, deep


def local_scores(bb: Backbone, task: Task, prompts: torch.Tensor, deep: torch.Tensor | None) -> torch.Tensor:
    """The reference: the local Scorer, one candidate at a time."""
    scorer = Scorer(bb, task)
    batch = scorer.encode(EXAMPLES)
    with torch.no_grad():
        one = [deep[:, i : i + 1] if deep is not None else None for i in range(P)]
        rows = [scorer.label_scores(batch, PromptInputs(embeds=prompts[i : i + 1], deep=one[i])) for i in range(P)]
    return torch.stack(rows)


LOCAL = "http://127.0.0.1"  # the endpoint answers loopback Host names only, unless told otherwise


def remote(bb: Backbone, task: Task, **limits: int) -> RemoteEvaluator:
    client = TestClient(create_app(bb, Limits(**limits)), base_url=LOCAL)
    return RemoteEvaluator(LOCAL, task, http_client=client, retries=1)


# --- same numbers as local scoring ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "t5", "roberta"])
@pytest.mark.parametrize("task", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_remote_label_scores_match_local(arch: str, task: Task, llama: Backbone) -> None:
    bb = llama if arch == "llama" else tiny_backbone(arch)
    prompts, deep = candidates(bb)
    evaluator = remote(bb, task, chunk_rows=4)  # chunks cut across candidates
    assert (evaluator.hidden_size, evaluator.num_layers) == (bb.hidden_size, bb.num_layers)
    assert evaluator.describe()["fingerprint"] == bb.fingerprint
    assert evaluator.describe()["dtype"] == "float32"  # the endpoint's number format: part of a search's identity
    for d in (None, deep):
        got = evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=d))
        assert got.shape == (P, len(EXAMPLES), len(task.labels))
        torch.testing.assert_close(got, local_scores(bb, task, prompts, d), atol=1e-5, rtol=1e-5)


def test_endpoint_scores_rows_of_similar_length_together_without_the_others_padding(llama: Backbone) -> None:
    """Rows of 1 to 24 words in one request: each pass holds rows of similar length, trimmed to its own longest,
    against each candidate's key/value prefix, and every row's scores are its own (scored alone)."""
    from softprompt.remote import inference

    lengths = torch.randperm(24, generator=torch.Generator().manual_seed(0)) + 1
    batch = llama.encode([" ".join(["plot"] * int(w)) for w in lengths])
    prompts = torch.randn(4, N, llama.hidden_size, generator=torch.Generator().manual_seed(1))
    token_ids = torch.tensor([5, 6])
    positions = []
    hook = llama.layers[0].register_forward_pre_hook(
        lambda _, args, kwargs: positions.append((args[0] if args else kwargs["hidden_states"]).shape[:2].numel()),
        with_kwargs=True,
    )
    try:
        got = inference.candidate_scores(llama, batch, token_ids, prompts, chunk_rows=24)  # 6 rows x 4 candidates
    finally:
        hook.remove()
    for k in range(len(batch)):
        alone = inference.candidate_scores(llama, batch.select(torch.tensor([k])).trimmed(), token_ids, prompts)
        torch.testing.assert_close(got[:, k], alone[:, 0], atol=1e-5, rtol=0)
    own = sorted(int(m.sum()) for m in batch.attention_mask)
    prefixes = 4 * N  # each candidate's N positions run once, as its key/value prefix
    assert sum(positions) == prefixes + sum(4 * 6 * max(own[i : i + 6]) for i in range(0, 24, 6))
    assert sum(positions) < 0.75 * (prefixes + 4 * 24 * max(own))  # every row padded to the longest row


@pytest.mark.parametrize("task", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_endpoint_runs_the_shared_lower_layers_once_with_each_candidates_scores(llama: Backbone, task: Task) -> None:
    """BBTv2's promise (the candidates differ only from layer l up) reaches the endpoint: layer 0 runs once per row
    and once per candidate's N prompt positions (its key/value prefix), the scores are each candidate's alone, and a
    request whose candidates differ below l is refused."""
    prompts, deep = candidates(llama)
    prompts = prompts[:1].expand(P, -1, -1).contiguous()
    layer = llama.num_layers - 1
    deep[:layer] = deep[:layer, :1]
    positions = []  # the MLP of layer 0 only runs when layer 0 really runs
    hook = llama.layers[0].mlp.register_forward_pre_hook(lambda _, args: positions.append(args[0].shape[:2].numel()))
    try:  # chunk_rows = P: one row a part, trimmed to its own length
        got = remote(llama, task, chunk_rows=P).label_scores(
            EXAMPLES, PromptInputs(embeds=prompts, deep=deep), shared_layers=layer
        )
    finally:
        hook.remove()
    torch.testing.assert_close(got, local_scores(llama, task, prompts, deep), atol=1e-5, rtol=1e-5)
    assert sum(positions) == int(Scorer(llama, task).encode(EXAMPLES).encoded.attention_mask.sum()) + P * N

    client = TestClient(create_app(llama), base_url=LOCAL)
    tensors = {**batch_to_tensors(llama.encode(["the movie was good", "bad"])), "token_ids": torch.tensor([7, 9])}
    tensors |= {"prompts": prompts[:2].contiguous(), "deep": deep[:, :2].contiguous()}
    for shared, status in ((layer, 200), (layer + 1, 422), (True, 422)):
        body = encode(tensors, {"shared_layers": shared})
        assert client.post("/v1/scores", content=body, headers={"content-type": MEDIA_TYPE}).status_code == status
    tensors["deep"] = torch.randn_like(tensors["deep"])  # the candidates now differ below `layer`
    body = encode(tensors, {"shared_layers": layer})
    response = client.post("/v1/scores", content=body, headers={"content-type": MEDIA_TYPE})
    assert response.status_code == 422 and "differ below layer" in response.json()["detail"]


def test_parts_the_endpoint_cannot_carry_are_refused_not_dropped(llama: Backbone) -> None:
    """A gate, a text update or a key/value prefix never reaches the endpoint: it would score another prompt."""
    prompts, _ = candidates(llama)
    evaluator = remote(llama, SINGLE)
    gated = PromptInputs(embeds=prompts[:1], gate=torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="no key/value prefix, text update or gate"):
        evaluator.label_scores(EXAMPLES, gated)
    with pytest.raises(ValueError, match="one plain input-layer prompt"):
        evaluator.hidden_state_stds(EXAMPLES, gated)


def test_population_larger_than_one_request_is_split(llama: Backbone) -> None:
    prompts, deep = candidates(llama)
    one_candidate = 4 * prompts[0].numel() * (1 + deep.shape[0])
    # room for about two candidates per request: the population needs several requests, with identical scores
    evaluator = remote(llama, SINGLE, max_request_bytes=2 * one_candidate + 4 * len(EXAMPLES) * 1024 + 2**16 + 100)
    requests = []
    original = evaluator._binary
    evaluator._binary = lambda *a, **k: requests.append(1) or original(*a, **k)
    got = evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=deep))
    assert len(requests) == -(-P // 2) > 1
    torch.testing.assert_close(got, local_scores(llama, SINGLE, prompts, deep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("limit", ["max_work_tokens", "max_output_values"])
def test_client_splits_a_population_by_the_work_limits(llama: Backbone, limit: str) -> None:
    """One candidate per request when the endpoint's work or output limit allows no more; same scores."""
    prompts, deep = candidates(llama)
    sent = remote(llama, MULTI)._encode(EXAMPLES).tensors  # what the client sends per candidate: rows x width
    (rows, width), scored = sent["input_ids"].shape, sent["score_index"].shape[1]
    columns = len({t for word in MULTI.verbalizer for t in llama.tokenize(word)})
    one = {"max_work_tokens": rows * (N + width), "max_output_values": rows * scored * columns}[limit]
    evaluator = remote(llama, MULTI, **{limit: one})
    requests = []
    original = evaluator._binary
    evaluator._binary = lambda *a, **k: requests.append(1) or original(*a, **k)
    got = evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=deep))
    assert len(requests) == P
    torch.testing.assert_close(got, local_scores(llama, MULTI, prompts, deep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_remote_matches_local_evaluator(llama: Backbone, task: Task) -> None:
    from softprompt.evaluator import LocalEvaluator

    local = LocalEvaluator(Scorer(llama, task), chunk_size=4)
    evaluator = remote(llama, task)
    prompts, deep = candidates(llama)
    for d in (None, deep):
        want = local.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=d))
        torch.testing.assert_close(
            evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=d)), want, atol=1e-5, rtol=1e-5
        )
    assert evaluator.embedding_std() == pytest.approx(local.embedding_std(), rel=1e-6)
    stds = local.hidden_state_stds(EXAMPLES, PromptInputs(embeds=prompts[:1]))
    assert evaluator.hidden_state_stds(EXAMPLES, PromptInputs(embeds=prompts[:1])) == pytest.approx(stds, rel=1e-6)


def test_statistics(llama: Backbone) -> None:
    evaluator = remote(llama, SINGLE, chunk_rows=2)
    weight = llama.word_embeddings.weight
    assert evaluator.embedding_std() == pytest.approx(float(weight.double().std(correction=0)), rel=1e-9)
    prompt = candidates(llama)[0][0]
    # Reference from the model's own hidden-state outputs: hidden_states[l] is what enters layer l.
    batch = llama.encode([SINGLE.render(ex) for ex in EXAMPLES])
    embeds = torch.cat([prompt.expand(len(EXAMPLES), -1, -1), llama.embed(batch.input_ids)], dim=1)
    mask = torch.cat([torch.ones(len(EXAMPLES), N, dtype=torch.long), batch.attention_mask], dim=1)
    with torch.no_grad():
        out = llama.model.base_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    want = [clipped_std(h[mask.bool()]) for h in out.hidden_states[: llama.num_layers]]
    assert evaluator.hidden_state_stds(
        EXAMPLES, PromptInputs(embeds=prompt.reshape(1, -1, prompt.shape[-1]))
    ) == pytest.approx(want, rel=1e-5)


def test_clipped_std_tames_outliers() -> None:
    x = torch.cat([torch.randn(10_000, generator=torch.Generator().manual_seed(0)), torch.tensor([1e4])])
    assert x.std() > 50 and 0.9 < clipped_std(x) < 1.1


# --- bad requests get a 4xx and a message ----------------------------------------------------------------------
def batch_to_tensors(batch: EncodedBatch) -> dict[str, torch.Tensor]:
    """An encoded batch as the tensors of a /v1/scores body (what the client sends after /v1/tokenize)."""
    return {
        **{name: getattr(batch, name) for name in BATCH_FIELDS},
        **{EXTRA_PREFIX + k: v for k, v in batch.extras.items()},
    }


def scores_body(bb: Backbone, **override: torch.Tensor | None) -> bytes:
    tensors = batch_to_tensors(bb.encode(["the movie was good", "bad"]))
    tensors |= {"token_ids": torch.tensor([7, 9]), "prompts": torch.zeros(2, N, bb.hidden_size)}
    tensors |= override
    return encode({k: v for k, v in tensors.items() if v is not None})


@pytest.mark.parametrize(
    "override, status, message",
    [
        ({"prompts": torch.zeros(2, N, 7)}, 422, "hidden size 7"),
        ({"prompts": torch.zeros(2, N, 32, dtype=torch.float64)}, 422, "float32"),
        ({"prompts": torch.full((2, N, 32), float("nan"))}, 422, "NaN"),
        ({"deep": torch.zeros(5, 2, N, 32)}, 422, "(layers, P, n, D)"),
        ({"token_ids": torch.tensor([10_000])}, 422, "token_ids values"),
        ({"token_ids": torch.arange(300)}, 422, "1 to 256"),
        ({"input_ids": None}, 422, "missing tensor 'input_ids'"),
        ({"score_index": torch.tensor([[99], [0]])}, 422, "score_index values"),
        ({"weights": torch.zeros(1)}, 422, "unexpected tensors ['weights']"),
    ],
)
def test_bad_scores_requests(llama: Backbone, override: dict, status: int, message: str) -> None:
    client = TestClient(create_app(llama), base_url=LOCAL)
    response = client.post("/v1/scores", content=scores_body(llama, **override), headers={"content-type": MEDIA_TYPE})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_bad_bodies_and_limits(llama: Backbone) -> None:
    client = TestClient(create_app(llama, Limits(max_request_bytes=2000, max_rows=3)), base_url=LOCAL)
    binary = {"content-type": MEDIA_TYPE}
    garbage = client.post("/v1/scores", content=b"\x80\x04pickle?" * 4, headers=binary)
    assert garbage.status_code == 400 and "safetensors" in garbage.json()["detail"]
    big = client.post("/v1/scores", content=b"x" * 5000, headers=binary)
    assert big.status_code == 413 and "exceeds" in big.json()["detail"]
    rows = client.post("/v1/scores", content=scores_body(llama, prompts=torch.zeros(2, 1, 32)), headers=binary)
    assert rows.status_code == 422 and "rows" in rows.json()["detail"]
    assert client.post("/v1/tokenize", json={"texts": "not a list"}).status_code == 422
    mismatch = client.post("/v1/tokenize", json={"texts": ["a"], "continuations": [[1], [2]]})
    assert mismatch.status_code == 422 and "2 continuations for 1 texts" in mismatch.json()["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["hidden_size"] == 32 and info["num_layers"] == 2 and info["max_length"] == llama.max_length


def test_client_raises_4xx_without_retrying(llama: Backbone) -> None:
    evaluator = remote(llama, SINGLE)
    evaluator.retries = 50  # a 4xx must not be retried at all
    with pytest.raises(EndpointError, match="hidden size 5"):
        evaluator.label_scores(EXAMPLES, PromptInputs(embeds=torch.zeros(1, N, 5)))


# --- a real socket: late start, restart, nothing listening -----------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn on 127.0.0.1:port in a background thread."""

    def __init__(self, bb: Backbone, port: int, **app_options: object) -> None:
        app = create_app(bb, **app_options)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)

    def start(self, delay: float = 0.0) -> Server:
        self.thread = threading.Thread(target=lambda: (time.sleep(delay), self.server.run()), daemon=True)
        self.thread.start()
        return self

    def wait_started(self) -> None:
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def test_late_start_and_restart(llama: Backbone, port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    prompts, deep = candidates(llama)
    want = local_scores(llama, SINGLE, prompts, deep)
    first = Server(llama, port).start(delay=0.5)  # the search starts before the endpoint is up
    try:
        with RemoteEvaluator(url, SINGLE, **FAST) as evaluator:
            torch.testing.assert_close(
                evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=deep)), want, atol=1e-5, rtol=1e-5
            )
            first.stop()
            second = Server(llama, port).start(delay=0.5)  # restarted while the search goes on
            try:
                got = evaluator.label_scores(
                    EXAMPLES, PromptInputs(embeds=prompts, deep=deep)
                )  # stale keep-alive connection, then refusals
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            finally:
                second.wait_started()
                second.stop()
    finally:
        first.stop()


def test_unreachable_endpoint_fails_fast_with_a_hint(port: int) -> None:
    evaluator = RemoteEvaluator(f"http://127.0.0.1:{port}", SINGLE, retries=3, backoff=0.05, max_wait=1.0)
    start = time.monotonic()
    with pytest.raises(EndpointUnavailable, match=f"127.0.0.1:{port} after 3 tries.*softprompt serve-lm"):
        evaluator.label_scores(EXAMPLES, PromptInputs(embeds=torch.zeros(1, N, 32)))
    assert time.monotonic() - start < 2.0


def test_retry_wait_is_bounded(port: int) -> None:
    evaluator = RemoteEvaluator(f"http://127.0.0.1:{port}", SINGLE, retries=1000, backoff=0.1, max_wait=0.5)
    start = time.monotonic()
    with pytest.raises(EndpointUnavailable):
        _ = evaluator.hidden_size
    assert time.monotonic() - start < 2.0


# --- hardening (issue 11 item 9): each case was accepted, hung or failed with a 500 before ------------------------
def post_scores(client: TestClient, body: bytes, **headers: str) -> object:
    return client.post("/v1/scores", content=body, headers={"content-type": MEDIA_TYPE, **headers})


def test_scored_positions_per_row_are_bounded(llama: Backbone) -> None:
    client = TestClient(create_app(llama), base_url=LOCAL)
    wide = torch.zeros(2, 40, dtype=torch.long)  # 40 scored positions per row: one row of 40 x 2 logits... or 139 MB
    response = post_scores(client, scores_body(llama, score_index=wide, score_mask=torch.ones_like(wide)))
    assert response.status_code == 422 and "scored positions per row (S) = 40" in response.json()["detail"]
    long = client.post("/v1/tokenize", json={"texts": ["good"], "continuations": [[7] * 40]})
    assert long.status_code == 422 and "continuation tokens" in long.json()["detail"]
    assert client.post("/v1/tokenize", json={"texts": ["good"], "continuations": [[7] * 3]}).status_code == 200


def test_total_work_of_a_request_is_bounded(llama: Backbone) -> None:
    body = scores_body(llama)  # 2 prompts x 2 examples, n = 4, 2 token ids
    width = llama.encode(["the movie was good", "bad"]).input_ids.shape[1]
    work = 4 * (N + width)
    limited = TestClient(create_app(llama, Limits(max_work_tokens=work - 1)), base_url=LOCAL)
    response = post_scores(limited, body)
    assert response.status_code == 422 and f"token positions (rows x (n+text)) = {work:,}" in response.json()["detail"]
    assert (
        post_scores(TestClient(create_app(llama, Limits(max_work_tokens=work)), base_url=LOCAL), body).status_code
        == 200
    )
    output = post_scores(TestClient(create_app(llama, Limits(max_output_values=7)), base_url=LOCAL), body)
    assert output.status_code == 422 and "scores (rows x S x C) = 8" in output.json()["detail"]
    stats = batch_to_tensors(llama.encode(["the movie was good", "bad"])) | {"prompt": torch.zeros(N, 32)}
    values = 2 * (N + width) * 32 * 2
    small = TestClient(create_app(llama, Limits(max_stats_values=values - 1)), base_url=LOCAL)
    response = small.post("/v1/hidden_state_stds", content=encode(stats), headers={"content-type": MEDIA_TYPE})
    assert response.status_code == 422 and f"hidden-state values (positions x D x layers) = {values:,}" in response.text


def test_chunked_bodies_are_capped_on_every_route(llama: Backbone) -> None:
    client = TestClient(create_app(llama, Limits(max_request_bytes=2000)), base_url=LOCAL)

    def chunks(data: bytes) -> Iterator[bytes]:  # no Content-Length: the body arrives chunked
        yield from (data[i : i + 500] for i in range(0, len(data), 500))

    big_json = json.dumps({"texts": ["good " * 1000]}).encode()
    response = client.post("/v1/tokenize", content=chunks(big_json), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "exceeds the limit of 2000 bytes" in response.json()["detail"]
    response = client.post("/v1/scores", content=chunks(b"x" * 5000), headers={"content-type": MEDIA_TYPE})
    assert response.status_code == 413
    small = json.dumps({"texts": ["good"]}).encode()
    ok = client.post("/v1/tokenize", content=chunks(small), headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["batch"]["input_ids"]


def test_slow_clients_are_cut_off(llama: Backbone, port: int) -> None:
    server = Server(llama, port, limits=Limits(body_timeout_s=0.5)).start()
    server.wait_started()
    try:
        head = (f"POST /v1/scores HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {MEDIA_TYPE}\r\n"
                "Content-Length: 1000\r\n\r\n")  # fmt: skip
        start = time.monotonic()
        status, body = raw_exchange("127.0.0.1", port, head.encode() + b"x" * 10)  # the other 990 bytes never come
        assert status.startswith("HTTP/1.1 408") and body == {"detail": "the request body did not arrive within 0.5 s"}
        assert time.monotonic() - start < 3
    finally:
        server.stop()


@pytest.mark.parametrize(
    "host, allowed, status",
    [
        ("evil.example", None, 400),  # a page on evil.example that resolves to 127.0.0.1 (DNS rebinding)
        ("evil.example:8765", None, 400),
        ("127.0.0.1:8765", None, 200),
        ("localhost", None, 200),
        ("[::1]:8765", None, 200),
        ("gpu-box:8765", ["gpu-box"], 200),
        ("anything", ["*"], 200),
    ],
)
def test_host_header_is_checked(llama: Backbone, host: str, allowed: list[str] | None, status: int) -> None:
    app = create_app(llama) if allowed is None else create_app(llama, allowed_hosts=allowed)
    response = TestClient(app, base_url=LOCAL).get("/v1/info", headers={"host": host})
    assert response.status_code == status, response.text
    if status == 400:
        assert "Host header" in response.json()["detail"] and "--allowed-host evil.example" in response.json()["detail"]


@pytest.mark.parametrize(
    "path, content_type, body",
    [
        ("/v1/scores", "text/plain", b"x"),  # what a form or fetch() on another origin can send without a preflight
        ("/v1/scores", "application/x-www-form-urlencoded", b"a=b"),
        ("/v1/hidden_state_stds", "multipart/form-data; boundary=x", b"--x--"),
        ("/v1/tokenize", "text/plain", b'{"texts": ["good"]}'),
        ("/v1/embedding_std", "text/plain", b""),
    ],
)
def test_content_type_is_checked(llama: Backbone, path: str, content_type: str, body: bytes) -> None:
    client = TestClient(create_app(llama), base_url=LOCAL)
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code == 415 and "content type" in response.json()["detail"]


def test_optional_api_key(llama: Backbone) -> None:
    client = TestClient(create_app(llama, api_key="s3cret"), base_url=LOCAL)
    assert client.get("/healthz").status_code == 200  # liveness stays open
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
        response = client.get("/v1/info", headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["detail"], headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/info", headers={"authorization": "Bearer s3cret"}).status_code == 200
    prompts, deep = candidates(llama)
    with_key = RemoteEvaluator(LOCAL, SINGLE, http_client=client, retries=1, api_key="s3cret")
    got = with_key.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=deep))
    torch.testing.assert_close(got, local_scores(llama, SINGLE, prompts, deep), atol=1e-5, rtol=1e-5)
    with pytest.raises(EndpointError, match="401.*API key"):
        _ = RemoteEvaluator(LOCAL, SINGLE, http_client=client, retries=1).hidden_size
    with pytest.raises(ValueError, match="empty"):
        create_app(llama, api_key="")


def test_bad_text_gets_4xx_not_500(llama: Backbone) -> None:
    client = TestClient(create_app(llama), base_url=LOCAL, raise_server_exceptions=False)
    for body in ('{"texts": ["\\ud800"]}', '{"words": ["good", "\\udfff"]}'):  # lone surrogates: valid JSON
        response = client.post("/v1/tokenize", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "not valid Unicode" in response.json()["detail"], response.text
    response = client.post("/v1/tokenize", content='{"words": ["good", "\\udfff"]}',
                           headers={"content-type": "application/json"})  # fmt: skip
    assert response.json()["detail"] == "word 1 is not valid Unicode: surrogates not allowed at position 0"
    # a body the request model refuses is named, never echoed (FastAPI's default echo failed on the surrogate: 500)
    for body, detail in (('{"texts": ["a"], "continuations": ["\\ud800"]}', "continuations.0: Input should be a "
                          "valid list"), ('{"texts": "\\ud800"}', "texts: Input should be a valid list")):  # fmt: skip
        response = client.post("/v1/tokenize", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json() == {"detail": detail}, response.text
    too_long = client.post("/v1/tokenize", json={"texts": ["a" * 100_001]})
    assert too_long.status_code == 422 and "characters in one text" in too_long.json()["detail"]


def test_a_long_request_does_not_hold_up_others(llama: Backbone, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global lock: while one scoring request is busy in the model, other requests are answered."""
    from softprompt.remote import inference

    busy, release = threading.Event(), threading.Event()
    original = inference.candidate_scores

    def slow(*args: object, **kwargs: object) -> torch.Tensor:
        busy.set()
        release.wait(timeout=20)
        return original(*args, **kwargs)

    monkeypatch.setattr(inference, "candidate_scores", slow)
    server = Server(llama, port).start()
    server.wait_started()
    url, results = f"http://127.0.0.1:{port}", {}
    try:
        body, binary = scores_body(llama), {"content-type": MEDIA_TYPE}
        post = lambda: results.update(long=httpx.post(url + "/v1/scores", content=body, headers=binary, timeout=30))  # noqa: E731
        long = threading.Thread(target=post)
        long.start()
        assert busy.wait(timeout=10)
        start = time.monotonic()
        std = httpx.post(url + "/v1/embedding_std", timeout=5)  # model work too; waited for the lock before
        tokens = httpx.post(url + "/v1/tokenize", json={"texts": ["good"]}, timeout=5)
        assert std.status_code == tokens.status_code == 200 and time.monotonic() - start < 5
        assert long.is_alive()  # still busy
        release.set()
        long.join(timeout=20)
        assert results["long"].status_code == 200
    finally:
        release.set()
        server.stop()


def test_concurrent_requests_each_get_their_own_prompts(llama: Backbone, port: int) -> None:
    """Requests with different deep prompts run side by side in worker threads; each scores as the local Scorer."""
    server = Server(llama, port).start()
    server.wait_started()
    outcomes: dict[int, torch.Tensor] = {}

    def search(seed: int) -> None:
        prompts, deep = candidates(llama, seed)
        with RemoteEvaluator(f"http://127.0.0.1:{port}", MULTI, **FAST) as evaluator:
            for _ in range(3):
                outcomes[seed] = evaluator.label_scores(EXAMPLES, PromptInputs(embeds=prompts, deep=deep))

    try:
        threads = [threading.Thread(target=search, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.stop()
    assert sorted(outcomes) == [0, 1, 2, 3]
    for seed, got in outcomes.items():
        torch.testing.assert_close(got, local_scores(llama, MULTI, *candidates(llama, seed)), atol=1e-5, rtol=1e-5)


def test_serve_lm_refuses_bad_port_and_missing_key_before_loading(tmp_path, capsys, monkeypatch) -> None:
    from softprompt.cli import main

    model = tmp_path / "tiny"  # a model that loads: each error must come before it would be served
    tiny_backbone().model.save_pretrained(model)
    tiny_backbone().tokenizer.save_pretrained(model)
    with pytest.raises(SystemExit) as exited:  # a usage error, from the argument parser
        main(["serve-lm", "--model", str(model), "--port", "99999"])
    assert exited.value.code == 2
    assert "a port is 1-65535, got 99999" in capsys.readouterr().err
    monkeypatch.delenv("SOFTPROMPT_TEST_KEY", raising=False)
    assert main(["serve-lm", "--model", str(model), "--api-key-env", "SOFTPROMPT_TEST_KEY"]) == 2
    assert "environment variable SOFTPROMPT_TEST_KEY is not set" in capsys.readouterr().err
    search = ["blackbox", "--endpoint", "http://127.0.0.1:9", "--api-key-env", "SOFTPROMPT_TEST_KEY", "--task", "sst2",
              "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(search) == 2  # the client side: the same message, before any data is read
    assert "environment variable SOFTPROMPT_TEST_KEY is not set" in capsys.readouterr().err


def test_cli_registers_serve_lm() -> None:
    from softprompt.cli import build_parser

    args = build_parser().parse_args(["serve-lm", "--model", "x", "--port", "9999", "--max-length", "128"])
    assert (args.host, args.port, args.max_length, args.model) == ("127.0.0.1", 9999, 128, "x")


def test_blackbox_command_through_an_endpoint_ends_as_the_local_run(port: int, tmp_path: Path, capsys) -> None:
    """`blackbox --endpoint` against `serve-lm` of the same model gives the local run's prompt and scores (P₀ drawn
    from a normal, its default there, as an endpoint has no embeddings), and names the endpoint's number format."""
    from softprompt.cli import main

    data = Path(__file__).resolve().parents[1] / "data"  # the repository's SST-2 slice
    server = Server(tiny_backbone("llama", max_length=256), port).start()
    server.wait_started()
    common = ["blackbox", "--task", "sst2", "--data-dir", str(data), "--shots", "4", "--budget", "20", "--popsize",
              "5", "--dim", "8", "--prompt-len", "4", "--max-test-examples", "8", "--quiet"]  # fmt: skip
    try:
        assert main([*common, "--endpoint", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "remote")]) == 0
        remote = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        server.stop()
    # the served model is float32; the local one too (`dtype auto` is bfloat16 on a CPU with AVX512-BF16)
    local_run = [*common, "--model", "tiny-llama", "--dtype", "float32", "--init", "normal"]
    assert main([*local_run, "--out", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert remote["dtype"] == local["dtype"] == "float32"
    assert (remote["dev"], remote["test"], remote["best_calls"]) == (local["dev"], local["test"], local["best_calls"])
