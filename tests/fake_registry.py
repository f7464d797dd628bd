"""A dict-backed stand-in for `softprompt.serving.registry` (same interface), for the server tests until the real
registry lands; only the `registry` fixture in test_serving_*.py needs to change to switch to it.

It keeps the rules the server relies on: versions count up per (tenant, name); a caller resolves its own prompts and
other tenants' public ones, anything else is 404 (existence never leaks); only the owner writes; keys are stored as
sha256 hashes; `generation()` changes on every write; the cache re-resolves refs, so a new version is served at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from softprompt.artifact import ArtifactError, PromptArtifact

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PromptRecord:
    tenant: str
    name: str
    version: int
    public: bool
    method: str
    sha256: str
    created: float
    blob: bytes

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}@{self.version}"


class RegistryError(ValueError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Registry:
    def __init__(self) -> None:
        self._prompts: dict[tuple[str, str], list[PromptRecord]] = {}
        self._keys: dict[str, str] = {}  # tenant -> sha256(key)
        self._lock = threading.Lock()
        self._generation = 0

    # --- prompts --------------------------------------------------------------------------------------------------
    def put(self, tenant: str, name: str, blob: bytes, *, public: bool = False) -> PromptRecord:
        if not NAME.match(name) or not NAME.match(tenant):
            raise RegistryError(f"invalid prompt name {tenant}/{name}", 422)
        try:
            artifact = PromptArtifact.from_bytes(blob)
        except ArtifactError as err:
            raise RegistryError(str(err), 422) from err
        with self._lock:
            versions = self._prompts.setdefault((tenant, name), [])
            version = versions[-1].version + 1 if versions else 1
            record = PromptRecord(tenant, name, version, public, artifact.method, hashlib.sha256(blob).hexdigest(),
                                  time.time(), bytes(blob))  # fmt: skip
            versions.append(record)
            self._generation += 1
            return record

    def get(self, tenant: str, name: str, version: int | None = None) -> PromptRecord:
        with self._lock:
            versions = self._prompts.get((tenant, name), [])
            found = [r for r in versions if version is None or r.version == version]
            if not found:
                raise RegistryError(f"prompt {name!r} not found", 404)
            return found[-1]

    def resolve(self, caller: str, ref: str) -> PromptRecord:
        owner, _, rest = ref.rpartition("/")
        name, _, version = rest.partition("@")
        owner = owner or caller
        try:
            number = int(version) if version else None
        except ValueError:
            raise RegistryError(f"prompt {ref!r} not found", 404) from None
        try:
            record = self.get(owner, name, number)
        except RegistryError:
            raise RegistryError(f"prompt {ref!r} not found", 404) from None
        if owner != caller and not record.public:
            raise RegistryError(f"prompt {ref!r} not found", 404)
        return record

    def list(self, tenant: str, *, include_public: bool = True) -> list[PromptRecord]:
        with self._lock:
            latest = [v[-1] for v in self._prompts.values() if v]
        return [r for r in latest if r.tenant == tenant or (include_public and r.public)]

    def delete(self, tenant: str, name: str, version: int | None = None) -> int:
        with self._lock:
            versions = self._prompts.get((tenant, name), [])
            keep = [r for r in versions if version is not None and r.version != version]
            removed = len(versions) - len(keep)
            if not removed:
                raise RegistryError(f"prompt {name!r} not found", 404)
            self._prompts[(tenant, name)] = keep
            self._generation += 1
            return removed

    def set_public(self, tenant: str, name: str, public: bool) -> None:
        with self._lock:
            versions = self._prompts.get((tenant, name), [])
            if not versions:
                raise RegistryError(f"prompt {name!r} not found", 404)
            self._prompts[(tenant, name)] = [
                PromptRecord(r.tenant, r.name, r.version, public, r.method, r.sha256, r.created, r.blob)
                for r in versions
            ]
            self._generation += 1

    def generation(self) -> int:
        return self._generation

    # --- tenants --------------------------------------------------------------------------------------------------
    def create_tenant(self, tenant: str) -> str:
        if not NAME.match(tenant):
            raise RegistryError(f"invalid tenant name {tenant!r}", 422)
        with self._lock:
            if tenant in self._keys:
                raise RegistryError(f"tenant {tenant!r} exists", 409)
        return self.rotate_key(tenant, create=True)

    def rotate_key(self, tenant: str, create: bool = False) -> str:
        with self._lock:
            if tenant not in self._keys and not create:
                raise RegistryError(f"tenant {tenant!r} not found", 404)
            key = secrets.token_urlsafe(32)
            self._keys[tenant] = hashlib.sha256(key.encode()).hexdigest()
            self._generation += 1
            return key

    def delete_tenant(self, tenant: str) -> None:
        with self._lock:
            if self._keys.pop(tenant, None) is None:
                raise RegistryError(f"tenant {tenant!r} not found", 404)
            for key in [k for k in self._prompts if k[0] == tenant]:
                del self._prompts[key]
            self._generation += 1

    def tenant_for_key(self, api_key: str) -> str | None:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        with self._lock:
            for tenant, stored in self._keys.items():
                if hmac.compare_digest(stored, digest):
                    return tenant
        return None

    def tenants(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def close(self) -> None:
        pass


class PromptCache:
    """LRU of loaded artifacts keyed by record.key; refs are re-resolved on every call (the dict lookup is cheap)."""

    def __init__(self, registry: Registry, capacity: int = 1024) -> None:
        self.registry, self.capacity = registry, capacity
        self._items: OrderedDict[tuple[str, str], PromptArtifact] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, caller: str, ref: str) -> tuple[PromptRecord, PromptArtifact]:
        record = self.registry.resolve(caller, ref)
        key = (record.key, record.sha256)
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return record, self._items[key]
            self.misses += 1
        artifact = PromptArtifact.from_bytes(record.blob)
        with self._lock:
            self._items[key] = artifact
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return record, artifact

    def stats(self) -> dict:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "size": len(self._items), "capacity": self.capacity}


def open_registry(url: str) -> Registry:
    return Registry()
