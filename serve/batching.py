"""Dynamic batching for one model, with no HTTP in it.

Requests (each a list of texts) queue in a bounded queue. A worker thread (``workers`` of them,
one by default, sharing the queue and the model) takes what has arrived once the first waiting
request is ``max_wait_s`` old or ``max_batch_size`` texts are waiting, tokenizes those texts in
one call, sorts them by token length and cuts them into
batches of at most ``max_batch_size`` texts and ``max_batch_tokens`` padded tokens (rows x
longest row), so that similar lengths share a batch and padding stays small. Inference runs in
that thread (ONNX Runtime releases the GIL), never on the event loop; logits go back to each
request in its own order. A request whose future was cancelled (client gone, deadline passed) is
skipped before each batch that would include it.

Two ways in: ``submit`` returns a ``concurrent.futures.Future`` of the logits (any thread), and
``submit_async`` an ``asyncio.Future`` of ``Scores`` (logits and softmax probabilities) for the
server's event loop. The async way is the cheap one for the loop, whose time per request is what
caps a student's throughput: no ``Condition`` per future, no ``wrap_future`` chain, the softmax
done once per batch in this thread, and the answers of one batch handed over in a single
``call_soon_threadsafe`` (one loop wake-up per batch, not one per request).

A lone request never waits for a batch that is not coming (``adaptive_wait``): when it is the only
one queued and either it arrived more than ``max_wait_s`` after the one before it (sparse traffic)
or the previous intake took a single request (no company has been arriving, e.g. one client
sending its next request when the last answer came back), it is taken at once. The wait applies
again as soon as requests pile up while the model runs, and then ends as soon as as many texts
are waiting as the previous intake took (k closed-loop clients: k requests), not only when a full
batch is there.

A lone request on an idle model runs inline (``inline_lone``, with ``adaptive_wait``): when the server says no other
request is in progress (the ``alone`` hook: one connection busy at the HTTP edge), nothing is queued
and no worker is running a batch, an async single-text request is tokenized and run on the calling
event-loop thread and its future settled there, without the two thread hand-offs (wake the worker;
wake the loop with the answer) that cost a 1-connection client more than a student model's own
run. The loop is busy for that one model call, with nobody else to serve; as soon as a second
connection has a request in progress, requests queue and batch as before.

Padding never changes an answer: rows are right-padded with the bundle's ``pad_id`` and masked,
exactly as ``BundleModel.encode`` does for a batch, so a text gets the same logits alone as in any
batch (within float tolerance).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from kdserve.core.bundle import Encoded, softmax
from kdserve.core.windows import TooManyWindows, Windower, aggregate
from kdserve.serve.errors import InferenceFailed, NotReady, QueueFull, TextTooLong, WindowLimit

log = logging.getLogger("kdserve.serve.batching")

# How many batches' worth of texts one intake may take: a larger pool groups lengths better, a
# smaller one lets later arrivals in sooner.
POOL_BATCHES = 4


class Runnable(Protocol):
    """What the batcher needs from a model (``kdserve.core.bundle.BundleModel`` is one)."""

    def encode(self, texts: Sequence[str]) -> Encoded: ...
    def run(self, encoded: Encoded) -> np.ndarray: ...


def probability_function(model: object) -> Callable[[np.ndarray], np.ndarray]:
    """The scores a batch's logits become: the model's calibrated ``probabilities`` (softmax(z/T), or
    one sigmoid(z/T_c) per label for a multi-label bundle) when it is calibrated or multi-label, else
    the plain softmax. Either is one vectorised call per batch; a softmax over a multi-label bundle's
    logits would make its categories compete for one unit of probability mass, which they do not."""
    manifest = getattr(model, "manifest", None)
    calibrated = getattr(model, "probabilities", None)
    if manifest is None or calibrated is None:
        return softmax
    if getattr(manifest, "problem_type", "single_label") == "multi_label" or getattr(model, "temperatures", None):
        return calibrated  # type: ignore[no-any-return]
    return softmax


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32
    max_batch_tokens: int = 8192
    max_wait_s: float = 0.002
    # A lone request skips the wait (see the module docstring); False waits max_wait_s always.
    adaptive_wait: bool = True
    # A single-text async request, alone in the server, on an idle model runs on the calling
    # thread (module docstring; needs adaptive_wait and the Batcher's ``alone`` hook).
    inline_lone: bool = True
    max_queue_texts: int = 1024
    # worker threads taking pools from the one queue, each running its own batches on the shared
    # session (ONNX Runtime runs one session from several threads at once): Triton's model instances
    workers: int = 1
    pad_id: int = 0
    max_length: int = 512
    retry_after_s: int = 1
    # how a text's windows (long_text "chunk") become one answer: see kdserve.core.windows.aggregate
    aggregation: str = "mean"
    multi_label: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1 or self.max_queue_texts < 1 or self.workers < 1:
            raise ValueError("max_batch_size, max_batch_tokens, max_queue_texts and workers must be >= 1")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")


@dataclass
class BatchStats:
    """One batch as run: ``size`` texts, ``tokens`` padded tokens, ``seconds`` of model time."""

    size: int
    tokens: int
    seconds: float


class Scores(NamedTuple):
    """One request's answer from ``submit_async``: float32 [N, C] each, rows in request order;
    ``truncated[i]``: text i lost tokens; ``windows[i]``: the rows text i ran as (None: one each)."""

    logits: np.ndarray
    probabilities: np.ndarray
    truncated: list[bool]
    windows: list[int] | None = None


@dataclass
class _Item:
    texts: list[str]
    truncate: bool
    # a concurrent Future of logits (``submit``), or an asyncio Future of Scores bound to ``loop``
    future: Future[np.ndarray] | asyncio.Future[Scores]
    enqueued: float
    loop: asyncio.AbstractEventLoop | None = None
    logits: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    remaining: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    # "truncate" (one row per text, the hot path), "head_tail" or "chunk" (kdserve.core.windows)
    long_text: str = "truncate"
    truncated: list[bool] = field(default_factory=list)
    # rows [start, end) of each text when a text may run as several rows; None: row j is text j
    spans: list[tuple[int, int]] | None = None

    def abandoned(self) -> bool:
        # done() is a plain state read on either kind of future (cancelled futures are done)
        return self.future.done()


def _settle(future: Future[np.ndarray], result: np.ndarray | None = None, error: BaseException | None = None) -> None:
    # A future cancelled by its awaiting request in the meantime simply stays cancelled.
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


def _deliver(answers: list[tuple[asyncio.Future[Scores], Scores | None, BaseException | None]]) -> None:
    """On the event loop: settle one batch's asyncio futures (those not cancelled meanwhile)."""
    for future, result, error in answers:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


