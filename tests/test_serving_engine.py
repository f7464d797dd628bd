"""The serving engine: a batch mixing prompts of different methods, lengths, tasks and tenants gives every row what
the library gives that row alone; the prompt prefix cache changes nothing but speed and never crosses prompts."""

import pytest
import torch
from serving_helpers import TEXTS, alone_probabilities, artifacts, as_vector, backbone, make_cache, make_registry

from softprompt.artifact import ArtifactError
from softprompt.models.tiny import tiny_backbone
from softprompt.serving.engine import Engine, EngineConfig, GenerationOptions, PreparedPrompts, QueueFull


@pytest.fixture(scope="module")
def bb():
    return backbone()


@pytest.fixture(scope="module")
def arts():
    return artifacts()


def registered(arts):
    registry = make_registry()
    registry.create_tenant("a")
    registry.create_tenant("b")
    for name, artifact in arts.items():
        registry.put("a", name, artifact.to_bytes())
    registry.put("b", "shared", arts["bbtv2"].to_bytes(), public=True)
    return registry


def engine_for(bb, registry, rows: int, prefix: bool, wait_ms: float = 10_000) -> Engine:
    """max_batch_rows = the rows the test queues and a long wait: the batch starts once all of them are in."""
    config = EngineConfig(max_batch_rows=rows, max_wait_ms=wait_ms, prefix_cache=prefix)
    return Engine(bb, make_cache(registry), config)


@pytest.mark.parametrize("prefix", [True, False], ids=["prefix-cache", "no-prefix-cache"])
def test_mixed_batch_classifies_each_row_as_alone(bb, arts, prefix):
    registry = registered(arts)
    jobs = [("a", name, TEXTS[i % len(TEXTS) :][:2] or TEXTS[:1]) for i, name in enumerate(arts)]
    jobs.append(("a", "b/shared", TEXTS[:3]))  # another tenant's public prompt
    rows = sum(len(texts) for _, _, texts in jobs)
    engine = engine_for(bb, registry, rows, prefix)
    try:
        futures = [engine.submit_classify(caller, ref, texts) for caller, ref, texts in jobs]
        results = [f.result(timeout=60) for f in futures]
        assert engine.forward_passes == 1 and engine.last_batch_rows == rows  # one forward pass for all of them
    finally:
        engine.close()
    for (_, ref, texts), result in zip(jobs, results, strict=True):
        artifact = arts["bbtv2"] if ref == "b/shared" else arts[ref]
        for text, got in zip(texts, result, strict=True):
            want = alone_probabilities(bb, artifact, text)
            torch.testing.assert_close(as_vector(got, artifact.task), want, atol=1e-5, rtol=1e-4)
            assert got.label == artifact.task.labels[int(want.argmax())]
    # the prompts matter: the same text under different prompts of one task gets different probabilities
    ulpt, pt = (alone_probabilities(bb, arts[m], TEXTS[0]) for m in ("ulpt", "prompt_tuning"))
    assert not torch.allclose(ulpt, pt, atol=1e-4)
    stats = engine.prepared.stats()
    assert stats["mode"] == ("prefix" if prefix else "inputs") and stats["entries"] == len(jobs)


def test_batched_generation_equals_each_prompt_alone(bb, arts):
    registry = registered(arts)
    names = ["ulpt", "prompt_tuning", "bbtv2", "ulpt_yes_no"]
    options = GenerationOptions(max_new_tokens=4)
    engine = engine_for(bb, registry, len(names), prefix=True)
    try:
        futures = [engine.submit_complete("a", n, TEXTS[i], options) for i, n in enumerate(names)]
        outs = [f.result(timeout=60) for f in futures]
        assert engine.forward_passes == 1
    finally:
        engine.close()
    for i, (name, out) in enumerate(zip(names, outs, strict=True)):
        with torch.no_grad():
            want = bb.generate([TEXTS[i]], arts[name].prompt.materialize(), max_new_tokens=4)[0]
        assert out.text == want
        assert out.prompt_tokens == len(bb.tokenize(TEXTS[i])) and out.completion_tokens == len(bb.tokenize(want))


