"""Prometheus metrics of the prompt server: per-prompt requests, tokens and latency, batching and cache residency.

Label cardinality is capped: the first `max_prompts` prompts (tenant/name, versions folded together) that receive
traffic get their own label value; every later one is counted under "other". Each app has its own
CollectorRegistry, so several servers in one process (tests, replicas) never share counters.

Why the first N and not the N busiest: every series here is a Prometheus counter (or histogram), which must only go
up for `rate()` to mean anything. Keeping the busiest N would demote a prompt when another overtakes it: its series
would vanish (read as a reset) and its past counts would have to move into "other", which then jumps; both show as
false spikes on every dashboard, and which prompts are labelled would flap under shifting load. First-N keeps each
series stable and monotonic for the life of the process (a restart picks again). Per-prompt totals for every prompt,
busiest first, are better read from the request log than from a capped label set.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    def __init__(self, engine: Any, max_prompts: int = 100) -> None:
        self.engine, self.max_prompts = engine, max_prompts
        self._labels: set[str] = set()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter("softprompt_requests", "Requests by endpoint, prompt and HTTP status",
                                ["endpoint", "prompt", "status"], registry=self.registry)  # fmt: skip
        self.tokens = Counter("softprompt_tokens", "Tokens by prompt and kind (prompt or completion)",
                              ["prompt", "kind"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("softprompt_request_seconds", "Request latency by endpoint and prompt",
                                 ["endpoint", "prompt"], buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.registry.register(_EngineCollector(engine))

    def label(self, record: Any) -> str:
        """The prompt's label value: tenant/name while under the cap, else "other"."""
        if record is None:
            return "unresolved"
        name = f"{record.tenant}/{record.name}"
        with self._lock:
            if name in self._labels:
                return name
            if len(self._labels) < self.max_prompts:
                self._labels.add(name)
                return name
        return OTHER

    def request(self, endpoint: str, record: Any, status: int, seconds: float,
                usage: dict[str, int] | None = None) -> None:  # fmt: skip
        prompt = self.label(record)
        self.requests.labels(endpoint, prompt, str(status)).inc()
        self.latency.labels(endpoint, prompt).observe(seconds)
        for kind in ("prompt", "completion"):
            count = (usage or {}).get(f"{kind}_tokens", 0)
            if count:
                self.tokens.labels(prompt, kind).inc(count)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector:
    """Gauges read from the engine when scraped: queue, batches, prefix cache and prompt cache residency."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Any:
        stats = self.engine.stats()
        values = {
            "softprompt_queue_rows": ("Rows waiting in the batcher's queue", stats["queued_rows"]),
            "softprompt_batches": ("Batches run since start", stats["batches"]),
            "softprompt_batch_rows": ("Rows run since start", stats["rows"]),
            "softprompt_forward_passes": ("Forward passes (or generate calls) since start", stats["forward_passes"]),
        }
        for key in ("entries", "bytes", "hits", "misses"):
            values[f"softprompt_prefix_cache_{key}"] = (f"Prompt prefix cache {key}", stats["prefix_cache"][key])
        source = getattr(self.engine.source, "stats", None)
        for key, value in (source() if source else {}).items():
            if isinstance(value, int | float):
                values[f"softprompt_prompt_cache_{key}"] = (f"Loaded-artifact cache {key}", value)
        for name, (doc, value) in values.items():
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(value))
            yield family
