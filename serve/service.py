"""The server's core, with no HTTP in it: loaded models and their batchers, input limits, the
``infer`` the router calls, classification through the router, hot reload and shutdown.

Every HTTP protocol (``/classify``, the Hugging Face shape, Open Inference Protocol V2) calls
``Service.classify`` and only formats its ``Outcome`` differently.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from kdserve.core.bundle import BundleError, Manifest
from kdserve.core.errors import KdserveError
from kdserve.core.explain import Explanation, explain
from kdserve.core.windows import Windower
from kdserve.serve.batching import BatchConfig, Batcher, BatchStats
from kdserve.serve.config import Settings
from kdserve.serve.errors import (
    ExplainUnavailable,
    InvalidInput,
    NotFound,
    NotReady,
    QueueFull,
    ReloadFailed,
    RequestTimeout,
    TextTooLong,
    WindowLimit,
)
from kdserve.serve.metrics import Metrics, ModelCounters
from kdserve.serve.policies import PolicyStore
from kdserve.serve.routing import ModelInfo, Router, TextAnswer
from kdserve.serve.runtime import LoadedModel, discover, load_model, verify_all, warm_up
from kdserve.serve.scores import Reading, Scores

log = logging.getLogger("kdserve.serve")


# time.monotonic() when the HTTP layer finished reading the request: request_timeout_s counts from
# there, so time spent waiting for the event loop before classify (under overload) is not free
admitted_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("kdserve_admitted_at", default=None)


@dataclass
class Slot:
    loaded: LoadedModel
    batcher: Batcher
    # this model's per-request series, bound once (``labels()`` per request is a dict lookup under a lock)
    requests_ok: Counter
    texts: Counter


@dataclass
class Outcome:
    """The answer to one request: a ``TextAnswer`` per text, each carrying the model, bundle
    checksum, labels and logits that produced it."""

    route: str
    results: list[TextAnswer]
    variant: str | None = None
    shadowed: bool = False
    # one per result when the request asked explain=true, by the model that answered that text
    explanations: list[Explanation] | None = None


def freeze_heap() -> None:
    """Move everything alive now (imports, routes, schemas, the loaded bundles) out of the cyclic
    garbage collector's sight. Profiled under wrk (docs/RESULTS.md), the collector was about a
    tenth of the event loop's samples on a student's /classify: each request allocates enough
    containers to trigger collections, and the older generations' passes walked the whole start-up
    heap, which never becomes garbage. Objects frozen here are still freed by reference counting;
    only a reference cycle among them would now outlive the process, and start-up makes none that
    the server drops (a reload's new bundles are allocated after this and stay collectable)."""
    gc.collect()
    gc.freeze()


class Service:
    """Construction discovers and verifies the bundles (a checksum mismatch raises
    ``BundleError`` naming the file) and builds the router; ``start`` loads and warms them."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.folders: dict[str, Path] = discover(settings.bundles, settings.models)
        self.manifests: dict[str, Manifest] = verify_all(self.folders)
        router_kw: dict[str, Any] = dict(
            registry=self.metrics.registry,
            shadow_log=settings.shadow_log,
            log_texts=settings.log_texts,
            shadow_max_inflight=settings.shadow_max_inflight,
        )
        infos = self._infos(self.manifests)
        self.router = (
            Router.from_file(settings.routing_file, infos, **router_kw)
            if settings.routing_file
            else Router(infos, None, **router_kw)
        )
        # moderation policies (kdserve.serve.policies): a bad policy file fails here, before a port is bound
        self.policies = PolicyStore.from_file(settings.policy_file, self.manifests, self.metrics.registry)
        self.router.category_thresholds = self.policies.band_thresholds
        self.slots: dict[str, Slot] = {}
        self.model_status: dict[str, str] = {name: "pending" for name in self.folders}
        self.counters: dict[str, ModelCounters] = {name: ModelCounters() for name in self.folders}
        self.status = "pending"  # pending, loading, ready, failed, stopping
        # True when the request asking is the only one in progress: the app wires the HTTP edge's
        # count in (kdserve.serve.edge.EdgeState.alone); None runs every request through the queue
        self.alone: Callable[[], bool] | None = None
        self.failure: str | None = None
        self._reload_lock = asyncio.Lock()
        self._start_task: asyncio.Task[None] | None = None

    @staticmethod
    def _infos(manifests: dict[str, Manifest]) -> dict[str, ModelInfo]:
        return {name: ModelInfo(name, m.role, list(m.labels)) for name, m in manifests.items()}

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # ---------------------------------------------------------------- lifecycle

    def _load(self, name: str, folder: Path, verify: bool, track_status: bool = True) -> LoadedModel:
        """Blocking: open and warm one bundle with the server's settings (run in a thread).
        ``track_status`` reports loading / warming in ``model_status``; a reload passes False, as
        the old version is still the one serving."""
        s = self.settings
        if track_status:
            self.model_status[name] = "loading"
        loaded = load_model(
            name,
            folder,
            device=s.device,
            intra_op_threads=s.intra_op_threads,
            workers=s.model_workers,
            graph_optimization=s.graph_optimization,
            verify=verify,
            intra_op_spinning=s.intra_op_spinning,
        )
        if track_status:
            self.model_status[name] = "warming"
        warm_up(loaded, s.warmup_batch_sizes, s.warmup_lengths)
        return loaded

    def _alone(self) -> bool:
        return self.alone is not None and self.alone()

    def _slot(self, name: str, loaded: LoadedModel) -> Slot:
        s, manifest = self.settings, loaded.manifest
        config = BatchConfig(
            max_batch_size=s.max_batch_size,
            max_batch_tokens=s.max_batch_tokens,
            max_wait_s=s.max_wait_ms / 1000,
            adaptive_wait=s.adaptive_wait,
            inline_lone=s.inline_lone,
            max_queue_texts=s.max_queue_texts,
            workers=loaded.workers,
            pad_id=manifest.pad_id,
            max_length=manifest.max_length,
            retry_after_s=s.retry_after_s,
            aggregation=s.chunk_aggregation,
        )
        counters = self.counters.setdefault(name, ModelCounters())
        size, latency = self.metrics.batch_size.labels(name), self.metrics.batch_latency.labels(name)
        tokens = self.metrics.batch_tokens.labels(name)

        def on_batch(stats: BatchStats) -> None:
            counters.add(batches=1, batched_texts=stats.size)
            size.observe(stats.size)
            latency.observe(stats.seconds)
            tokens.inc(stats.tokens)

        windower = None
        try:
            windower = Windower(
                loaded.model.tokenizer,
                manifest.max_length,
                pad_id=manifest.pad_id,
                overlap=s.chunk_overlap,
                max_windows=s.max_windows_per_text,
            )
        except KdserveError as exc:  # e.g. a max_length with no room beside the special tokens
            log.warning("model %s serves long_text truncate only: %s", name, exc)
        batcher = Batcher(name, loaded.model, config, on_batch, windower, alone=lambda: self._alone())
        self.metrics.track_queue(name, lambda: batcher.queue_depth)
        return Slot(
            loaded, batcher, self.metrics.model_requests.labels(name, "ok"), self.metrics.model_texts.labels(name)
        )

    async def start(self) -> None:
        """Load and warm every bundle off the event loop, then report ready. Raises on failure
        (``status`` becomes failed and ``failure`` holds the one-line reason)."""
        self.status = "loading"
        try:
            for name, folder in self.folders.items():
                # checksums were verified at construction, moments ago: no second hash pass
                loaded = await asyncio.to_thread(self._load, name, folder, False)
                self.slots = {**self.slots, name: self._slot(name, loaded)}
                self.model_status[name] = "ready"
        except Exception as exc:
            self.status, self.failure = "failed", str(exc)
            for name, st in self.model_status.items():
                if st != "ready":
                    self.model_status[name] = "failed"
            log.error("start-up failed: %s", exc)
            raise
        freeze_heap()
        self.status = "ready"
        self.metrics.ready.set(1)
        log.info("ready: %d model(s) loaded and warm (%s)", len(self.slots), ", ".join(self.slots))

    def start_in_background(self, on_failure: Callable[[str], None] | None = None) -> asyncio.Task[None]:
        """``start`` as a task, so the HTTP server answers /health (and 503 on /ready) meanwhile."""

        async def run() -> None:
            try:
                await self.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if on_failure is not None:
                    on_failure(str(exc))

        self._start_task = asyncio.create_task(run(), name="kdserve-start")
        return self._start_task

    async def aclose(self) -> None:
        """Stop taking requests, let queued ones finish (bounded by ``graceful_timeout_s``), stop shadows."""
        self.status = "stopping"
        self.metrics.ready.set(0)
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
        timeout = self.settings.graceful_timeout_s
        await asyncio.gather(*(asyncio.to_thread(slot.batcher.close, timeout) for slot in self.slots.values()))
        await self.router.aclose()

    async def reload(self) -> dict[str, dict[str, str | None]]:
        """Load, verify and warm the bundles on disk, then swap them in at once; requests already
        queued finish on the old versions. On any failure nothing changes and ``ReloadFailed``
        carries the reason (naming the file for a checksum mismatch)."""
        async with self._reload_lock:
            if not self.ready:
                raise NotReady(
                    f"cannot reload while the server is {self.status}", retry_after=self.settings.retry_after_s
                )
            try:
                folders = discover(self.settings.bundles, self.settings.models)
                gone = [name for name in self.slots if name not in folders]
                if gone:
                    # a folder mid-replacement (deleted, not yet copied back) must not unload a live model
                    raise BundleError(
                        f"{self.settings.bundles}: no bundle {', '.join(gone)} any more, but it is being "
                        f"served (a restart unloads a model)"
                    )
                fresh: dict[str, LoadedModel] = {}
                for name, folder in folders.items():
                    fresh[name] = await asyncio.to_thread(self._load, name, folder, verify=True, track_status=False)
                manifests = {name: loaded.manifest for name, loaded in fresh.items()}
                policies = self.policies.prepare(manifests)  # PolicyError: policies unchanged
                self.router.set_models(self._infos(manifests))  # RoutingError: router unchanged
                self.policies.commit(policies)
            except Exception as exc:
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed, still serving the previous bundles: %s", exc)
                raise ReloadFailed(f"reload failed, still serving the previous bundles: {exc}") from None
            old = self.slots
            # one assignment: a request sees either all old or all new slots
            self.slots = {name: self._slot(name, loaded) for name, loaded in fresh.items()}
            self.folders, self.manifests = folders, manifests
            self.model_status = {name: "ready" for name in fresh}
            for name in set(old) - set(fresh):
                self.metrics.forget_model(name)
            await asyncio.gather(
                *(asyncio.to_thread(slot.batcher.close, self.settings.graceful_timeout_s) for slot in old.values())
            )
            self.metrics.reloads.labels("ok").inc()
            changes = {
                name: {"old": old[name].loaded.checksum if name in old else None, "new": loaded.checksum}
                for name, loaded in fresh.items()
            }
            log.info("reloaded %d model(s): %s", len(fresh), changes)
            return changes

    # ---------------------------------------------------------------- serving

    def validate_texts(self, texts: list[str], field_name: str = "texts") -> None:
        """The request limits that need no model: count, characters, empty text (all 422)."""
        s = self.settings
        if not texts:
            raise InvalidInput(f"{field_name} is empty: give at least one text")
        if len(texts) > s.max_texts_per_request:
            raise InvalidInput(f"too many texts: {len(texts)} > max_texts_per_request ({s.max_texts_per_request})")
        for i, text in enumerate(texts):
            where = f"{field_name}[{i}]" if field_name == "texts" or len(texts) > 1 else field_name
            if not text.strip():
                raise InvalidInput(f"{where} is empty or whitespace-only")
            if len(text) > s.max_text_chars:
                raise InvalidInput(f"{where} has {len(text)} characters, over max_text_chars ({s.max_text_chars})")
            if not text.isascii():
                # JSON's "\ud800" escape gives a lone surrogate: not Unicode text, and the tokenizer
                # raises on it, failing every request batched with this one
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise InvalidInput(
                        f"{where} is not valid Unicode: a lone surrogate U+{ord(text[exc.start]):04X} "
                        f"at character {exc.start}"
                    ) from None

    async def infer(self, model: str, texts: list[str], reading: Reading) -> Scores:
        """The router's ``Infer``: ``model``'s scores through its batcher, with the checksum and
        labels of the bundle version that ran them."""
        slot = self.slots.get(model)
        if slot is None:
            if model in self.folders:
                raise NotReady(f"model {model!r} is not loaded yet", retry_after=self.settings.retry_after_s)
            raise NotFound(f"model {model!r} is not loaded")
        mode = reading.long_text or self.settings.long_text
        if mode != "truncate" and slot.batcher.windower is None:
            raise InvalidInput(f"model {model!r} cannot read long_text {mode!r} (see the server log); use truncate")
        counters, outcome = self.counters[model], "error"
        counters.add_request(len(texts))
        try:
            # no await between lookup and submit: a reload cannot close this batcher in between
            logits, probabilities, truncated, windows = await slot.batcher.submit_async(texts, reading.truncate, mode)
            outcome = "ok"
        except QueueFull:
            outcome = "queue_full"
            self.metrics.rejected.labels("queue_full").inc()
            raise
        except TextTooLong:
            outcome = "text_too_long"
            self.metrics.rejected.labels("text_too_long").inc()
            raise
        except WindowLimit:
            outcome = "too_many_windows"
            self.metrics.rejected.labels("too_many_windows").inc()
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if outcome == "ok":
                slot.requests_ok.inc()
            else:
                self.metrics.model_requests.labels(model, outcome).inc()
                counters.add(errors=1)
        slot.texts.inc(len(texts))
        cut = sum(truncated)
        if cut:
            self.metrics.truncated_texts.labels(model, mode).inc(cut)
        if windows is not None:
            self.metrics.long_text_windows.labels(model).inc(sum(windows))
        loaded = slot.loaded
        return Scores(model, loaded.checksum, list(loaded.manifest.labels), probabilities, logits, truncated, windows)

    async def classify(
        self,
        texts: list[str],
        requested: str | None = None,
        routing_key: str | None = None,
        truncate: bool = True,
        field_name: str = "texts",
        long_text: str | None = None,
        explain: bool = False,
        policy: str | None = None,
    ) -> Outcome:
        """Validate, route and answer ``texts`` within ``request_timeout_s``. ``long_text``
        overrides the server's ``long_text`` setting; ``explain`` adds an occlusion explanation
        per text (``explain``), inside the same deadline."""
        if not self.ready:
            raise NotReady(
                f"not ready: the server is {self.status}" + (f" ({self.failure})" if self.failure else ""),
                retry_after=self.settings.retry_after_s,
            )
        self.validate_texts(texts, field_name)
        if explain and len(texts) > self.settings.max_explain_texts:
            raise InvalidInput(
                f"explain: {len(texts)} texts, over max_explain_texts ({self.settings.max_explain_texts})"
            )
        timeout = self.settings.request_timeout_s
        admitted = admitted_at.get()
        left = timeout - (time.monotonic() - admitted) if admitted is not None else timeout
        explanations = None
        try:
            if left <= 0:
                raise TimeoutError  # past the deadline already: queue no work that nobody will wait for
            async with asyncio.timeout(left):
                reading = Reading(truncate, long_text, policy)
                routed = await self.router.classify(list(texts), requested, routing_key, self.infer, reading)
                if explain:
                    explanations = await self.explain(texts, routed.answers)
        except (TextTooLong, WindowLimit) as exc:
            # a cascade's teacher sees a subset of the texts: name the text's place in the request
            index = texts.index(exc.text) if exc.text in texts else exc.index
            exc.message = exc.describe(index)
            exc.args = (exc.message,)
            raise exc from None
        except TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            raise RequestTimeout(
                f"no answer within request_timeout_s ({timeout:g} s); the server is overloaded, retry later",
                retry_after=self.settings.retry_after_s,
            ) from None
        return Outcome(routed.route, routed.answers, routed.variant, routed.shadowed, explanations)

    async def explain(self, texts: list[str], answers: list[TextAnswer]) -> list[Explanation]:
        """Occlusion explanations of ``texts`` (``kdserve.core.explain``), each by the model that
        answered it (in a cascade: the student or the teacher, per text), one batched ONNX Runtime
        call per text, in a worker thread (sessions are thread-safe; the event loop stays free)."""
        jobs = []
        for text, answer in zip(texts, answers):
            slot = self.slots.get(answer.model)
            if slot is None or slot.loaded.checksum != answer.checksum:
                raise NotReady(
                    f"model {answer.model!r} was reloaded while answering; retry the request",
                    retry_after=self.settings.retry_after_s,
                )
            model = slot.loaded.model
            if not hasattr(model, "tokenizer") or not hasattr(model, "manifest"):
                raise ExplainUnavailable(f"model {answer.model!r} has no tokenizer to explain with")
            jobs.append((model, text))
        limit = self.settings.max_explain_tokens
        return await asyncio.to_thread(lambda: [explain(model, text, limit) for model, text in jobs])

    # ---------------------------------------------------------------- introspection

    def describe_model(self, name: str, detail: bool = False) -> dict[str, Any]:
        if name not in self.manifests:
            raise NotFound(f"no model {name!r}; loaded: {', '.join(self.manifests)}")
        manifest = self.manifests[name]
        slot = self.slots.get(name)
        counters = self.counters.setdefault(name, ModelCounters())
        return {
            "name": name,
            "role": manifest.role,
            "model_kind": manifest.model_kind,
            "precision": manifest.precision,
            "labels": list(manifest.labels),
            "max_length": manifest.max_length,
            "checksum": slot.loaded.checksum if slot else manifest.checksum,
            "status": self.model_status.get(name, "pending"),
            "providers": slot.loaded.providers if slot else [],
            "intra_op_threads": slot.loaded.intra_op_threads if slot else None,
            "workers": slot.loaded.workers if slot else None,
            "rows_alone": slot.loaded.model.rows_alone if slot else None,
            "counters": counters.snapshot(slot.batcher.queue_depth if slot else 0),
            "manifest": manifest.to_dict() if detail else None,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "models": [self.describe_model(n) for n in self.manifests],
            "routing": self.router.describe(),
        }
