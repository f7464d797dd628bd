"""The prompt registry: artifacts keyed by (tenant, name, version) in SQLite (WAL) or PostgreSQL, plus an LRU cache.

    key = f"{tenant}/{name}@{version}"     version = last version the name ever had + 1 (never reused)

One schema for both databases. A row holds the artifact blob (`PromptArtifact.to_bytes()`, validated with
`from_bytes` before it is stored) zlib-compressed, its sha256 (checked again on every read) and a little metadata;
an r=2, n=100 ULPT prompt for SmolLM2 takes under 8 KB of disk including the primary-key index. Lookups go through
the primary key (tenant, name, version), so they cost the same at 10⁴ or 10⁶ prompts.

Why versions are never reused: the server keys its prompt prefix cache (keys/values computed from a prompt) by
`record.key`; were `t/n@3` deleted and written again with other numbers, a replica could serve the old prefix. So
`sp_names` keeps each name's last version even after its rows are deleted.

`public` belongs to a name (every version of it): `set_public` sets it, and so does `put` when given True or False
(None, the default, keeps the name's flag; a new name starts private). A caller sees its own prompts and
other tenants' public ones; everything else is reported exactly as a missing prompt (404), so existence never leaks.

Prompts are written only for a tenant that exists (`create_tenant` first): a prompt stored under an unknown name
would have no owner, and a tenant created later under that name would take it over. For the same reason a registry
written before this check that holds prompts under a name with no tenant refuses to create that tenant until
`delete_tenant` has removed them.

Every write bumps one counter (`generation()`), in the same transaction; readers (`PromptCache`, other replicas)
poll it cheaply to notice new versions, deletions and visibility changes. Writes are durable when they return
(SQLite: WAL with synchronous=FULL; PostgreSQL: committed). Thread-safe: one connection per thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from softprompt.artifact import MAX_METADATA_BYTES, MAX_TENSOR_BYTES, ArtifactError, PromptArtifact
from softprompt.serving.tenants import MAX_KEY_CHARS, check_name, hash_key, key_matches, new_key

if TYPE_CHECKING:
    from softprompt.models.backbone import Backbone

SCHEMA_VERSION = 1
SQLITE_PAGE_SIZE = 32768
MAX_BLOB_BYTES = MAX_METADATA_BYTES + MAX_TENSOR_BYTES + 64
REF_PATTERN = re.compile(r"(?:(?P<owner>[^/@]+)/)?(?P<name>[^/@]+)(?:@(?P<version>[0-9]{1,9}))?")
COLUMNS = "p.tenant, p.name, p.version, n.public, p.method, p.sha256, p.created, p.data"
JOIN = "sp_prompts p JOIN sp_names n ON n.tenant = p.tenant AND n.name = p.name"

# {blob}: the binary column type, the one word the two databases spell differently.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sp_prompts (
        tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, method TEXT NOT NULL,
        sha256 TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, data {blob} NOT NULL,
        PRIMARY KEY (tenant, name, version))""",
    """CREATE TABLE IF NOT EXISTS sp_names (
        tenant TEXT NOT NULL, name TEXT NOT NULL, last_version INTEGER NOT NULL, public INTEGER NOT NULL,
        PRIMARY KEY (tenant, name))""",
    "CREATE INDEX IF NOT EXISTS sp_names_public ON sp_names (public)",
    """CREATE TABLE IF NOT EXISTS sp_tenants (
        tenant TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS sp_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
    "INSERT INTO sp_meta (k, v) VALUES ('generation', 0) ON CONFLICT DO NOTHING",
    f"INSERT INTO sp_meta (k, v) VALUES ('schema_version', {SCHEMA_VERSION}) ON CONFLICT DO NOTHING",
)


@dataclass(frozen=True)
class PromptRecord:
    tenant: str
    name: str
    version: int
    public: bool
    method: str
    sha256: str  # of blob
    created: float  # unix time
    blob: bytes  # PromptArtifact.to_bytes(): the whole artifact, checksummed

    @property
    def key(self) -> str:
        """Unique for all time (versions are never reused): safe as a cache key."""
        return f"{self.tenant}/{self.name}@{self.version}"

    @property
    def ref(self) -> str:
        return self.key

    def describe(self) -> dict[str, Any]:
        """Everything but the blob, JSON-ready."""
        return {
            "key": self.key,
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "public": self.public,
            "method": self.method,
            "sha256": self.sha256,
            "created": self.created,
            "bytes": len(self.blob),
        }


class RegistryError(ValueError):
    """A registry request that cannot be served; `status` is the HTTP status it maps to (404/403/409/413/422/500)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _not_found(ref: str) -> RegistryError:
    # One wording for "absent" and "not yours": a caller cannot tell which.
    return RegistryError(f"prompt {ref!r} not found", 404)


