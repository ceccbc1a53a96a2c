"""Shadow traffic: run a second model on a sample of requests, off the critical path, and record
how often it agrees with the model that answered.

The router answers with the primary model first; ``ShadowRecorder.submit`` then starts the
shadow call as an asyncio task and returns at once, so a slow or failing shadow model never
delays or fails a response. Under load shadow calls are the first thing dropped: at most
``max_inflight`` run at a time and any beyond that are counted as dropped instead of queued.
Disagreements go to a JSONL file (one object per line) for relabeling; texts are written only
when ``log_texts`` is set, a sha256 of the text always. This module imports no torch or FastAPI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import prometheus_client as prom

from kdserve.serve.scores import Reading, Scores

logger = logging.getLogger(__name__)

# |score difference| lies in [0, 1]; finer buckets near 0, where agreeing models land.
SCORE_DIFF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

InferFn = Callable[[str, list[str], Reading], Awaitable[Scores]]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ShadowLog:
    """Append-only JSONL file of disagreements, safe to share between threads and processes.

    Each record is encoded to one ``bytes`` line and written with a single ``write`` on an
    unbuffered ``O_APPEND`` handle: lines from concurrent writers never interleave, and nothing
    waits in a user-space buffer (a crash loses at most the line being written)."""

    def __init__(self, path: str | Path, log_texts: bool = False) -> None:
        self.path = Path(path)
        self.log_texts = log_texts
        self._lock = threading.Lock()
        self._handle: Any = None
        self._closed = False

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append ``records``; blocking file I/O, so the recorder calls it from a worker thread."""
        if not records:
            return
        with self._lock:
            if self._closed:
                return
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for the log's life
            for record in records:
                line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
                view = memoryview(line)
                while view:  # a regular-file write is complete in practice; loop for the rare partial one
                    view = view[self._handle.write(view) :]
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.close()
                self._handle = None


@dataclass(frozen=True)
class ShadowJob:
    """One shadow comparison. ``primary_probs`` is float32 [N, C] in ``labels`` order (the primary's);
    ``shadow_order[c]`` is the column of label ``labels[c]`` in the shadow model's output."""

    route: str
    primary: str
    shadow: str
    labels: tuple[str, ...]
    shadow_labels: tuple[str, ...]
    shadow_order: tuple[int, ...]
    texts: list[str]
    primary_probs: np.ndarray
    reading: Reading


class ShadowRecorder:
    """Runs shadow calls as tracked asyncio tasks and exports their outcome as Prometheus metrics.

    All counters count texts, so per route ``compared + failed + dropped`` is every sampled text
    and ``agreed / compared`` is the agreement rate."""

    def __init__(
        self,
        registry: prom.CollectorRegistry,
        log: ShadowLog | None = None,
        max_inflight: int = 8,
    ) -> None:
        if max_inflight < 0:
            raise ValueError(f"shadow_max_inflight must be >= 0, got {max_inflight}")
        self.log = log
        self.max_inflight = max_inflight
        self._tasks: set[asyncio.Task[None]] = set()
        self.compared = prom.Counter(
            "kdserve_shadow_compared",
            "Texts answered by both the primary and the shadow model",
            ["route"],
            registry=registry,
        )
        self.agreed = prom.Counter(
            "kdserve_shadow_agreed",
            "Compared texts where the shadow's top label equals the primary's",
            ["route"],
            registry=registry,
        )
        self.dropped = prom.Counter(
            "kdserve_shadow_dropped",
            "Sampled texts not sent to the shadow: too many shadow calls in flight",
            ["route"],
            registry=registry,
        )
        self.failed = prom.Counter(
            "kdserve_shadow_failed", "Sampled texts whose shadow call raised an error", ["route"], registry=registry
        )
        self.score_difference = prom.Histogram(
            "kdserve_shadow_score_difference",
            "|primary score - shadow score| of the primary's top label, per compared text",
            ["route"],
            buckets=SCORE_DIFF_BUCKETS,
            registry=registry,
        )
        self.inflight_gauge = prom.Gauge("kdserve_shadow_inflight", "Shadow calls running now", registry=registry)
        self.inflight_gauge.set_function(lambda: len(self._tasks))

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(self, job: ShadowJob, infer: InferFn) -> bool:
        """Start the shadow call in the background; False (and counted as dropped) when full.

        Must be called from the running event loop; returns without awaiting anything."""
        if len(self._tasks) >= self.max_inflight:
            self.dropped.labels(job.route).inc(len(job.texts))
            return False
        task = asyncio.get_running_loop().create_task(self._run(job, infer), name=f"shadow:{job.route}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: ShadowJob, infer: InferFn) -> None:
        try:
            scores = await infer(job.shadow, job.texts, job.reading)
            shadow_probs = np.asarray(scores.probabilities, dtype=np.float32)
            if shadow_probs.shape != (len(job.texts), len(job.shadow_labels)):
                raise ValueError(
                    f"shadow output shape {shadow_probs.shape}, expected {(len(job.texts), len(job.shadow_labels))}"
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shadow must never fail a request: count, log, move on
            self.failed.labels(job.route).inc(len(job.texts))
            logger.warning("shadow call to %r on route %r failed: %s", job.shadow, job.route, exc)
            return
        records = self._compare(job, shadow_probs)
        if records and self.log is not None:
            try:
                # The task stays in flight until its lines are written, so pending log lines are
                # bounded by max_inflight jobs: no unbounded buffer in memory.
                await asyncio.to_thread(self.log.write, records)
            except OSError as exc:
                logger.warning("cannot append to the shadow log %s: %s", self.log.path, exc)

    def _compare(self, job: ShadowJob, shadow_probs: np.ndarray) -> list[dict[str, Any]]:
        """Update the metrics; return one log record per disagreeing text."""
        aligned = shadow_probs[:, list(job.shadow_order)]  # [N, C] in the primary's label order
        n = len(job.texts)
        rows = np.arange(n)
        top = job.primary_probs.argmax(axis=1)
        shadow_top = aligned.argmax(axis=1)
        diffs = np.abs(job.primary_probs[rows, top] - aligned[rows, top])
        agree = top == shadow_top
        self.compared.labels(job.route).inc(n)
        self.agreed.labels(job.route).inc(int(agree.sum()))
        histogram = self.score_difference.labels(job.route)
        for diff in diffs:
            histogram.observe(float(diff))
        if self.log is None:
            return []
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        records = []
        for i in np.flatnonzero(~agree):
            record: dict[str, Any] = {
                "timestamp": now,
                "route": job.route,
                "primary_model": job.primary,
                "shadow_model": job.shadow,
                "primary_label": job.labels[top[i]],
                "shadow_label": job.labels[shadow_top[i]],
                "primary_scores": {label: round(float(p), 6) for label, p in zip(job.labels, job.primary_probs[i])},
                "shadow_scores": {label: round(float(p), 6) for label, p in zip(job.shadow_labels, shadow_probs[i])},
                "score_difference": round(float(diffs[i]), 6),
                "text_sha256": text_sha256(job.texts[i]),
            }
            if self.log.log_texts:
                record["text"] = job.texts[i]
            records.append(record)
        return records

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for running shadow calls, then cancel the rest."""
        pending = set(self._tasks)
        if pending and timeout > 0:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self, timeout: float = 1.0) -> None:
        await self.drain(timeout)
        if self.log is not None:
            self.log.close()