class Batcher:
    """Queue + worker threads for one model. ``submit`` is thread-safe and never blocks."""

    def __init__(
        self,
        name: str,
        model: Runnable,
        config: BatchConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
        windower: Windower | None = None,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        # True when the caller's request is the only one in progress (see inline_lone); None: never inline
        self.alone = alone
        self.model = model
        self.config = config
        # cuts texts for long_text "head_tail" and "chunk"; without one only "truncate" is served
        self.windower = windower
        self.on_batch = on_batch
        self._probabilities = probability_function(model)
        self._queue: deque[_Item] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._closing = False
        self._last_arrival = float("-inf")
        self._lone = False  # the newest arrival came more than max_wait_s after the previous one
        self._last_intake = 0  # requests the worker took last time: 1 means no company arrived
        self._last_intake_texts = 0
        self._running = 0  # workers (or an inline caller) running a pool now
        self.inline_runs = 0
        self.batches = 0
        self.texts_run = 0
        self.dropped = 0
        self._stats_lock = threading.Lock()
        # each worker's asyncio answers waiting to be handed to their loops (``_answer``, ``_flush``)
        self._local = threading.local()
        self._threads = [
            threading.Thread(target=self._work, name=f"batcher-{name}" + (f"-{i}" if i else ""), daemon=True)
            for i in range(config.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queue_depth(self) -> int:
        """Texts waiting (not yet taken by the worker)."""
        return self._queued_texts

    def submit(self, texts: list[str], truncate: bool = True, long_text: str = "truncate") -> Future[np.ndarray]:
        """Queue ``texts``; the future resolves to logits float32 [len(texts), C].

        ``long_text`` says how a text over the token limit is read (``kdserve.core.windows``);
        ``truncate=False`` refuses one that would lose tokens (``TextTooLong``) instead.
        Raises ``QueueFull`` when they do not fit, ``NotReady`` once the batcher is closing."""
        future: Future[np.ndarray] = Future()
        if not texts:
            future.set_result(np.zeros((0, 0), dtype=np.float32))
            return future
        self._enqueue(_Item(list(texts), truncate, future, 0.0, long_text=long_text))
        return future

    def submit_async(
        self, texts: list[str], truncate: bool = True, long_text: str = "truncate"
    ) -> asyncio.Future[Scores]:
        """``submit`` for the running event loop: an asyncio future of ``Scores`` for ``texts``.
        Cancelling it drops the texts if they have not run yet. Raises as ``submit`` does."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scores] = loop.create_future()
        if not texts:
            empty = np.zeros((0, 0), dtype=np.float32)
            future.set_result(Scores(empty, empty, []))
            return future
        item = _Item(list(texts), truncate, future, 0.0, loop, long_text=long_text)
        if not self._run_inline(item):
            self._enqueue(item)
        return future

    def _run_inline(self, item: _Item) -> bool:
        """Run ``item`` on this (the event loop's) thread when it is a lone text on an idle model
        (module docstring); False leaves it to the queue."""
        cfg = self.config
        if not (cfg.inline_lone and cfg.adaptive_wait and self.alone is not None and len(item.texts) == 1):
            return False
        if not self.alone():
            return False
        with self._cond:
            if self._closing or self._queue or self._running:
                return False
            self._last_arrival = item.enqueued = time.monotonic()
            self._running += 1
            self._last_intake, self._last_intake_texts = 1, len(item.texts)
        self._local.inline = True
        self._local.outbox = []
        try:
            self._process([item])
        except BaseException as exc:  # the same answer a worker gives a failed pool
            log.exception("batcher %s: inline request failed", self.name)
            self._answer(item, error=exc)
        finally:
            self._flush()
            self._local.inline = False
            with self._cond:
                self._running -= 1
                self.inline_runs += 1
                self._cond.notify()
        return True

    def _enqueue(self, item: _Item) -> None:
        texts = item.texts
        with self._cond:
            if self._closing:
                raise NotReady(f"model {self.name!r} is shutting down", retry_after=self.config.retry_after_s)
            if self._queued_texts + len(texts) > self.config.max_queue_texts:
                raise QueueFull(
                    f"model {self.name!r} queue is full ({self._queued_texts} texts waiting, limit "
                    f"{self.config.max_queue_texts}); retry later",
                    retry_after=self.config.retry_after_s,
                )
            now = time.monotonic()
            self._lone = now - self._last_arrival > self.config.max_wait_s
            self._last_arrival = now
            item.enqueued = now
            self._queue.append(item)
            self._queued_texts += len(texts)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, let the workers finish everything queued, join them. True when all ended."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # ---------------------------------------------------------------- worker thread

    def _take(self) -> list[_Item] | None:
        """Block until a pool is due; None when closing with nothing left."""
        cfg = self.config
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            # Wait for company only when company has been arriving (see the module docstring).
            lone = cfg.adaptive_wait and len(self._queue) == 1 and (self._lone or self._last_intake <= 1)
            deadline = self._queue[0].enqueued + (0.0 if lone else cfg.max_wait_s)
            # Adaptive: the company worth waiting for is as much as came last time (k clients each
            # waiting for their answer send k requests), not a full batch that may never come.
            enough = (
                min(cfg.max_batch_size, max(self._last_intake_texts, 1)) if cfg.adaptive_wait else cfg.max_batch_size
            )
            while not self._closing and self._queued_texts < enough:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            pool: list[_Item] = []
            taken = 0
            while self._queue and (not pool or taken + len(self._queue[0].texts) <= cfg.max_batch_size * POOL_BATCHES):
                item = self._queue.popleft()
                pool.append(item)
                taken += len(item.texts)
            self._queued_texts -= taken
            self._last_intake = len(pool)
            self._last_intake_texts = taken
            self._running += 1
            return pool

    def _work(self) -> None:
        self._local.outbox = []
        while True:
            pool = self._take()
            if pool is None:
                return
            try:
                self._process(pool)
            except BaseException as exc:  # keep serving: fail this pool's requests, not the thread
                log.exception("batcher %s: batch failed", self.name)
                for item in pool:
                    self._answer(item, error=exc)
            finally:
                self._flush()
                with self._cond:
                    self._running -= 1

    def _answer(self, item: _Item, error: BaseException | None = None) -> None:
        """Settle ``item`` with its logits (or ``error``): a concurrent future at once, an asyncio one
        through the outbox, which ``_flush`` hands to its loop."""
        if item.loop is None:
            _settle(item.future, item.logits, error)  # type: ignore[arg-type]
            return
        scores = (
            None
            if error is not None
            else Scores(
                item.logits,  # type: ignore[arg-type]
                item.probabilities,  # type: ignore[arg-type]
                item.truncated,
                None if item.spans is None else [end - start for start, end in item.spans],
            )
        )
        self._local.outbox.append((item.loop, item.future, scores, error))

    def _flush(self) -> None:
        outbox = self._local.outbox
        if not outbox:
            return
        self._local.outbox = []
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Scores], Scores | None, BaseException | None]]
        ] = {}
        for loop, future, scores, error in outbox:
            by_loop.setdefault(loop, []).append((future, scores, error))
        if getattr(self._local, "inline", False):
            for answers in by_loop.values():
                _deliver(answers)  # on the loop's own thread (``_run_inline``): no wake-up needed
            return
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, answers)
            except RuntimeError:  # that loop is closed: nobody is waiting for these answers any more
                log.warning("batcher %s: %d answer(s) for a closed event loop dropped", self.name, len(answers))

    def _process(self, pool: list[_Item]) -> None:
        live = [item for item in pool if not item.abandoned()]
        dropped = sum(len(i.texts) for i in pool if i.abandoned())
        if dropped:
            with self._stats_lock:
                self.dropped += dropped
        if not live:
            return
        windowed = [item for item in live if item.long_text != "truncate"]
        if windowed:
            live = [item for item in live if item.long_text == "truncate"]
        rows: list[tuple[int, _Item, int]] = []  # (length, item, row index in item)
        for item in windowed:
            self._windows(item, rows)
        if live:
            self._truncated(live, rows)
        rows.sort(key=lambda r: r[0])
        for batch in self._cut(rows):
            batch = [r for r in batch if not r[1].abandoned()]
            if batch:
                self._run(batch)

    def _windows(self, item: _Item, rows: list[tuple[int, _Item, int]]) -> None:
        """``item``'s rows for long_text head_tail or chunk, added to ``rows``; a text over a
        limit fails ``item`` alone."""
        try:
            if self.windower is None:
                raise ValueError(f"model {self.name!r} has no windower for long_text {item.long_text!r}")
            cut = self.windower.encode(item.texts, item.long_text)
        except TooManyWindows as exc:
            self._answer(item, error=WindowLimit(exc.index, self.name, exc.windows, exc.limit, item.texts[exc.index]))
            return
        except Exception as exc:
            log.error("batcher %s: windowing a request failed: %s", self.name, exc)
            self._answer(item, error=exc)
            return
        if not item.truncate:
            lost = [j for j, text in enumerate(cut) if text.truncated]
            if lost:
                j = lost[0]
                self._answer(item, error=TextTooLong(j, self.name, self.config.max_length, item.texts[j]))
                return
        item.rows, item.spans, item.truncated = [], [], [text.truncated for text in cut]
        for text in cut:
            item.spans.append((len(item.rows), len(item.rows) + len(text.rows)))
            item.rows.extend(text.rows)
        item.remaining = len(item.rows)
        rows.extend((len(row), item, k) for k, row in enumerate(item.rows))

    def _truncated(self, live: list[_Item], rows: list[tuple[int, _Item, int]]) -> None:
        """The hot path (long_text truncate): the pool's texts in one tokenizer call, one row each."""
        texts = [t for item in live for t in item.texts]
        try:
            encoded = self.model.encode(texts)  # one Rust call for the whole pool
        except Exception:
            if len(live) == 1:
                raise
            # one request's text broke the tokenizer: fail that request only, not the whole pool
            for item in live:
                try:
                    self._process([item])
                except Exception as exc:
                    log.error("batcher %s: tokenizing a request failed: %s", self.name, exc)
                    self._answer(item, error=exc)
            return
        at = 0
        for item in live:
            n = len(item.texts)
            too_long = [j for j in range(n) if encoded.truncated[at + j]]
            if too_long and not item.truncate:
                j = too_long[0]
                self._answer(item, error=TextTooLong(j, self.name, self.config.max_length, item.texts[j]))
            else:
                item.rows = [encoded.input_ids[at + j, : encoded.lengths[at + j]] for j in range(n)]
                item.truncated = encoded.truncated[at : at + n]
                item.remaining = n
                rows.extend((encoded.lengths[at + j], item, j) for j in range(n))
            at += n

    def _combine(self, item: _Item) -> None:
        """Windowed rows back to one (logits, probabilities) row per text (kdserve.core.windows.aggregate)."""
        assert item.spans is not None and item.logits is not None
        logits = np.zeros((len(item.texts), item.logits.shape[1]), dtype=np.float32)
        probabilities = np.zeros_like(logits)
        for j, (start, end) in enumerate(item.spans):
            if end - start == 1:
                logits[j], probabilities[j] = item.logits[start], item.probabilities[start]  # type: ignore[index]
            else:
                logits[j], probabilities[j] = aggregate(
                    item.logits[start:end], self.config.multi_label, self.config.aggregation
                )
        item.logits, item.probabilities = logits, probabilities

    def _cut(self, rows: list[tuple[int, _Item, int]]) -> list[list[tuple[int, _Item, int]]]:
        """Length-sorted rows into batches within both limits (an overlong row goes alone)."""
        cfg = self.config
        batches: list[list[tuple[int, _Item, int]]] = []
        current: list[tuple[int, _Item, int]] = []
        for row in rows:
            # rows ascend, so this row is the longest: padded tokens = count x its length
            if current and (
                len(current) + 1 > cfg.max_batch_size or (len(current) + 1) * row[0] > cfg.max_batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def _run(self, batch: list[tuple[int, _Item, int]]) -> None:
        width = max(r[0] for r in batch)
        ids = np.full((len(batch), width), self.config.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for k, (length, item, j) in enumerate(batch):
            ids[k, :length] = item.rows[j]
            mask[k, :length] = 1
        started = time.perf_counter()
        try:
            logits = self.model.run(Encoded(ids, mask, [r[0] for r in batch], [False] * len(batch)))
        except Exception as exc:
            items = {id(r[1]): r[1] for r in batch}
            if len(items) > 1:
                # the failure may come from one request's rows (a shape, a token): rerun each request
                # alone so that only the requests that fail on their own get the error
                log.warning(
                    "batcher %s: a batch of %d failed (%s); rerunning its %d requests one by one",
                    self.name,
                    len(batch),
                    exc,
                    len(items),
                )
                for item in items.values():
                    self._run([r for r in batch if r[1] is item])
                return
            log.error("batcher %s: inference failed on a batch of %d: %s", self.name, len(batch), exc)
            failure = InferenceFailed()
            failure.__cause__ = exc  # kept for callers and logs; the HTTP answer does not show it
            for item in items.values():
                self._answer(item, error=failure)
            self._flush()
            return
        seconds = time.perf_counter() - started
        with self._stats_lock:
            self.batches += 1
            self.texts_run += len(batch)
        # one call for the batch, off the loop (calibrated: see probability_function)
        probabilities = self._probabilities(logits).astype(np.float32, copy=False)
        for k, (_, item, j) in enumerate(batch):
            if item.logits is None:
                item.logits = np.zeros((len(item.rows), logits.shape[1]), dtype=np.float32)
                item.probabilities = np.zeros_like(item.logits)
            item.logits[j] = logits[k]
            item.probabilities[j] = probabilities[k]  # type: ignore[index]
            item.remaining -= 1
            if item.remaining == 0:
                if item.spans is not None:
                    self._combine(item)
                self._answer(item)
        self._flush()
        if self.on_batch is not None:
            try:
                self.on_batch(BatchStats(len(batch), len(batch) * width, seconds))
            except Exception:  # metrics must never break serving
                log.exception("batcher %s: on_batch hook failed", self.name)