def parse_ref(ref: str) -> tuple[str | None, str, int | None]:
    """'name', 'name@3', 'owner/name', 'owner/name@3' -> (owner or None, name, version or None)."""
    match = REF_PATTERN.fullmatch(ref) if isinstance(ref, str) else None
    if match is None:
        raise RegistryError(f"invalid prompt reference {ref!r}: use name, name@VERSION or owner/name[@VERSION]", 422)
    owner, name, version = match["owner"], match["name"], match["version"]
    try:
        if owner is not None:
            check_name(owner, "tenant")
        check_name(name, "prompt")
    except ValueError as err:
        raise RegistryError(str(err), 422) from err
    if version is not None and int(version) < 1:
        raise RegistryError(f"invalid prompt reference {ref!r}: versions start at 1", 422)
    return owner, name, None if version is None else int(version)


# --- databases ------------------------------------------------------------------------------------------------------
class _Database:
    """What differs between SQLite and PostgreSQL: connecting, placeholders, the binary type, write transactions."""

    blob_type = "BLOB"
    placeholder = "?"
    retry_errors: tuple[type[BaseException], ...] = ()

    def connect(self) -> Any:
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    @contextmanager
    def write(self, conn: Any) -> Iterator[None]:
        raise NotImplementedError

    def init_schema(self, conn: Any) -> None:
        with self.write(conn):
            for statement in SCHEMA:
                conn.execute(statement.format(blob=self.blob_type))

    def broken(self, conn: Any) -> bool:
        return False


class _SQLite(_Database):
    def __init__(self, path: str) -> None:
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ValueError(f"SQLite registry needs a file path (replicas and threads share it), got {path!r}")
        self.path = path

    def connect(self) -> Any:
        import sqlite3

        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # A new database gets 32 KB pages: five ~6 KB prompt rows share a page (with 4 KB pages each row
            # spills into an overflow page and takes 8 KB); an existing database keeps its page size.
            conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as err:
            raise ValueError(f"cannot open the SQLite registry {self.path!r}: {err}") from err
        conn.execute("PRAGMA synchronous=FULL")  # a write is on disk when put() returns
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def write(self, conn: Any) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: read-then-write cannot race another writer
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class _Postgres(_Database):
    blob_type = "BYTEA"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as err:
            raise ValueError(
                'a PostgreSQL registry needs psycopg 3: pip install "psycopg[binary]" (or softprompt[serve])'
            ) from err
        self.url = url
        self.psycopg = psycopg
        self.retry_errors = (psycopg.OperationalError,)

    def connect(self) -> Any:
        try:
            return self.psycopg.connect(self.url, autocommit=True)
        except self.psycopg.Error as err:
            raise ValueError(f"cannot connect to the PostgreSQL registry: {str(err).strip().splitlines()[0]}") from err

    @contextmanager
    def write(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            # Every write takes one transaction-scoped advisory lock first, so writers run one after another and
            # each statement after it (READ COMMITTED) sees every earlier write: read-then-write cannot race.
            conn.execute("SELECT pg_advisory_xact_lock(7283401)")
            yield

    def broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)


def _database(url: str) -> _Database:
    if not isinstance(url, str) or not url:
        raise ValueError("registry URL is empty")
    if url.startswith(("postgresql://", "postgres://")):
        return _Postgres(url)
    if url.startswith("sqlite:///"):
        return _SQLite(url[len("sqlite:///") :])
    if "://" in url:
        raise ValueError(f"unsupported registry URL {url!r}: use sqlite:///PATH, a plain path, or postgresql://...")
    return _SQLite(url)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_registry(url: str) -> Registry:
    """A registry: `sqlite:///path/to.db` or a plain path -> SQLite (WAL); `postgresql://user@host:port/db` ->
    PostgreSQL (psycopg 3)."""
    return Registry(url)


