"""The prompt registry on SQLite and on a real PostgreSQL server: storage, versions, integrity, tenant isolation,
API keys, replicas and the prompt cache. Every test runs on both databases (PostgreSQL skips where it cannot start)."""

from __future__ import annotations

import hashlib
import threading
import time
import zlib

import pytest
import torch

from softprompt.artifact import PromptArtifact
from softprompt.prompts import ULPTConfig, build_prompt
from softprompt.serving.registry import PromptCache, Registry, RegistryError, open_registry, redact

MODEL = {"name": "tiny-test", "kind": "causal", "hidden_size": 32, "fingerprint": "0123456789abcdef"}


def make_artifact(seed: int, hidden: int = 32, n: int = 4, model: dict | None = None) -> PromptArtifact:
    prompt = build_prompt(ULPTConfig(prompt_len=n, rank=2, projection_seed=seed), hidden)
    prompt.initialize(None, seed)
    with torch.no_grad():
        prompt.scale.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(seed))
        prompt.shift.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return PromptArtifact(prompt, dict(model or MODEL, hidden_size=hidden), metrics={"seed": seed})


_BLOBS: dict[int, bytes] = {}


def make_blob(seed: int, **kwargs: object) -> bytes:
    """The blob of make_artifact(seed); the same bytes on every call without kwargs (the metadata holds a time)."""
    if kwargs:
        return make_artifact(seed, **kwargs).to_bytes()  # type: ignore[arg-type]
    if seed not in _BLOBS:
        _BLOBS[seed] = make_artifact(seed).to_bytes()
    return _BLOBS[seed]


@pytest.fixture
def registry(registry_url: str):
    reg = open_registry(registry_url)
    yield reg
    reg.close()


def with_tenants(registry: Registry, *tenants: str) -> Registry:
    """`registry` with these tenants created (prompts are stored only for existing tenants)."""
    for tenant in tenants:
        registry.create_tenant(tenant)
    return registry


def status_of(call) -> int:
    with pytest.raises(RegistryError) as info:
        call()
    return info.value.status


# --- storage --------------------------------------------------------------------------------------------------------
def test_put_get_versions_and_blob_round_trip(registry: Registry) -> None:
    with_tenants(registry, "acme")
    blobs = [make_blob(1), make_blob(2)]
    first = registry.put("acme", "sentiment", blobs[0])
    second = registry.put("acme", "sentiment", blobs[1], public=True)
    assert (first.version, second.version) == (1, 2)
    assert second.key == "acme/sentiment@2" and second.method == "ulpt"
    assert second.sha256 == hashlib.sha256(blobs[1]).hexdigest()
    assert registry.get("acme", "sentiment").blob == blobs[1]  # latest
    old = registry.get("acme", "sentiment", 1)
    assert old.blob == blobs[0] and old.public  # public belongs to the name: every version
    loaded = PromptArtifact.from_bytes(old.blob)
    assert torch.equal(loaded.prompt.vectors(), make_artifact(1).prompt.vectors())
    assert status_of(lambda: registry.get("acme", "sentiment", 3)) == 404
    assert status_of(lambda: registry.get("acme", "other")) == 404
    # put without a flag keeps the name's; with one, sets it for every version; a new name starts private
    assert registry.put("acme", "sentiment", blobs[0]).public
    assert not registry.put("acme", "sentiment", blobs[0], public=False).public
    assert not registry.get("acme", "sentiment", 2).public
    assert registry.put("acme", "fresh", blobs[0]).public is False
    assert [r.version for r in registry.versions("acme", "sentiment")] == [1, 2, 3, 4]


def test_versions_are_never_reused(registry: Registry) -> None:
    with_tenants(registry, "acme")
    registry.put("acme", "p", make_blob(1))
    registry.put("acme", "p", make_blob(2))
    assert registry.delete("acme", "p", 2) == 1
    assert registry.get("acme", "p").version == 1
    assert registry.put("acme", "p", make_blob(3)).version == 3  # key acme/p@2 keeps meaning the deleted prompt
    assert registry.delete("acme", "p") == 2
    assert status_of(lambda: registry.get("acme", "p")) == 404
    assert registry.put("acme", "p", make_blob(4)).version == 4
    assert status_of(lambda: registry.delete("acme", "p", 2)) == 404


