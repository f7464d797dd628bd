"""Registry at scale: insert rate, lookup latency (PromptCache hit / cold) and disk size at 10⁴, 10⁵, 10⁶ prompts.

    per-prompt disk = (database + WAL bytes after a checkpoint) / prompts stored

Prompts are synthetic ULPT r=2, n=100 prompts for SmolLM2-135M (hidden size 576) with the SST-2 task attached: the
metadata of one template artifact, with every tensor number redrawn (random float32, so nothing compresses that a
trained prompt would not) and both checksums recomputed — each blob is a valid artifact that `from_bytes` accepts.

Three insert rates are measured:
  * `put`       one validated (`from_bytes`) and durable (synchronous=FULL commit) put per call: what the CLI and the
                server do;
  * `put_many`  1,000 validated puts in one transaction;
  * `fill`      the bulk fill that grows the database to each size: rows encoded exactly like `put` (sha256 + zlib),
                10,000 per transaction, without the `from_bytes` validation (`put`'s rate above includes it), cycling
                through a pool of 10⁴ distinct encoded blobs (storage and lookup cost do not depend on uniqueness).
Lookups, at each size, on keys drawn uniformly from everything stored:
  * `cache hit`  `PromptCache.get(caller, ref)` for refs already loaded (capacity 1,024);
  * `cold`       `Registry.resolve(caller, ref)`: primary-key read, decompress, sha256 check (database pages may be in
                 the OS page cache, as on a serving machine);
  * `cold, no OS cache`  the same right after `posix_fadvise(DONTNEED)` drops the database file's cached pages;
  * `load`       `PromptArtifact.from_bytes` of the record (what a PromptCache miss adds on top of `cold`).

    python bench/registry_scale.py                       # 10^4, 10^5, 10^6 (SQLite; ~7 GB in --dir)
    python bench/registry_scale.py --sizes 10000 --dir /tmp/x   # a quick run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_results

from softprompt.artifact import BLOB_MAGIC, CHECKSUM, PromptArtifact, metadata_digest
from softprompt.prompts import ULPTConfig, build_prompt
from softprompt.safeio import dumps_strict, parse_json
from softprompt.serving.registry import PromptCache, Registry, encode_row, open_registry
from softprompt.tasks.builtin import get_task

SMOLLM2 = {
    "name": "smollm2-135m-instruct",
    "kind": "causal",
    "hidden_size": 576,
    "num_layers": 30,
    "vocab_size": 49152,
    "fingerprint": "synthetic0000000",
}
TENANTS = 1000


def template_artifact() -> PromptArtifact:
    prompt = build_prompt(ULPTConfig(prompt_len=100, rank=2), 576)
    prompt.initialize(None, 0)
    metrics = {"validation": {"accuracy": 0.9}, "test": {"accuracy": 0.9}, "best_step": 1000}
    extra = {"train": {"steps": 2000, "batch_size": 16, "lr": 0.03, "seed": 0}}
    return PromptArtifact(prompt, SMOLLM2, get_task("sst2"), metrics, extra)


class BlobFactory:
    """Valid artifact blobs from one template: new tensor numbers, recomputed tensor and metadata checksums."""

    def __init__(self, seed: int = 0) -> None:
        metadata_bytes, tensor_bytes = template_artifact().encode()
        self.metadata = parse_json(metadata_bytes)
        self.metadata.pop(CHECKSUM)
        header = 8 + int.from_bytes(tensor_bytes[:8], "little")
        self.header, self.numbers = tensor_bytes[:header], (len(tensor_bytes) - header) // 4
        self.rng = np.random.default_rng(seed)

    def blobs(self, count: int) -> list[bytes]:
        data = self.rng.standard_normal((count, self.numbers), dtype=np.float32)
        out = []
        for row in data:
            tensors = self.header + row.tobytes()
            self.metadata["tensors_sha256"] = hashlib.sha256(tensors).hexdigest()
            meta = dict(self.metadata)
            meta[CHECKSUM] = metadata_digest(meta)
            metadata = (dumps_strict(meta) + "\n").encode()
            out.append(BLOB_MAGIC + len(metadata).to_bytes(4, "little") + metadata + tensors)
        return out


def ref_of(i: int) -> tuple[str, str]:
    return f"t{i % TENANTS}", f"p{i}"


def fill(registry: Registry, pool: list[tuple], start: int, stop: int, batch: int = 10_000) -> float:
    """Rows start..stop-1, each a new (tenant, name) holding the encoded blob pool[i % len(pool)]."""
    began = time.perf_counter()
    for first in range(start, stop, batch):
        rows = []
        for i in range(first, min(stop, first + batch)):
            tenant, name = ref_of(i)
            _, _, blob, public, method, sha, data = pool[i % len(pool)]
            rows.append((tenant, name, blob, public, method, sha, data))
        registry._store(rows)
        print(f"  filled {first + len(rows):,}", file=sys.stderr, flush=True)
    return (stop - start) / (time.perf_counter() - began)


def disk_bytes(path: Path, registry: Registry) -> int:
    registry._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def drop_os_cache(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def percentiles(samples: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    """p50/p99 of wall time, and of the thread's CPU time (what is left once other processes' preemptions of this
    one, frequent on a shared 2-core machine, are taken out)."""
    ms = np.array(samples) * 1e3
    out = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(samples)}
    if cpu is not None:
        cpu_ms = np.array(cpu) * 1e3
        out |= {"cpu_p50_ms": float(np.percentile(cpu_ms, 50)), "cpu_p99_ms": float(np.percentile(cpu_ms, 99))}
    return out


def time_calls(call, args_list: list) -> dict[str, float]:
    wall, cpu = [], []
    for args in args_list:
        t, c = time.perf_counter(), time.thread_time()
        call(*args)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return percentiles(wall, cpu)


def measure(registry: Registry, path: Path | None, stored: int, lookups: int, rng: random.Random) -> dict:
    refs = [ref_of(rng.randrange(stored)) for _ in range(lookups)]
    result: dict = {}
    result["cold"] = time_calls(lambda tenant, name: registry.resolve(tenant, name), refs)
    if path is not None:

        def dropped_then_resolved(tenant: str, name: str) -> None:
            drop_os_cache(path)
            t = time.perf_counter()
            registry.resolve(tenant, name)
            samples.append(time.perf_counter() - t)

        samples: list[float] = []
        for tenant, name in refs[: max(50, lookups // 10)]:
            dropped_then_resolved(tenant, name)
        result["cold_no_os_cache"] = percentiles(samples)
    records = [registry.resolve(t, n) for t, n in refs[:200]]
    result["load"] = time_calls(lambda r: PromptArtifact.from_bytes(r.blob), [(r,) for r in records])
    cache = PromptCache(registry, capacity=1024)
    hot = refs[:1000]
    for tenant, name in hot:
        cache.get(tenant, name)
    hits = [rng.choice(hot) for _ in range(lookups)]
    result["cache_hit"] = time_calls(lambda tenant, name: cache.get(tenant, name), hits)
    result["cache_stats"] = cache.stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dir", help="folder for the SQLite database (default: a temporary folder, removed after)")
    parser.add_argument("--url", help="measure this registry URL instead (e.g. postgresql://...; it must be empty)")
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--puts", type=int, default=200, help="single validated puts to time")
    parser.add_argument("--pool", type=int, default=10_000, help="distinct blobs the fill cycles through")
    parser.add_argument("--name", default="registry_scale")
    args = parser.parse_args()
    torch.set_num_threads(1)

    folder = Path(args.dir or tempfile.mkdtemp(prefix="registry-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = None if args.url else folder / "registry.db"
    if path is not None and path.exists():
        raise SystemExit(f"{path} exists; use an empty --dir")
    registry = open_registry(args.url or f"sqlite:///{path}")
    for tenant in ("bench", *(f"t{i}" for i in range(TENANTS))):  # prompts are stored only for existing tenants
        registry.create_tenant(tenant)
    factory = BlobFactory()
    rng = random.Random(0)
    blob_bytes = len(factory.blobs(1)[0])

    # insert rates through the real validated paths, on the empty registry (namespaced apart from the fill)
    blobs = factory.blobs(args.puts)
    t = time.perf_counter()
    for i, blob in enumerate(blobs):
        registry.put("bench", f"single{i}", blob)
    put_rate = args.puts / (time.perf_counter() - t)
    blobs = factory.blobs(1000)
    t = time.perf_counter()
    registry.put_many([("bench", f"many{i}", blob, False) for i, blob in enumerate(blobs)])
    put_many_rate = 1000 / (time.perf_counter() - t)
    print(f"put {put_rate:.0f}/s, put_many {put_many_rate:.0f}/s", file=sys.stderr)

    # The fill cycles through a pool of distinct valid blobs, encoded once (sha256 + zlib, as `put` does): what a
    # row costs to store and to look up does not depend on its bytes being unique, and encoding 10^6 blobs on a
    # busy 2-core machine would take longer than the inserts themselves.
    t = time.perf_counter()
    pool = [encode_row("", "", blob, False, "ulpt") for blob in factory.blobs(args.pool)]
    encode_rate = args.pool / (time.perf_counter() - t)
    rows, stored, extra = [], 0, args.puts + 1000
    for size in sorted(args.sizes):
        fill_rate = fill(registry, pool, stored, size)
        stored = size
        total = disk_bytes(path, registry) if path is not None else None
        result = {
            "prompts": size + extra,
            "fill_per_s": fill_rate,
            "disk_bytes": total,
            "bytes_per_prompt": None if total is None else total / (size + extra),
            **measure(registry, path, size, args.lookups, rng),
        }
        print(result, file=sys.stderr, flush=True)
        rows.append(result)
    registry.close()
    if not args.dir and path is not None:
        shutil.rmtree(folder, ignore_errors=True)

    def cell(x: float | None, fmt: str = "{:.3f}") -> str:
        return "n/a" if x is None else fmt.format(x)

    table = markdown_table(
        ["prompts", "fill/s", "KB per prompt", "cache hit p50 / p99 ms (CPU p99)", "cold p50 / p99 ms (CPU p99)",
         "cold, no OS cache p50 / p99 ms", "load (from_bytes) p50 / p99 ms"],
        [
            [f"{r['prompts']:,}", cell(r["fill_per_s"], "{:,.0f}"),
             cell(None if r["bytes_per_prompt"] is None else r["bytes_per_prompt"] / 1024, "{:.2f}"),
             f"{r['cache_hit']['p50_ms']:.4f} / {r['cache_hit']['p99_ms']:.4f} ({r['cache_hit']['cpu_p99_ms']:.4f})",
             f"{r['cold']['p50_ms']:.3f} / {r['cold']['p99_ms']:.3f} ({r['cold']['cpu_p99_ms']:.3f})",
             "n/a" if "cold_no_os_cache" not in r else
             f"{r['cold_no_os_cache']['p50_ms']:.3f} / {r['cold_no_os_cache']['p99_ms']:.3f}",
             f"{r['load']['p50_ms']:.2f} / {r['load']['p99_ms']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    machine = machine_info()
    backend = "PostgreSQL" if args.url else "SQLite (WAL, synchronous=FULL)"
    markdown = (
        f"{backend}; synthetic ULPT r=2, n=100 prompts for SmolLM2-135M with the SST-2 task: {blob_bytes} bytes "
        f"per artifact blob (stored zlib-compressed). {TENANTS} tenants. Targets: lookup p99 < 1 ms from the "
        "cache, < 5 ms cold at 10⁶; ≤ 8 KB per prompt on disk.\n\n"
        f"Insert rates on the empty registry: `put` (validated, durable, one per commit) {put_rate:,.0f}/s; "
        f"`put_many` (validated, 1,000 per commit) {put_many_rate:,.0f}/s. `fill` in the table: pre-encoded rows "
        f"(sha256 + zlib as `put` does, not validated), 10,000 per commit, cycling through {args.pool:,} distinct "
        f"valid blobs (generating and encoding one: {encode_rate:,.0f}/s).\n\n" + table + "\n\n"
        "CPU p99 = the 99th percentile of the thread's CPU time per call: the wall-time p99 on a shared machine "
        f"includes waits for a core (load average at the end, 1/5/15 min: {machine.get('load_average_1_5_15min')}).\n"
        "cold = `Registry.resolve` (primary-key read + decompress + sha256 check), pages possibly in the OS cache; "
        "no OS cache = the database file's pages dropped (posix_fadvise) before each lookup; load = "
        "`PromptArtifact.from_bytes`, which a cache miss adds to cold.\n"
    )
    write_results(
        args.name,
        {
            "blob_bytes": blob_bytes,
            "put_per_s": put_rate,
            "put_many_per_s": put_many_rate,
            "generate_and_encode_per_s": encode_rate,
            "pool": args.pool,
            "sizes": rows,
        },
        markdown,
        machine,
    )


if __name__ == "__main__":
    main()