# --- the registry ---------------------------------------------------------------------------------------------------
class Registry:
    def __init__(self, url: str) -> None:
        self.url = url
        self._db = _database(url)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.local_writes = 0  # writes through this object: its own PromptCache sees them at once (read-your-writes)
        self._db.init_schema(self._conn())

    # connections: one per thread, reopened when the server dropped it
    def _conn(self) -> Any:
        if self._closed:
            raise RegistryError("registry is closed", 500)
        conn = getattr(self._local, "conn", None)
        if conn is None or self._db.broken(conn):
            conn = self._db.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """work(conn), retried once on a fresh connection if the database dropped the old one."""
        try:
            return work(self._conn())
        except self._db.retry_errors:
            self._local.conn = None
            return work(self._conn())

    def _query(self, conn: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return conn.execute(self._db.sql(statement), tuple(params)).fetchall()

    def _execute(self, conn: Any, statement: str, params: Sequence[Any] = ()) -> int:
        return conn.execute(self._db.sql(statement), tuple(params)).rowcount

    def _bump(self, conn: Any) -> None:
        self._execute(conn, "UPDATE sp_meta SET v = v + 1 WHERE k = 'generation'")
        self.local_writes += 1  # (a rolled-back write only costs the caches one needless refresh)

    # --- prompts ---------------------------------------------------------------------------------------------------
    def put(self, tenant: str, name: str, blob: bytes, *, public: bool | None = None) -> PromptRecord:
        """Store a new version of tenant/name (version = last + 1); durable on return."""
        return self.put_many([(tenant, name, blob, public)])[0]

    def put_many(self, items: Iterable[tuple[str, str, bytes, bool | None]]) -> list[PromptRecord]:
        """Several puts in one transaction (all or none): (tenant, name, blob, public) each."""
        return self._store([self._prepare(*item) for item in items])

    def _prepare(self, tenant: str, name: str, blob: bytes, public: bool | None) -> tuple[Any, ...]:
        """Checked names and blob (a valid artifact) -> the row `_store` writes."""
        try:
            check_name(tenant, "tenant")
            check_name(name, "prompt")
        except ValueError as err:
            raise RegistryError(str(err), 422) from err
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise RegistryError(f"prompt blob must be bytes, not {type(blob).__name__}", 422)
        blob = bytes(blob)
        if len(blob) > MAX_BLOB_BYTES:
            raise RegistryError(f"prompt blob of {len(blob)} bytes exceeds the {MAX_BLOB_BYTES} allowed", 413)
        try:
            artifact = PromptArtifact.from_bytes(blob)
        except ArtifactError as err:
            raise RegistryError(f"not a valid prompt artifact: {err}", 422) from err
        return encode_row(tenant, name, blob, public, artifact.method)

    def _store(self, rows: Sequence[tuple[Any, ...]]) -> list[PromptRecord]:
        """Write prepared rows (see `encode_row`) in one transaction, each as its name's next version."""

        def work(conn: Any) -> list[PromptRecord]:
            records = []
            with self._db.write(conn):
                self._check_tenants(conn, {row[0] for row in rows})
                self._bump(conn)
                for tenant, name, blob, public, method, sha, data in rows:
                    found = self._query(
                        conn, "SELECT last_version, public FROM sp_names WHERE tenant = ? AND name = ?", (tenant, name)
                    )
                    version = found[0][0] + 1 if found else 1
                    if public is None:  # keep the name's flag; a new name starts private
                        public = bool(found[0][1]) if found else False
                    if found:
                        self._execute(
                            conn,
                            "UPDATE sp_names SET last_version = ?, public = ? WHERE tenant = ? AND name = ?",
                            (version, int(public), tenant, name),
                        )
                    else:
                        self._execute(
                            conn,
                            "INSERT INTO sp_names (tenant, name, last_version, public) VALUES (?, ?, ?, ?)",
                            (tenant, name, version, int(public)),
                        )
                    created = time.time()
                    self._execute(
                        conn,
                        "INSERT INTO sp_prompts (tenant, name, version, method, sha256, created, data) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (tenant, name, version, method, sha, created, data),
                    )
                    records.append(PromptRecord(tenant, name, version, bool(public), method, sha, created, blob))
            return records

        return self._run(work)

    def _check_tenants(self, conn: Any, tenants: Iterable[str]) -> None:
        """Refuse (404) a write for a tenant that does not exist: its prompts would have no owner, and whoever later
        created a tenant of that name would take them over. Run inside the write transaction, so a tenant deleted
        meanwhile cannot slip through."""
        for tenant in sorted(tenants):
            if not self._query(conn, "SELECT 1 FROM sp_tenants WHERE tenant = ?", (tenant,)):
                raise RegistryError(
                    f"unknown tenant {tenant!r}; create it with `softprompt registry tenant create {tenant}`", 404
                )

    def get(self, tenant: str, name: str, version: int | None = None) -> PromptRecord:
        """tenant's own prompt (the latest version if none is given)."""
        return self._fetch(tenant, name, version, public_only=False, ref=_ref(tenant, name, version))

    def resolve(self, caller: str, ref: str) -> PromptRecord:
        """What `ref` means to `caller`: its own prompt, or another tenant's public one; otherwise 404."""
        owner, name, version = parse_ref(ref)
        owner = owner or caller
        return self._fetch(owner, name, version, public_only=owner != caller, ref=ref)

    def _fetch(self, tenant: str, name: str, version: int | None, *, public_only: bool, ref: str) -> PromptRecord:
        where = "p.tenant = ? AND p.name = ?" + (" AND n.public = 1" if public_only else "")
        params: list[Any] = [tenant, name]
        if version is not None:
            where += " AND p.version = ?"
            params.append(version)
        statement = f"SELECT {COLUMNS} FROM {JOIN} WHERE {where} ORDER BY p.version DESC LIMIT 1"
        rows = self._run(lambda conn: self._query(conn, statement, params))
        if not rows:
            raise _not_found(ref)
        return _record(rows[0])

    def list(self, tenant: str, *, include_public: bool = True) -> list[PromptRecord]:
        """The latest version of each of tenant's prompts (and of other tenants' public ones), by key."""
        latest = "p.version = (SELECT MAX(q.version) FROM sp_prompts q WHERE q.tenant = p.tenant AND q.name = p.name)"
        # Two indexed selects (own: the primary key's tenant prefix; others' public: the public index), not an OR
        # that would scan every name.
        statement = f"SELECT {COLUMNS} FROM {JOIN} WHERE n.tenant = ? AND {latest}"
        params: tuple[Any, ...] = (tenant,)
        if include_public:
            statement += f" UNION ALL SELECT {COLUMNS} FROM {JOIN} WHERE n.public = 1 AND n.tenant <> ? AND {latest}"
            params = (tenant, tenant)
        statement += " ORDER BY 1, 2"
        rows = self._run(lambda conn: self._query(conn, statement, params))
        return [_record(row) for row in rows]

    def versions(self, tenant: str, name: str) -> list[PromptRecord]:
        """Every stored version of tenant's own prompt, oldest first (404 if none)."""
        statement = f"SELECT {COLUMNS} FROM {JOIN} WHERE p.tenant = ? AND p.name = ? ORDER BY p.version"
        rows = self._run(lambda conn: self._query(conn, statement, (tenant, name)))
        if not rows:
            raise _not_found(name)
        return [_record(row) for row in rows]

    def delete(self, tenant: str, name: str, version: int | None = None) -> int:
        """Remove tenant's own prompt (one version, or all); the number of versions removed, 404 if none."""

        def work(conn: Any) -> int:
            with self._db.write(conn):
                self._bump(conn)
                if version is None:
                    removed = self._execute(
                        conn, "DELETE FROM sp_prompts WHERE tenant = ? AND name = ?", (tenant, name)
                    )
                else:
                    removed = self._execute(
                        conn,
                        "DELETE FROM sp_prompts WHERE tenant = ? AND name = ? AND version = ?",
                        (tenant, name, version),
                    )
                if removed == 0:
                    raise _not_found(_ref(tenant, name, version))  # rolls the generation bump back
            return removed

        return self._run(work)

    def set_public(self, tenant: str, name: str, public: bool) -> None:
        """Make every version of tenant's own prompt public (readable by all tenants) or private again."""

        def work(conn: Any) -> None:
            with self._db.write(conn):
                self._bump(conn)
                changed = self._execute(
                    conn,
                    "UPDATE sp_names SET public = ? WHERE tenant = ? AND name = ? AND EXISTS "
                    "(SELECT 1 FROM sp_prompts p WHERE p.tenant = sp_names.tenant AND p.name = sp_names.name)",
                    (int(bool(public)), tenant, name),
                )
                if changed == 0:
                    raise _not_found(_ref(tenant, name, None))

        self._run(work)

    def generation(self) -> int:
        """A counter that changes on every write (one indexed read)."""
        rows = self._run(lambda conn: self._query(conn, "SELECT v FROM sp_meta WHERE k = 'generation'"))
        return int(rows[0][0])

    # --- tenants ----------------------------------------------------------------------------------------------------
    def create_tenant(self, tenant: str) -> str:
        """Register a tenant; returns its API key (the only time the key is seen: only its hash is stored)."""
        try:
            check_name(tenant, "tenant")
        except ValueError as err:
            raise RegistryError(str(err), 422) from err
        key = new_key()

        def work(conn: Any) -> None:
            with self._db.write(conn):
                if self._query(conn, "SELECT 1 FROM sp_tenants WHERE tenant = ?", (tenant,)):
                    raise RegistryError(f"tenant {tenant!r} already exists", 409)
                self._refuse_orphans(conn, tenant)
                self._bump(conn)
                self._execute(
                    conn,
                    "INSERT INTO sp_tenants (tenant, key_hash, created) VALUES (?, ?, ?)",
                    (tenant, hash_key(key), time.time()),
                )

        self._run(work)
        return key

    def _refuse_orphans(self, conn: Any, tenant: str) -> None:
        """A registry written by an older softprompt (which let prompts be stored for a tenant that did not exist) may
        hold prompts under this name: a new tenant must not silently take them over."""
        orphans = self._query(conn, "SELECT COUNT(*) FROM sp_prompts WHERE tenant = ?", (tenant,))[0][0]
        if orphans:
            raise RegistryError(
                f"tenant {tenant!r} cannot be created: the registry holds {orphans} prompt version(s) stored under "
                f"that name while no such tenant existed; delete them with `softprompt registry tenant rm {tenant}` "
                "first",
                409,
            )

    def rotate_key(self, tenant: str) -> str:
        """A new API key for tenant; the old one stops working at once."""
        key = new_key()

        def work(conn: Any) -> None:
            with self._db.write(conn):
                self._bump(conn)
                changed = self._execute(
                    conn, "UPDATE sp_tenants SET key_hash = ? WHERE tenant = ?", (hash_key(key), tenant)
                )
                if changed == 0:
                    raise RegistryError(f"tenant {tenant!r} not found", 404)

        self._run(work)
        return key

    def delete_tenant(self, tenant: str) -> None:
        """Remove a tenant, its key and all its prompts (their version counters stay, so keys are never reused); also
        removes prompts an older registry stored under a name that has no tenant."""

        def work(conn: Any) -> None:
            with self._db.write(conn):
                self._bump(conn)
                removed = self._execute(conn, "DELETE FROM sp_prompts WHERE tenant = ?", (tenant,))
                removed += self._execute(conn, "DELETE FROM sp_tenants WHERE tenant = ?", (tenant,))
                self._execute(conn, "UPDATE sp_names SET public = 0 WHERE tenant = ?", (tenant,))
                if removed == 0:
                    raise RegistryError(f"tenant {tenant!r} not found", 404)

        self._run(work)

    def tenant_for_key(self, api_key: str) -> str | None:
        """The tenant whose API key this is, else None."""
        if not isinstance(api_key, str) or not 0 < len(api_key) <= MAX_KEY_CHARS:
            return None
        digest = hash_key(api_key)
        statement = "SELECT tenant, key_hash FROM sp_tenants WHERE key_hash = ?"
        rows = self._run(lambda conn: self._query(conn, statement, (digest,)))
        if rows and key_matches(api_key, rows[0][1]):
            return str(rows[0][0])
        return None

    def tenants(self) -> list[str]:
        rows = self._run(lambda conn: self._query(conn, "SELECT tenant FROM sp_tenants ORDER BY tenant"))
        return [str(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({redact(self.url)!r})"


def encode_row(tenant: str, name: str, blob: bytes, public: bool | None, method: str) -> tuple[Any, ...]:
    """What a row stores for a (validated) blob: its sha256 and its zlib-compressed bytes."""
    return tenant, name, blob, public, method, hashlib.sha256(blob).hexdigest(), zlib.compress(blob, 6)


def _ref(tenant: str, name: str, version: int | None) -> str:
    return f"{tenant}/{name}" + ("" if version is None else f"@{version}")


def _record(row: Sequence[Any]) -> PromptRecord:
    """A row -> record, with the blob decompressed (bounded) and its sha256 checked."""
    tenant, name, version, public, method, sha, created, data = row
    ref = _ref(tenant, name, version)
    try:
        inflate = zlib.decompressobj()
        blob = inflate.decompress(bytes(data), MAX_BLOB_BYTES)
        if inflate.unconsumed_tail or not inflate.eof:
            raise zlib.error("blob is truncated or larger than allowed")
    except zlib.error as err:
        raise RegistryError(f"prompt {ref} is corrupt in the registry: {err}", 500) from err
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha:
        raise RegistryError(f"prompt {ref} is corrupt in the registry: sha256 {digest} != stored {sha}", 500)
    return PromptRecord(str(tenant), str(name), int(version), bool(public), str(method), str(sha), float(created), blob)


# --- the cache of materialised prompts ------------------------------------------------------------------------------
class PromptCache:
    """LRU of loaded artifacts keyed by (record.key, sha256, model fingerprint); `capacity` entries.

    Which record a reference means ("name" = latest) is remembered too, and forgotten whenever the registry's
    generation changes (checked at most every `check_interval` seconds), so a new version, a deletion or a prompt
    made private is seen within about that interval, by every replica that reads the same database; a write made
    through this cache's own `registry` object is seen by the next lookup.
    """

    def __init__(
        self,
        registry: Registry,
        capacity: int = 1024,
        *,
        backbone: Backbone | None = None,
        check_interval: float = 0.2,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.registry = registry
        self.capacity = capacity
        self.backbone = backbone
        self.check_interval = check_interval
        self._fingerprint = backbone.fingerprint if backbone is not None else ""
        self._entries: OrderedDict[tuple[str, str, str], tuple[PromptRecord, PromptArtifact]] = OrderedDict()
        self._resolved: dict[tuple[str, str], PromptRecord] = {}
        self._lock = threading.Lock()
        self._generation = registry.generation()
        self._checked = time.monotonic()
        self._local_writes = registry.local_writes
        self.hits = 0
        self.misses = 0

    def get(self, caller: str, ref: str) -> tuple[PromptRecord, PromptArtifact]:
        """The record `ref` means to `caller` and its artifact (verified; checked against the backbone, if any)."""
        self._refresh()
        record = self._resolved.get((caller, ref))
        if record is None:
            seen = self._generation
            record = self.registry.resolve(caller, ref)
            with self._lock:
                # Remember it only if no change was noticed meanwhile: the row read may predate that change.
                if self._generation == seen:
                    if len(self._resolved) >= 8 * self.capacity:
                        self._resolved.clear()
                    self._resolved[(caller, ref)] = record
        entry_key = (record.key, record.sha256, self._fingerprint)
        with self._lock:
            entry = self._entries.get(entry_key)
            if entry is not None:
                self._entries.move_to_end(entry_key)
                self.hits += 1
                return entry
            self.misses += 1
        try:
            artifact = PromptArtifact.from_bytes(record.blob, self.backbone)
        except ArtifactError as err:
            raise RegistryError(f"prompt {record.key} cannot be used: {err}", 422) from err
        with self._lock:
            self._entries[entry_key] = (record, artifact)
            self._entries.move_to_end(entry_key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return record, artifact

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.registry.local_writes != self._local_writes:
            self._local_writes = self.registry.local_writes
            self._checked = 0.0  # our own write: look at the database now
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        generation = self.registry.generation()
        if generation != self._generation:
            with self._lock:
                self._generation = generation
                self._resolved.clear()

    def invalidate(self) -> None:
        """Forget every resolved reference now (the loaded artifacts stay; their keys are immutable)."""
        with self._lock:
            self._resolved.clear()
            self._checked = 0.0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "size": len(self._entries), "capacity": self.capacity}