def test_bad_input_is_refused_with_a_status(registry: Registry) -> None:
    with_tenants(registry, "acme")
    blob = make_blob(1)
    tampered = bytearray(blob)
    tampered[-3] ^= 0x40  # a bit inside the tensor bytes
    assert status_of(lambda: registry.put("acme", "p", bytes(tampered))) == 422
    assert status_of(lambda: registry.put("acme", "p", b"not an artifact")) == 422
    for tenant, name in [("a/b", "p"), ("acme", "p@2"), ("acme", ""), ("", "p"), ("acme", "x" * 65), ("-x", "p")]:
        assert status_of(lambda t=tenant, n=name: registry.put(t, n, blob)) == 422
    for ref in ["a/b/c", "p@x", "p@0", "", "@1"]:
        assert status_of(lambda r=ref: registry.resolve("acme", r)) == 422
    assert registry.list("acme") == []  # nothing was stored


def test_integrity_is_checked_on_read(registry: Registry) -> None:
    with_tenants(registry, "acme")
    registry.put("acme", "p", make_blob(1))
    other = zlib.compress(make_blob(2))  # a valid artifact, but not the one whose sha256 the row holds
    registry._run(lambda conn: registry._execute(conn, "UPDATE sp_prompts SET data = ?", (other,)))
    with pytest.raises(RegistryError, match="corrupt") as info:
        registry.get("acme", "p")
    assert info.value.status == 500
    registry._run(lambda conn: registry._execute(conn, "UPDATE sp_prompts SET data = ?", (b"\x00garbage",)))
    assert status_of(lambda: registry.resolve("acme", "p")) == 500


def test_resolve_reference_forms(registry: Registry) -> None:
    with_tenants(registry, "acme")
    registry.put("acme", "p", make_blob(1))
    registry.put("acme", "p", make_blob(2))
    assert registry.resolve("acme", "p").version == 2
    assert registry.resolve("acme", "p@1").version == 1
    assert registry.resolve("acme", "acme/p").version == 2
    assert registry.resolve("acme", "acme/p@1").blob == make_blob(1)


def test_row_is_compact_for_a_smollm2_sized_ulpt_prompt(registry: Registry) -> None:
    """ULPT r=2, n=100 on hidden size 576 (SmolLM2-135M): the stored row stays well under 8 KB."""
    with_tenants(registry, "acme")
    blob = make_blob(7, hidden=576, n=100)
    registry.put("acme", "big", blob)
    rows = registry._run(
        lambda conn: registry._query(conn, "SELECT tenant, name, method, sha256, data FROM sp_prompts")
    )
    stored = sum(len(v) if isinstance(v, str) else len(bytes(v)) for v in rows[0]) + 3 * 8
    assert stored <= 8 * 1024 - 1024, stored  # room for page and index overhead (measured: bench/registry_scale.py)


# --- tenants ----------------------------------------------------------------------------------------------------------
def test_tenant_isolation(registry: Registry) -> None:
    with_tenants(registry, "alice", "bob")
    registry.put("bob", "secret", make_blob(1))
    registry.put("bob", "shared", make_blob(2), public=True)
    # alice cannot read bob's private prompt, and cannot tell it from a missing one
    assert status_of(lambda: registry.get("alice", "secret")) == 404
    with pytest.raises(RegistryError) as hidden:
        registry.resolve("alice", "bob/secret")
    with pytest.raises(RegistryError) as missing:
        registry.resolve("alice", "bob/nothing")
    assert hidden.value.status == missing.value.status == 404
    assert str(hidden.value).replace("secret", "X") == str(missing.value).replace("nothing", "X")
    assert status_of(lambda: registry.resolve("alice", "bob/secret@1")) == 404
    assert status_of(lambda: registry.resolve("alice", "secret")) == 404  # a bare name is the caller's own
    # public prompts are readable by all ...
    assert registry.resolve("alice", "bob/shared").blob == make_blob(2)
    assert [r.key for r in registry.list("alice")] == ["bob/shared@1"]
    assert registry.list("alice", include_public=False) == []
    assert [r.key for r in registry.list("bob")] == ["bob/secret@1", "bob/shared@1"]
    # ... and writable by none but their owner: alice's writes land in her own namespace or fail
    mine = registry.put("alice", "secret", make_blob(3))
    assert mine.key == "alice/secret@1"
    assert registry.get("bob", "secret").blob == make_blob(1) and registry.get("bob", "secret").version == 1
    assert status_of(lambda: registry.delete("alice", "shared")) == 404
    assert status_of(lambda: registry.set_public("alice", "shared", False)) == 404
    assert registry.delete("alice", "secret") == 1
    assert registry.get("bob", "secret").version == 1 and registry.resolve("alice", "bob/shared").version == 1
    # made private again: gone for alice, still there for bob
    registry.set_public("bob", "shared", False)
    assert status_of(lambda: registry.resolve("alice", "bob/shared")) == 404
    assert registry.resolve("bob", "shared").version == 1