def test_streamed_deltas_arrive_during_the_batch_and_join_to_each_rows_completion(bb, arts):
    """Several rows with different prompts in one batch, each streaming: every row's deltas arrive while the batched
    generate call is still decoding, and join to exactly its completion (which equals that prompt alone), with a
    stop string that cuts one row (never sent in part)."""
    registry = registered(arts)
    jobs = [("ulpt", TEXTS[1]), ("prompt_tuning", TEXTS[0]), ("bbtv2", TEXTS[1]), ("ulpt", TEXTS[0])]
    options = GenerationOptions(max_new_tokens=8, stop=("film yes",))
    engine = engine_for(bb, registry, len(jobs), prefix=True)
    deltas: list[list[tuple[str, int, bool]]] = [[] for _ in jobs]  # (piece, forward passes done, future done)
    futures = []
    try:
        for i, (name, text) in enumerate(jobs):

            def on_delta(piece, i=i):
                deltas[i].append((piece, engine.forward_passes, futures[i].done()))

            futures.append(engine.submit_complete("a", name, text, options, on_delta=on_delta))
        outs = [f.result(timeout=60) for f in futures]
        assert engine.forward_passes == 1 and engine.last_batch_rows == len(jobs)
    finally:
        engine.close()
    for (name, text), out, got in zip(jobs, outs, deltas, strict=True):
        with torch.no_grad():
            want = bb.generate([text], arts[name].prompt.materialize(), options=options)[0]
        assert out.text == want and "".join(piece for piece, _, _ in got) == want
        assert not any(done for _, _, done in got)  # every delta before the row's result
    # the long rows stream in several pieces, sent from inside the batch's one generate call
    assert all(sum(1 for _, passes, _ in got if passes == 0) > 2 for got in (deltas[1], deltas[2]))
    with torch.no_grad():  # the stop string cuts row 0: "film" (its start) was held back, never sent
        whole = bb.generate([jobs[0][1]], arts["ulpt"].prompt.materialize(), max_new_tokens=8)[0]
    assert "film yes" in whole and outs[0].text == whole[: whole.find("film yes")]


def test_seeded_sampling_does_not_depend_on_the_batch(bb, arts):
    registry = registered(arts)
    sample = GenerationOptions(max_new_tokens=5, do_sample=True, temperature=1.5, seed=7)
    engine = engine_for(bb, registry, 3, prefix=True)
    try:
        batch = [engine.submit_complete("a", "ulpt", TEXTS[0], sample),
                 engine.submit_complete("a", "bbtv2", TEXTS[1], GenerationOptions(max_new_tokens=3)),
                 engine.submit_complete("a", "prompt_tuning", TEXTS[2], sample)]  # fmt: skip
        outs = [f.result(timeout=60).text for f in batch]
    finally:
        engine.close()
    with torch.no_grad():
        assert outs[0] == bb.generate([TEXTS[0]], arts["ulpt"].prompt.materialize(), options=sample)[0]
        assert outs[2] == bb.generate([TEXTS[2]], arts["prompt_tuning"].prompt.materialize(),
                                      options=sample)[0]  # fmt: skip


