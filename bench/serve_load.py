"""Closed-loop load test of `softprompt serve` on 127.0.0.1, with a kill -9 and restart of the server mid-run.

Set-up: a tiny random Llama saved to a temporary folder (so the server is the real `softprompt serve` process, loading
it like any model folder), a SQLite registry, `--tenants` tenants created with the admin key and `--prompts` ULPT
prompts registered over HTTP (spread evenly over the tenants). Then, for `--seconds`:

  clients     `--clients` threads, each in a closed loop: a random tenant classifies 1-4 SST-2-length texts with one
              of its own prompts (or another tenant's public one), waiting for each answer before the next request
  writer      one thread registering new prompts (new names and new versions) for random tenants all the time;
              every write the server acknowledged (201) is remembered with its sha256
  kill        at `--kill-at` seconds the server gets SIGKILL and is started again on the same registry

Reported: requests/s (successful requests over the whole run, restart included), p50/p99 latency of successful
requests, errors outside the restart window (from the kill until the restarted server answers /healthz, plus one
second), errors inside it, and acknowledged registrations that are missing (or differ) after the run — every one is
read back through the restarted server. Targets: 0 errors outside the window, 0 acknowledged writes lost.

Needs softprompt.serving.registry (SQLite). The model is tiny on purpose: this measures the server (HTTP, auth,
registry, batching, restart), not the model's speed, which bench/mixed_batch.py and bench/prefix_cache.py measure.

    python bench/serve_load.py                       # 100 tenants, 1,000 prompts, 8 clients, 60 s, kill at 25 s
    python bench/serve_load.py --seconds 20 --kill-at 8 --prompts 200 --tenants 20   # a quick check
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results
from serving_setup import sst2_sentences

from softprompt.api import new_prompt
from softprompt.artifact import PromptArtifact
from softprompt.models import load_backbone
from softprompt.prompts import ULPTConfig
from softprompt.tasks.base import Task

ADMIN = "bench-admin-key"
SRC = Path(__file__).resolve().parents[1] / "src"
TASK = Task(name="sentiment", template="review : {text} . sentiment :", labels=("negative", "positive"),
            verbalizer=(" bad", " good"))  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: Path, registry: str, port: int, log: Path) -> None:
        self.args = [sys.executable, "-m", "softprompt", "serve", "--model", str(model), "--registry", registry,
                     "--port", str(port), "--max-batch", "32", "--max-wait-ms", "5",
                     "--log-level", "warning"]  # fmt: skip
        self.env = {**os.environ, "PYTHONPATH": str(SRC), "SOFTPROMPT_ADMIN_KEY": ADMIN, "OMP_NUM_THREADS": "1"}
        self.url, self.log, self.proc = f"http://127.0.0.1:{port}", log, None

    def start(self) -> float:
        """Start and wait until /healthz answers; returns the time it did."""
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer within 300 s; see {self.log}")

    def kill9(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def make_blobs(backbone, count: int, seed: int) -> list[bytes]:
    out = []
    for i in range(count):
        prompt = new_prompt(ULPTConfig(prompt_len=8, rank=2, projection_seed=seed + i), backbone, seed=seed + i)
        out.append(PromptArtifact(prompt, backbone.describe(), TASK).to_bytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=25.0)
    parser.add_argument("--name", default="serve_load")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from softprompt.models.tiny import tiny_causal_lm, tiny_tokenizer

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    tokenizer = tiny_tokenizer()
    tiny_causal_lm("llama", vocab_size=len(tokenizer), init_scale=0.5).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    backbone = load_backbone(str(work / "model"))
    per_tenant = max(1, args.prompts // args.tenants)
    made = time.perf_counter()
    blobs = make_blobs(backbone, args.tenants * per_tenant, 0)
    spare = make_blobs(backbone, 64, 10**6)  # what the writer uploads during the run (reused cyclically)
    made = time.perf_counter() - made
    server = ServerProcess(work / "model", f"sqlite:///{work / 'registry.db'}", free_port(), work / "server.log")
    server.start()
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    keys = {f"t{i}": admin.post("/v1/tenants", json={"tenant": f"t{i}"}).json()["api_key"] for i in range(args.tenants)}
    tenants = sorted(keys)

    def register(job: tuple[int, bytes]) -> None:
        i, blob = job
        tenant = tenants[i % len(tenants)]
        headers = {"Authorization": f"Bearer {keys[tenant]}", "Content-Type": "application/octet-stream"}
        r = httpx.post(f"{server.url}/v1/prompts/p{i // len(tenants)}", content=blob, timeout=60,
                       params={"public": str(i % 10 == 0).lower()}, headers=headers)  # fmt: skip
        r.raise_for_status()

    setup = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(register, enumerate(blobs)))
    setup = time.perf_counter() - setup

    texts = sst2_sentences(200)
    stop = threading.Event()
    lock = threading.Lock()
    requests: list[tuple[float, float, int | str]] = []  # (start, end, status or exception name)
    acknowledged: list[tuple[str, str, int, str]] = []  # (tenant, name, version, sha256)
    write_errors: list[tuple[float, str]] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        http = httpx.Client(base_url=server.url, timeout=30)
        while not stop.is_set():
            t = rng.randrange(args.tenants)
            tenant = tenants[t]
            if rng.random() < 0.1:  # another tenant's public prompt (tenant index divisible by 10 owns p0..)
                owner = rng.randrange(0, len(blobs), 10)
                ref = f"{tenants[owner % len(tenants)]}/p{owner // len(tenants)}"
            else:
                ref = f"p{rng.randrange(per_tenant)}"
            body = {"model": ref, "texts": rng.sample(texts, rng.randint(1, 4))}
            start = time.monotonic()
            try:
                headers = {"Authorization": f"Bearer {keys[tenant]}"}
                status: int | str = http.post("/v1/classify", json=body, headers=headers).status_code
            except httpx.HTTPError as err:
                status = type(err).__name__
                time.sleep(0.05)  # server down: retry soon, without spinning
            with lock:
                requests.append((start, time.monotonic(), status))

    def writer() -> None:
        rng = random.Random(99)
        http = httpx.Client(base_url=server.url, timeout=30)
        i = 0
        while not stop.is_set():
            tenant = tenants[rng.randrange(args.tenants)]
            name = f"new{rng.randrange(50)}"
            try:
                r = http.post(f"/v1/prompts/{name}", content=spare[i % len(spare)], headers={
                    "Authorization": f"Bearer {keys[tenant]}", "Content-Type": "application/octet-stream"})  # fmt: skip
                if r.status_code == 201:
                    meta = r.json()
                    with lock:
                        acknowledged.append((tenant, name, meta["version"], meta["sha256"]))
                else:
                    write_errors.append((time.monotonic(), str(r.status_code)))
            except httpx.HTTPError as err:
                write_errors.append((time.monotonic(), type(err).__name__))
                time.sleep(0.05)
            i += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
    threads.append(threading.Thread(target=writer))
    began = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.kill_at)
    killed = server.kill9()
    up = server.start()
    time.sleep(max(0.0, began + args.seconds - time.monotonic()))
    stop.set()
    for t in threads:
        t.join()
    ended = time.monotonic()

    window = (killed, up + 1.0)
    ok = [(s, e) for s, e, status in requests if status == 200]
    failed = [(s, e, status) for s, e, status in requests if status != 200]
    outside = [f for f in failed if not window[0] <= f[1] <= window[1]]
    latencies = sorted(e - s for s, e in ok)
    lost = []
    for tenant, name, version, sha in acknowledged:
        r = httpx.get(f"{server.url}/v1/prompts/{name}@{version}", headers={"Authorization": f"Bearer {keys[tenant]}"})
        if r.status_code != 200 or r.json()["sha256"] != sha:
            lost.append(f"{tenant}/{name}@{version}")
    server.stop()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    results = {
        "settings": {
            "tenants": args.tenants,
            "prompts": len(blobs),
            "clients": args.clients,
            "seconds": args.seconds,
            "kill_at": args.kill_at,
            "model": "tiny random Llama (saved to a folder)",
            "registry": "sqlite",
            "texts_per_request": "1-4 SST-2 dev sentences",
        },
        "setup_seconds": {"make_artifacts": made, "register_over_http": setup},
        "duration_s": ended - began,
        "restart_s": up - killed,
        "requests_ok": len(ok),
        "requests_per_second": len(ok) / (ended - began),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "mean": statistics.mean(latencies) * 1000 if ok else None},
        "errors_outside_restart_window": len(outside),
        "errors_outside_examples": [str(f[2]) for f in outside[:10]],
        "errors_inside_restart_window": len(failed) - len(outside),
        "writes_acknowledged": len(acknowledged),
        "write_errors": len(write_errors),
        "writes_lost": len(lost),
        "lost_examples": lost[:10],
        "targets": {"errors_outside_restart_window": 0, "writes_lost": 0},
    }
    table = markdown_table(
        ["requests/s", "p50 ms", "p99 ms", "errors outside restart", "errors in restart window", "restart s",
         "writes acked", "writes lost"],
        [[f"{results['requests_per_second']:.1f}", f"{pct(0.5):.1f}", f"{pct(0.99):.1f}", len(outside),
          len(failed) - len(outside), f"{up - killed:.1f}", len(acknowledged), len(lost)]],
    )  # fmt: skip
    note = (f"`softprompt serve` (subprocess, SQLite registry, tiny random Llama) on 127.0.0.1: {args.tenants} tenants,"
            " "
            f"{len(blobs)} prompts registered over HTTP before the run, {args.clients} closed-loop clients classifying "
            f"1-4 texts per request and one writer registering new prompts/versions throughout, {args.seconds:g} s, "
            f"kill -9 at {args.kill_at:g} s and restart on the same registry.")  # fmt: skip
    write_results(args.name, results, f"{note}\n\n{table}\n")
    print(note)
    print(table)


if __name__ == "__main__":
    main()
