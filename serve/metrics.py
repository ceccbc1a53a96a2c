"""Prometheus metrics and the live per-model counters of ``GET /models``.

Each app owns a ``CollectorRegistry`` (never the process-global one), so tests and a hot
reload can build many apps in one process. Label values are bounded: endpoints are route
templates (not raw paths), models are loaded bundle names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class ModelCounters:
    """Live counters for one model name (they survive a hot reload of its bundle).

    Written from the event loop (requests) and the batcher thread (batches): one lock."""

    requests: int = 0
    texts: int = 0
    errors: int = 0
    batches: int = 0
    batched_texts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_request(self, texts: int) -> None:
        """One request of ``texts`` texts (``add`` without its keyword loop: once per request)."""
        with self._lock:
            self.requests += 1
            self.texts += texts

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self, queue_depth: int) -> dict[str, float]:
        with self._lock:
            mean = self.batched_texts / self.batches if self.batches else 0.0
            return {
                "requests": self.requests,
                "texts": self.texts,
                "errors": self.errors,
                "queue_depth": queue_depth,
                "batches": self.batches,
                "mean_batch_size": round(mean, 3),
            }


class Metrics:
    """The server's Prometheus series, in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "kdserve_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "kdserve_http_request_duration_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "kdserve_model_requests",
            "Inference calls per model by outcome (ok, queue_full, timeout, text_too_long, cancelled, error)",
            ["model", "status"],
            registry=r,
        )
        self.model_texts = Counter("kdserve_model_texts", "Texts classified per model", ["model"], registry=r)
        self.batch_size = Histogram(
            "kdserve_batch_size", "Texts per inference batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "kdserve_batch_inference_seconds", "Model time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_tokens = Counter(
            "kdserve_batch_padded_tokens", "Padded tokens run (batch x longest)", ["model"], registry=r
        )
        self.queue_depth = Gauge("kdserve_queue_depth", "Texts waiting in a model's queue", ["model"], registry=r)
        self.rejected = Counter(
            "kdserve_rejected", "Requests refused before inference, by reason", ["reason"], registry=r
        )
        self.inflight = Gauge("kdserve_inflight_requests", "HTTP requests in progress (probes excluded)", registry=r)
        self.ready = Gauge("kdserve_ready", "1 when every bundle is loaded and warm", registry=r)
        self.reloads = Counter("kdserve_reloads", "Hot reloads by outcome", ["status"], registry=r)
        self.truncated_texts = Counter(
            "kdserve_truncated_texts",
            "Texts the model did not read in full (long_text truncate or head_tail), by model and mode",
            ["model", "mode"],
            registry=r,
        )
        self.long_text_windows = Counter(
            "kdserve_long_text_windows",
            "Rows run for texts read with long_text head_tail or chunk, by model",
            ["model"],
            registry=r,
        )

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def forget_model(self, model: str) -> None:
        try:
            self.queue_depth.remove(model)
        except KeyError:
            pass
