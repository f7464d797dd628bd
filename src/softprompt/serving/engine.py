"""The serving engine: many tenants' prompts on one frozen model, one forward pass per batch.

    request = classify(caller, ref, texts)  |  complete(caller, ref, text, GenerationOptions)
    batch   = requests taken from one bounded queue until max_batch_rows rows wait or max_wait_ms has passed
    row     = one text with its own prompt; rows of any method and length stack into one `PromptInputs`

One worker thread owns the model; callers get a `Future`. A full queue raises `QueueFull` at once (HTTP 429).

Classification in a mixed batch (rows of different prompts, hence possibly different tasks): every row is rendered
with its own prompt's task template and all rows run in ONE forward pass. Verbalizers may differ, so the batch scores
the *union* of its single-token label words at the answer position (one K-row LM-head matmul) and each row keeps
its own C columns: a restricted softmax over the row's labels, exactly `Scorer.label_scores` for that row alone.
Rows of a task whose label words span several tokens are expanded once per label with the label teacher-forced (the
Scorer's multi-token path) inside the same forward pass. Label tokens come from each task's `Scorer`.

Generation: requests with equal decoding options (max_new_tokens, sampling settings, stop strings) share one
`Backbone.generate` call (batched KV cache). A seeded sampling request runs alone, so its text does not depend on
what else was queued. Streaming: a request with `on_delta` gets its row's new text from the decoding loop itself
(`Backbone.generate(on_step=...)` -> `TextStream` -> on_delta, called in the engine's thread) while the batch is
still decoding; the deltas join to exactly the completion's text, which the future then returns as usual.

Prompt prefix cache (causal models only; other families and key/value prefixes bypass it): a decoder's
prompt positions never attend to the text, so a prompt's keys and values (`Backbone.as_prefix`) are
computed once and stand in for it in every row. Key: (record.key = "tenant/name@version", record.sha256,
backbone.fingerprint), so two tenants' prompts of one name, two versions, or one blob on another model never share
an entry. Bounded in bytes, least recently used out first.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from softprompt.artifact import ArtifactError, PromptArtifact, check_model
from softprompt.models.backbone import Backbone, GenerationOptions, TextStream
from softprompt.models.inputs import PromptInputs
from softprompt.scoring import Scorer
from softprompt.tasks.base import Example, Task


class QueueFull(RuntimeError):
    """The engine's queue holds its maximum number of rows; try again later (HTTP 429)."""


class PromptRecordLike(Protocol):
    tenant: str
    name: str
    version: int
    sha256: str

    @property
    def key(self) -> str: ...


class PromptSource(Protocol):
    """What the engine needs from the registry's prompt cache (`softprompt.serving.registry.PromptCache`)."""

    def get(self, caller: str, ref: str) -> tuple[PromptRecordLike, PromptArtifact]: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EngineConfig:
    max_batch_rows: int = 64  # rows per forward pass (a classification text, or one generation request, is a row)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue_rows: int = 4096  # rows waiting beyond which new requests get QueueFull
    prefix_cache: bool = True
    prefix_cache_bytes: int = 1 << 30
    strict_model: bool = True  # prompts must carry the served model's fingerprint (else only the hidden size)

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1 or self.max_queue_rows < 1 or self.max_wait_ms < 0 or self.prefix_cache_bytes < 0:
            raise ValueError(f"invalid engine limits: {self}")


@dataclass
class Classification:
    label: str
    scores: dict[str, float]  # label -> probability


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int  # tokens of the returned text (re-tokenised)
    finish_reason: Literal["stop", "length"]


@dataclass
class _Request:
    kind: Literal["classify", "generate"]
    record: PromptRecordLike
    artifact: PromptArtifact
    texts: list[str]  # model inputs, already rendered
    options: GenerationOptions | None
    on_delta: Callable[[str], None] | None = None  # streaming: called with each new piece of the text
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.texts)