def test_api_keys_are_stored_hashed_and_rotate(registry: Registry) -> None:
    key = registry.create_tenant("acme")
    other = registry.create_tenant("globex")
    assert len(key) >= 43 and key != other
    assert registry.tenant_for_key(key) == "acme" and registry.tenant_for_key(other) == "globex"
    assert registry.tenant_for_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert registry.tenant_for_key("") is None and registry.tenant_for_key("x" * 10_000) is None
    stored = registry._run(lambda conn: registry._query(conn, "SELECT tenant, key_hash FROM sp_tenants"))
    assert all(key not in row and other not in row for row in stored)
    assert dict(stored)["acme"] == hashlib.sha256(key.encode()).hexdigest()
    assert status_of(lambda: registry.create_tenant("acme")) == 409
    new = registry.rotate_key("acme")
    assert registry.tenant_for_key(key) is None and registry.tenant_for_key(new) == "acme"
    assert status_of(lambda: registry.rotate_key("nobody")) == 404
    assert registry.tenants() == ["acme", "globex"]


def test_delete_tenant_removes_its_prompts_and_key(registry: Registry) -> None:
    key = registry.create_tenant("acme")
    with_tenants(registry, "globex")
    registry.put("acme", "p", make_blob(1), public=True)
    registry.put("globex", "q", make_blob(2))
    registry.delete_tenant("acme")
    assert registry.tenant_for_key(key) is None and registry.tenants() == ["globex"]
    assert status_of(lambda: registry.resolve("globex", "acme/p")) == 404
    assert [r.key for r in registry.list("globex")] == ["globex/q@1"]
    registry.create_tenant("acme")
    assert registry.put("acme", "p", make_blob(3)).version == 2  # acme/p@1 still means only the deleted prompt
    assert status_of(lambda: registry.resolve("globex", "acme/p")) == 404  # not public: the new owner did not say so
    assert status_of(lambda: registry.delete_tenant("nobody")) == 404


def test_prompts_are_stored_only_for_existing_tenants(registry: Registry) -> None:
    """A prompt for an unknown tenant is refused (nothing stored), so a tenant created later under that name starts
    empty instead of taking the prompt over."""
    with_tenants(registry, "acme")
    generation = registry.generation()
    with pytest.raises(RegistryError) as info:
        registry.put("ghost", "orphan", make_blob(1), public=True)
    assert info.value.status == 404
    assert str(info.value) == "unknown tenant 'ghost'; create it with `softprompt registry tenant create ghost`"
    # put_many is all or none: the known tenant's prompt is not stored either
    both = [("acme", "p", make_blob(1), None), ("ghost", "q", make_blob(2), None)]
    assert status_of(lambda: registry.put_many(both)) == 404
    assert registry.generation() == generation and registry.tenants() == ["acme"]
    assert registry.list("acme") == [] and registry.list("ghost") == []
    registry.create_tenant("ghost")
    assert registry.list("ghost", include_public=False) == []
    assert status_of(lambda: registry.resolve("ghost", "orphan")) == 404
    # a deleted tenant is unknown again
    registry.delete_tenant("acme")
    assert status_of(lambda: registry.put("acme", "p", make_blob(1))) == 404


def test_prompts_left_without_a_tenant_block_creating_it(registry: Registry) -> None:
    """A registry written before tenants were checked may hold prompts under a name with no tenant: creating that
    tenant is refused until `delete_tenant` has removed them."""
    with_tenants(registry, "ghost").put("ghost", "orphan", make_blob(1), public=True)
    registry._run(lambda conn: registry._execute(conn, "DELETE FROM sp_tenants"))  # as an older version left it
    with pytest.raises(RegistryError, match="holds 1 prompt version.*softprompt registry tenant rm ghost") as info:
        registry.create_tenant("ghost")
    assert info.value.status == 409 and registry.tenants() == []
    registry.delete_tenant("ghost")
    registry.create_tenant("ghost")
    assert registry.list("ghost", include_public=False) == [] and registry.put("ghost", "p", make_blob(2)).version == 1