def test_prefix_cache_keys_never_cross_prompts(bb, arts):
    """Same name for two tenants, and a new version of one: three keys, three entries, each row its own answer."""
    registry = make_registry()
    for tenant in ("a", "b"):
        registry.create_tenant(tenant)
    a1 = registry.put("a", "p", arts["ulpt"].to_bytes())
    b1 = registry.put("b", "p", arts["prompt_tuning"].to_bytes())
    a2 = registry.put("a", "p", arts["bbtv2"].to_bytes())
    keys = {PreparedPrompts.key(r, bb) for r in (a1, b1, a2)}
    assert len(keys) == 3 and a2.version == 2
    # the same bytes under another model's fingerprint is another entry too
    other = tiny_backbone("llama", seed=1, init_scale=0.5)
    assert PreparedPrompts.key(a1, other) != PreparedPrompts.key(a1, bb)
    engine = engine_for(bb, registry, 3, prefix=True)
    try:
        futures = [engine.submit_classify("a", "p@1", TEXTS[:1]), engine.submit_classify("b", "p", TEXTS[:1]),
                   engine.submit_classify("a", "p", TEXTS[:1])]  # fmt: skip
        got = [f.result(timeout=60)[0] for f in futures]
    finally:
        engine.close()
    want = [alone_probabilities(bb, arts[m], TEXTS[0]) for m in ("ulpt", "prompt_tuning", "bbtv2")]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(as_vector(g, arts["ulpt"].task), w, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(want[0], want[1], atol=1e-4) and not torch.allclose(want[0], want[2], atol=1e-4)
    assert engine.prepared.stats()["entries"] == 3


def test_queue_full_and_bad_requests_fail_before_queueing(bb, arts):
    registry = registered(arts)
    engine = Engine(bb, make_cache(registry), EngineConfig(max_batch_rows=64, max_wait_ms=60_000, max_queue_rows=3))
    try:
        first = engine.submit_classify("a", "ulpt", TEXTS[:3])
        with pytest.raises(QueueFull):
            engine.submit_classify("a", "ulpt", TEXTS[:1])
        with pytest.raises(ValueError, match="no texts"):
            engine.submit_classify("a", "ulpt", [])
        with pytest.raises(ValueError, match="not found"):
            engine.submit_classify("a", "b/ulpt", TEXTS[:1])  # b has no such prompt, and a cannot see b's private ones
    finally:
        engine.close()  # closing runs what was queued
    assert len(first.result(timeout=60)) == 3


def test_prompts_for_another_model_are_refused(arts):
    registry = registered(arts)
    other = tiny_backbone("llama", seed=1, init_scale=0.5)  # same shapes, other weights
    engine = Engine(other, make_cache(registry))
    try:
        with pytest.raises(ArtifactError, match="fingerprint"):
            engine.submit_classify("a", "ulpt", TEXTS[:1])
    finally:
        engine.close()


@pytest.mark.parametrize("arch", ["t5", "roberta"])
def test_encoder_models_serve_with_the_prefix_cache_on(arch):
    """An encoder has no key/value prefix for a prompt: the cache (on by default) keeps its inputs instead, and each
    row is what the Scorer gives it alone."""
    from softprompt.api import make_prompt_config, new_prompt
    from softprompt.artifact import PromptArtifact
    from tests.synthetic import synthetic_task

    bb = tiny_backbone(arch, init_scale=0.5)
    registry = make_registry()
    registry.create_tenant("a")
    prompts = {}
    for seed in (0, 1):
        prompt = new_prompt(make_prompt_config("ulpt", 4, rank=2), bb, seed)
        prompts[f"p{seed}"] = PromptArtifact(prompt, bb.describe(), synthetic_task())
        registry.put("a", f"p{seed}", prompts[f"p{seed}"].to_bytes())
    engine = Engine(bb, make_cache(registry), EngineConfig(max_batch_rows=4, max_wait_ms=10_000))
    try:
        futures = [engine.submit_classify("a", name, ["good movie", "bad film"]) for name in prompts]
        results = [f.result(timeout=60) for f in futures]
        assert engine.forward_passes == 1 and engine.prepared.stats()["mode"] == "inputs"
    finally:
        engine.close()
    for artifact, result in zip(prompts.values(), results, strict=True):
        for text, got in zip(["good movie", "bad film"], result, strict=True):
            want = alone_probabilities(bb, artifact, text)
            torch.testing.assert_close(as_vector(got, artifact.task), want, atol=1e-5, rtol=1e-4)
