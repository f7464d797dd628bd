"""Shared set-up of the serving tests: a tiny causal model, prompts of several methods, lengths and tasks.

`make_registry()` is the one place that picks the registry: a fresh SQLite one in a temporary folder."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from softprompt.artifact import PromptArtifact
from softprompt.models.tiny import tiny_backbone
from softprompt.scoring import Scorer
from softprompt.serving.registry import PromptCache, Registry, open_registry
from softprompt.tasks.base import Example, Task

FIXTURES = Path(__file__).parent / "fixtures" / "format_v1"
SRC = Path(__file__).resolve().parents[1] / "src"

YES_NO = Task(name="yes-no", template="question : {text} ? answer :", labels=("no", "yes"), verbalizer=(" no", " yes"))
# label words of two tokens each: scored by the multi-token path
TWO_TOKEN = Task(name="two-token", template="text : {text} . it was", labels=("bad", "good"),
                 verbalizer=(" not good", " very good"))  # fmt: skip
TEXTS = ["the movie was very good and fun .", "bad", "a film : it is not boring", "great great", "awful !"]


def make_registry(tmp_path: Path | None = None) -> Registry:
    folder = tmp_path if tmp_path is not None else Path(tempfile.mkdtemp(prefix="softprompt-registry-"))
    return open_registry(f"sqlite:///{folder}/registry.db")


def make_cache(registry: Registry) -> PromptCache:
    return PromptCache(registry, capacity=64)


def backbone():
    """The tiny Llama the format-1 fixture prompts were tuned on (init 0.5, so prompts change the answer)."""
    return tiny_backbone("llama", init_scale=0.5)


def artifacts() -> dict[str, PromptArtifact]:
    """Prompts of three methods and three lengths (ULPT n=5, prompt tuning n=4, BBTv2 n=3 with deep prompts), on
    three tasks (single-token verbalizers of two vocabularies, and two-token label words)."""
    out = {m: PromptArtifact.from_pretrained(FIXTURES / d) for m, d in
           (("ulpt", "ulpt"), ("prompt_tuning", "prompt"), ("bbtv2", "bbtv2"))}  # fmt: skip
    out["ulpt_yes_no"] = dataclasses.replace(out["ulpt"], task=YES_NO)
    out["bbtv2_two_token"] = dataclasses.replace(out["bbtv2"], task=TWO_TOKEN)
    out["prompt_two_token"] = dataclasses.replace(out["prompt_tuning"], task=TWO_TOKEN)
    out["ulpt_gated"] = gated(out["ulpt"], -1.0)
    return out


def gated(artifact: PromptArtifact, gate: float) -> PromptArtifact:
    """`artifact`'s ULPT prompt behind an attention gate (ULPT --neutral-init, half open here, so it shows)."""
    from softprompt.prompts import build_prompt

    prompt = build_prompt(dataclasses.replace(artifact.prompt.config, neutral_init=True), artifact.prompt.hidden_size)
    prompt.load_state_tensors({**artifact.prompt.state_tensors(), "gate": torch.tensor([gate])})
    return dataclasses.replace(artifact, prompt=prompt)


def alone_probabilities(bb, artifact: PromptArtifact, text: str) -> torch.Tensor:
    """Ground truth: the library's Scorer on this one text with this prompt alone (no engine, no cache)."""
    scorer = Scorer(bb, artifact.task)
    with torch.no_grad():
        scores = scorer.label_scores(scorer.encode([Example(text)]), artifact.prompt.materialize())
    return torch.softmax(scores[0].float(), -1)


def as_vector(classification, task: Task) -> torch.Tensor:
    return torch.tensor([classification.scores[name] for name in task.labels])


@contextlib.contextmanager
def live_server(app):
    """uvicorn serving `app` on a free 127.0.0.1 port in a thread; yields the base URL, stops it afterwards."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_exchange(host: str, port: int, request: bytes) -> tuple[str, dict]:
    """Send `request` as is and read the answer to the server's close: (status line, JSON body)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m softprompt serve` as a child process on a free port (this checkout's src first on the path).

    `start()` waits (bounded) until /healthz answers; `kill9()` is SIGKILL; `stop()` always ends the child. Use it as
    a context manager so the child never outlives the test."""

    def __init__(self, model: str | Path, registry: str, log: Path, admin_key: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "softprompt", "serve", "--model", str(model), "--registry", registry,
                     "--port", str(self.port), "--max-wait-ms", "2", "--log-level", "warning", *extra]  # fmt: skip
        path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env = {**os.environ, "PYTHONPATH": path, "SOFTPROMPT_ADMIN_KEY": admin_key, "OMP_NUM_THREADS": "1"}
        self.log, self.proc = log, None

    def start(self, timeout: float = 120) -> ServeProcess:
        import httpx

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer /healthz within {timeout:g} s:\n{self.log_tail()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