class PreparedPrompts:
    """LRU of model-ready prompts keyed by (record key, blob sha256, model fingerprint), bounded in bytes.

    With `prefix=True` (causal models) an entry is the prompt's key/value prefix, else its materialised inputs."""

    def __init__(self, backbone: Backbone, max_bytes: int, prefix: bool) -> None:
        self.backbone, self.max_bytes = backbone, max_bytes
        self.prefix = prefix and backbone.prefix_in_cache
        self._entries: OrderedDict[tuple[str, str, str], tuple[PromptInputs, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = self.hits = self.misses = self.bypassed = 0

    @staticmethod
    def key(record: PromptRecordLike, backbone: Backbone) -> tuple[str, str, str]:
        return (record.key, record.sha256, backbone.fingerprint)

    @torch.inference_mode()
    def get(self, record: PromptRecordLike, artifact: PromptArtifact) -> PromptInputs:
        key = self.key(record, self.backbone)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
            self.misses += 1
        materialized = artifact.prompt.materialize().detach().to(self.backbone.device, self.backbone.dtype)
        inputs = self.backbone.as_prefix(materialized) if self.prefix else materialized
        if inputs is materialized:
            self.bypassed += 1
        size = _nbytes(inputs)
        with self._lock:
            if size <= self.max_bytes:
                self._entries[key] = (inputs, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self.bytes -= dropped
        return inputs

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"mode": "prefix" if self.prefix else "inputs", "entries": len(self._entries), "bytes": self.bytes,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                    "bypassed": self.bypassed}  # fmt: skip


def _nbytes(inputs: PromptInputs) -> int:
    return sum(t.numel() * t.element_size() for t in vars(inputs).values() if isinstance(t, torch.Tensor))


class Engine:
    """A dynamic batcher in front of one backbone. Thread-safe: call `classify`/`complete` from any thread."""

    def __init__(self, backbone: Backbone, prompts: PromptSource, config: EngineConfig | None = None) -> None:
        self.backbone, self.source = backbone, prompts
        self.config = config or EngineConfig()
        self.prepared = PreparedPrompts(backbone, self.config.prefix_cache_bytes, self.config.prefix_cache)
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._scorers: dict[str, Scorer] = {}
        self._checked: set[tuple[str, str]] = set()
        self.batches = self.rows = self.forward_passes = 0  # counters for metrics and tests
        self.last_batch_rows = 0
        self._worker = threading.Thread(target=self._loop, name="softprompt-engine", daemon=True)
        self._worker.start()

    # --- public API ------------------------------------------------------------------------------------------------
    def resolve(self, caller: str, ref: str) -> tuple[PromptRecordLike, PromptArtifact]:
        """The caller's prompt `ref` (own or public), checked to fit the served model."""
        record, artifact = self.source.get(caller, ref)
        if (record.key, record.sha256) not in self._checked:
            self.check_artifact(artifact)
            if len(self._checked) >= 1 << 16:
                self._checked.clear()
            self._checked.add((record.key, record.sha256))
        return record, artifact

    def check_artifact(self, artifact: PromptArtifact) -> None:
        """ArtifactError unless the prompt was made for the served model (fingerprint, hidden size, depth)."""
        meta = {"hidden_size": artifact.prompt.hidden_size, "model": artifact.model}
        check_model(meta, self.backbone, strict=self.config.strict_model)
        layers = getattr(artifact.prompt.config, "num_layers", None)
        if layers is not None and layers != self.backbone.num_layers:
            raise ArtifactError(f"prompt has {layers} layers of deep prompts, the model {self.backbone.num_layers}")

    def submit_classify(self, caller: str, ref: str, texts: Sequence[str]) -> Future:
        """Future of one `Classification` per text, under the prompt's task (template, labels, verbalizer)."""
        if not texts:
            raise ValueError("no texts to classify")
        record, artifact = self.resolve(caller, ref)
        task = artifact.task
        if task is None or task.kind != "classification":
            raise ValueError(f"prompt {record.key} is not a classification prompt; use completions")
        self.scorer(task)  # a verbalizer the model cannot score fails here, before queueing
        rendered = [task.render(Example(t)) for t in texts]
        return self._submit(_Request("classify", record, artifact, rendered, None))

    def submit_complete(
        self,
        caller: str,
        ref: str,
        text: str,
        options: GenerationOptions,
        *,
        use_template: bool = False,
        on_delta: Callable[[str], None] | None = None,
    ) -> Future:
        """Future of one `Completion` of `text` (rendered with the prompt's task template if `use_template`).

        `on_delta(piece)`, if given, receives the text as it is generated (from the engine's thread; keep it quick),
        all pieces before the future completes; they join to the completion's text."""
        record, artifact = self.resolve(caller, ref)
        if use_template and artifact.task is not None:
            text = artifact.task.render(Example(text))
        return self._submit(_Request("generate", record, artifact, [text], options, on_delta))

    def classify(
        self, caller: str, ref: str, texts: Sequence[str], timeout: float | None = None
    ) -> list[Classification]:
        return self.submit_classify(caller, ref, texts).result(timeout)

    def complete(self, caller: str, ref: str, text: str, options: GenerationOptions | None = None,
                 timeout: float | None = None, use_template: bool = False) -> Completion:  # fmt: skip
        return self.submit_complete(
            caller, ref, text, options or GenerationOptions(), use_template=use_template
        ).result(timeout)

    def count_tokens(self, text: str) -> int:
        return len(self.backbone.tokenize(text))

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = self._queued_rows
        return {"queued_rows": queued, "batches": self.batches, "rows": self.rows,
                "forward_passes": self.forward_passes, "prefix_cache": self.prepared.stats()}  # fmt: skip

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=30)

    def scorer(self, task: Task) -> Scorer:
        """One Scorer per task definition (its label tokens are tokenised once)."""
        key = json.dumps(task.to_dict(), sort_keys=True)
        scorer = self._scorers.get(key)
        if scorer is None:
            scorer = Scorer(self.backbone, task)
            if len(self._scorers) >= 4096:
                self._scorers.clear()
            self._scorers[key] = scorer
        return scorer

    # --- queue -----------------------------------------------------------------------------------------------------
    def _submit(self, request: _Request) -> Future:
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            if self._queued_rows + request.rows > self.config.max_queue_rows:
                raise QueueFull(f"queue full ({self._queued_rows} rows waiting); retry later")
            self._queue.append(request)
            self._queued_rows += request.rows
            self._cond.notify_all()
        return request.future

    def _take(self) -> list[_Request] | None:
        limit, wait = self.config.max_batch_rows, self.config.max_wait_ms / 1000
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].enqueued + wait
            while self._queued_rows < limit and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].rows <= limit):
                request = self._queue.popleft()
                batch.append(request)
                rows += request.rows
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop timed-out requests
            try:
                self._run(batch)
            except Exception as err:
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(err)

    def _run(self, batch: list[_Request]) -> None:
        self.batches += 1
        self.last_batch_rows = sum(r.rows for r in batch)
        self.rows += self.last_batch_rows
        rows = [(r, i) for r in batch if r.kind == "classify" for i in range(r.rows)]
        results: dict[int, list[Classification | None]] = {id(r): [None] * r.rows for r in batch}
        for start in range(0, len(rows), self.config.max_batch_rows):
            part = rows[start : start + self.config.max_batch_rows]
            try:
                for (request, i), out in zip(part, self._classify(part), strict=True):
                    results[id(request)][i] = out
            except Exception as err:
                for request, _ in part:
                    if not request.future.done():
                        request.future.set_exception(err)
        for r in batch:
            if r.kind == "classify" and not r.future.done():
                r.future.set_result(results[id(r)])
        groups: dict[Any, list[_Request]] = {}
        for r in batch:
            if r.kind == "generate":
                alone = r.options.do_sample and r.options.seed is not None
                groups.setdefault(id(r) if alone else r.options, []).append(r)
        for group in groups.values():
            for start in range(0, len(group), self.config.max_batch_rows):
                part = group[start : start + self.config.max_batch_rows]
                try:
                    for request, out in zip(part, self._generate(part), strict=True):
                        request.future.set_result(out)
                except Exception as err:
                    for request in part:
                        if not request.future.done():
                            request.future.set_exception(err)

    # --- the model ---------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _classify(self, rows: list[tuple[_Request, int]]) -> list[Classification]:
        texts, conts, prompts, plan = [], [], [], []
        for request, i in rows:
            scorer = self.scorer(request.artifact.task)
            prompt = self.prepared.get(request.record, request.artifact)
            labels = [[]] if scorer.single_token else scorer.label_tokens  # multi-token: one row per label
            plan.append((scorer, len(texts), len(labels)))
            for cont in labels:
                texts.append(request.texts[i])
                conts.append(cont)
                prompts.append(prompt)
        hidden = self.backbone.hidden_states(self.backbone.encode(texts, conts), PromptInputs.stack(prompts))
        self.forward_passes += 1
        union = sorted({int(t) for scorer, _, _ in plan if scorer.single_token for t in scorer.label_ids})
        column = {t: j for j, t in enumerate(union)}
        first = torch.tensor([start for scorer, start, _ in plan if scorer.single_token], dtype=torch.long)
        if union:
            label_logits = self.backbone.logits(hidden[first.to(hidden.device), 0], torch.tensor(union)).float().cpu()
        out, k = [], 0
        for scorer, start, count in plan:
            if scorer.single_token:
                scores = label_logits[k, [column[int(t)] for t in scorer.label_ids]]
                k += 1
            else:  # sum of each label's token log-probabilities under the full vocabulary (Scorer's multi-token path)
                logp = torch.log_softmax(self.backbone.logits(hidden[start : start + count]).float(), -1).cpu()
                scores = torch.stack([logp[j, torch.arange(len(toks)), torch.tensor(toks)].sum()
                                      for j, toks in enumerate(scorer.label_tokens)])  # fmt: skip
            probs = torch.softmax(scores, -1)
            labels = scorer.task.labels
            out.append(
                Classification(
                    labels[int(probs.argmax())], {name: float(p) for name, p in zip(labels, probs, strict=True)}
                )
            )
        return out

    @torch.inference_mode()
    def _generate(self, requests: list[_Request]) -> list[Completion]:
        options = requests[0].options
        prompts = [self.prepared.get(r.record, r.artifact) for r in requests]
        texts = [r.texts[0] for r in requests]
        streams = {i: TextStream(self.backbone.tokenizer, options.stop) for i, r in enumerate(requests) if r.on_delta}

        def on_step(row: int, ids: list[int]) -> None:
            stream = streams.get(row)
            if stream is not None:
                self._send(requests[row], stream.push(ids), streams, row)

        outs = self.backbone.generate(
            texts, PromptInputs.stack(prompts), options=options, on_step=on_step if streams else None
        )
        self.forward_passes += 1
        for row, stream in list(streams.items()):
            self._send(requests[row], stream.finish(outs[row]), streams, row)
        results = []
        for text, out in zip(texts, outs, strict=True):
            n = self.count_tokens(out)
            reason = "length" if n >= options.max_new_tokens else "stop"
            results.append(Completion(out, self.count_tokens(text), n, reason))
        return results

    @staticmethod
    def _send(request: _Request, delta: str, streams: dict[int, TextStream], row: int) -> None:
        """Hand a delta to the request's consumer; one that fails (gone) gets no more, the batch goes on."""
        if not delta:
            return
        try:
            request.on_delta(delta)
        except Exception:
            streams.pop(row, None)