# --- generation, replicas, threads, cache -----------------------------------------------------------------------------
def test_generation_changes_on_every_write_only(registry: Registry) -> None:
    seen = [registry.generation()]
    for write in (
        lambda: registry.create_tenant("acme"),
        lambda: registry.put("acme", "p", make_blob(1)),
        lambda: registry.set_public("acme", "p", True),
        lambda: registry.rotate_key("acme"),
        lambda: registry.delete("acme", "p"),
    ):
        write()
        seen.append(registry.generation())
    assert len(set(seen)) == len(seen)
    registry.list("acme")  # reads do not count
    registry.tenants()
    registry.tenant_for_key("x")
    assert registry.generation() == seen[-1]
    assert status_of(lambda: registry.delete("acme", "p")) == 404  # a failed write is rolled back entirely
    assert registry.generation() == seen[-1]


def test_replicas_see_each_others_writes_and_cache_serves_new_version_within_a_second(registry_url: str) -> None:
    with open_registry(registry_url) as writer, open_registry(registry_url) as replica:
        with_tenants(writer, "acme")
        cache = PromptCache(replica, capacity=8)
        writer.put("acme", "p", make_blob(1))
        assert replica.get("acme", "p").version == 1
        record, artifact = cache.get("acme", "p")
        assert record.version == 1 and artifact.metrics == {"seed": 1}
        assert cache.get("acme", "p")[0].version == 1 and cache.stats()["hits"] == 1

        def served_within(expected: int | None, limit: float = 1.0) -> float:
            start = time.monotonic()
            while time.monotonic() - start < limit:
                try:
                    version = cache.get("acme", "p")[0].version
                except RegistryError:
                    version = None
                if version == expected:
                    return time.monotonic() - start
                time.sleep(0.01)
            raise AssertionError(f"version {expected} not served within {limit} s")

        writer.put("acme", "p", make_blob(2))
        served_within(2)
        assert cache.get("acme", "p")[1].metrics == {"seed": 2}
        assert cache.get("acme", "p@1")[1].metrics == {"seed": 1}
        writer.delete("acme", "p")
        served_within(None)


def test_concurrent_puts_from_threads_and_replicas_get_distinct_versions(registry_url: str) -> None:
    blob = make_blob(1)
    with open_registry(registry_url) as one, open_registry(registry_url) as two:
        with_tenants(one, "acme")
        versions: list[int] = []
        errors: list[BaseException] = []

        def writer(reg: Registry) -> None:
            try:
                for _ in range(5):
                    versions.append(reg.put("acme", "p", blob).version)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(reg,)) for reg in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(versions) == list(range(1, 21))
        assert [r.version for r in two.versions("acme", "p")] == list(range(1, 21))


def test_cache_is_lru_and_checks_the_model(registry: Registry) -> None:
    from softprompt.models.tiny import tiny_backbone

    backbone = tiny_backbone("llama")
    with_tenants(registry, "acme")
    good = make_artifact(1, model=backbone.describe())
    registry.put("acme", "good", good.to_bytes())
    registry.put("acme", "other", make_blob(2))  # tuned on another model (fingerprint)
    for i in range(3):
        registry.put("acme", f"p{i}", make_blob(10 + i, model=backbone.describe()))
    cache = PromptCache(registry, capacity=2, backbone=backbone)
    record, artifact = cache.get("acme", "good")
    assert torch.equal(artifact.prompt.vectors(), good.prompt.vectors())
    assert status_of(lambda: cache.get("acme", "other")) == 422
    assert status_of(lambda: cache.get("acme", "missing")) == 404
    cache.get("acme", "p0")
    cache.get("acme", "good")  # hit: good becomes most recent, p0 least
    cache.get("acme", "p1")  # evicts p0
    assert cache.stats() == {"hits": 1, "misses": 4, "size": 2, "capacity": 2}
    cache.get("acme", "good")
    cache.get("acme", "p0")
    assert cache.stats()["hits"] == 2 and cache.stats()["misses"] == 5


def test_open_registry_urls(tmp_path) -> None:
    plain = tmp_path / "plain.db"
    with open_registry(str(plain)) as reg:
        with_tenants(reg, "acme").put("acme", "p", make_blob(1))
    with open_registry(f"sqlite:///{plain}") as reg:
        assert reg.get("acme", "p").version == 1
    for url in ("", "mysql://x", "sqlite:///:memory:"):
        with pytest.raises(ValueError):
            open_registry(url)
    with pytest.raises(ValueError, match="cannot open"):
        open_registry(str(tmp_path / "missing" / "folder" / "r.db"))
    assert redact("postgresql://bob:s3cret@db:5432/reg") == "postgresql://bob:***@db:5432/reg"
