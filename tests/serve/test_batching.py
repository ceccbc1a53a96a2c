"""Dynamic batching on real tiny bundles, without HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, Encoded, softmax
from kdserve.serve.batching import BatchConfig, Batcher, BatchStats, Scores
from kdserve.serve.errors import InferenceFailed, NotReady, QueueFull, TextTooLong

MIXED = [
    "great .",
    "the movie was really wonderful .",
    "dull",
    "the plot was very boring and the acting was quite awful , but the film was good .",
    "the acting was bad .",
    "excellent",
    "the film was truly great and the plot was excellent .",
]


class Recording:
    """The real bundle model, recording each batch's shape; ``gate`` (when given) holds every
    ``run`` until set, to stand for a slow model."""

    def __init__(self, model: BundleModel, gate: threading.Event | None = None) -> None:
        self.model = model
        self.gate = gate
        self.shapes: list[tuple[int, int]] = []
        self.rows_seen: list[int] = []

    def encode(self, texts: Sequence[str]) -> Encoded:
        return self.model.encode(texts)

    def run(self, encoded: Encoded) -> np.ndarray:
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.shapes.append(tuple(encoded.input_ids.shape))  # type: ignore[arg-type]
        self.rows_seen.append(encoded.input_ids.shape[0])
        return self.model.run(encoded)


def config(model: BundleModel, **kw: object) -> BatchConfig:
    # Fixed-window batching unless a test asks otherwise: pooling must not depend on arrival gaps.
    base: dict[str, object] = dict(
        pad_id=model.manifest.pad_id, max_length=model.manifest.max_length, adaptive_wait=False
    )
    base.update(kw)
    return BatchConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["tiny-bilstm", "tiny-textcnn"])
def test_batched_logits_equal_unbatched(tiny_bundles: Path, name: str) -> None:
    model = BundleModel(tiny_bundles / name)
    alone = np.concatenate([model.run(model.encode([t])) for t in MIXED])
    rec = Recording(model)
    stats: list[BatchStats] = []
    # a long wait so that all three requests land in one pool, and batches of 4: mixed lengths share batches
    batcher = Batcher(name, rec, config(model, max_batch_size=4, max_wait_s=0.3), stats.append)
    try:
        futures = [batcher.submit(MIXED[:3]), batcher.submit(MIXED[3:5]), batcher.submit(MIXED[5:])]
        batched = np.concatenate([f.result(10) for f in futures])
    finally:
        batcher.close(5)
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    assert sorted(rec.rows_seen) == [3, 4] and batcher.batches == 2
    # length-sorted: the 4 shortest texts are one batch, padded to the longest of them only
    lengths = sorted(len(model.encode([t]).input_ids[0]) for t in MIXED)
    assert (4, lengths[3]) in rec.shapes and (3, lengths[-1]) in rec.shapes
    assert [s.size for s in stats] == [4, 3]
    assert stats[0].tokens == 4 * lengths[3]


def test_token_budget_splits_batches(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    lengths = sorted(len(model.encode([t]).input_ids[0]) for t in MIXED)
    rec = Recording(model)
    # a budget that fits two of the longest texts but not three
    budget = 2 * lengths[-1]
    batcher = Batcher("m", rec, config(model, max_batch_size=64, max_batch_tokens=budget, max_wait_s=0.2))
    try:
        batcher.submit(MIXED).result(10)
    finally:
        batcher.close(5)
    assert sum(rec.rows_seen) == len(MIXED)
    assert all(rows * width <= budget for rows, width in rec.shapes)
    # greedy over ascending lengths: a batch closes when one more row would pass the budget
    expected: list[tuple[int, int]] = []
    rows = 0
    for i, n in enumerate(lengths):
        if rows and (rows + 1) * n > budget:
            expected.append((rows, lengths[i - 1]))
            rows = 0
        rows += 1
    expected.append((rows, lengths[-1]))
    assert rec.shapes == expected and len(expected) >= 2


def test_cancelled_requests_are_dropped_before_inference(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    rec = Recording(model)
    batcher = Batcher("m", rec, config(model, max_wait_s=0.3))
    try:
        gone = batcher.submit(["the movie was great .", "dull"])
        kept = batcher.submit(["the film was awful ."])
        assert gone.cancel()  # the client went away while queued
        logits = kept.result(10)
    finally:
        batcher.close(5)
    assert logits.shape == (1, 2)
    assert rec.rows_seen == [1] and batcher.dropped == 2
    with pytest.raises(CancelledError):
        gone.result(0)


@pytest.mark.parametrize(("wait", "low", "high"), [(0.0, 0.0, 1.0), (1.2, 1.15, 5.0)])
def test_a_lone_request_waits_max_wait_and_zero_disables_it(
    tiny_bundles: Path, wait: float, low: float, high: float
) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    batcher = Batcher("m", model, config(model, max_wait_s=wait))  # batch of 32: never fills here
    try:
        started = time.monotonic()
        batcher.submit(["great"]).result(10)
        assert low <= time.monotonic() - started < high
    finally:
        batcher.close(5)


def adaptive_batcher(tiny_bundles: Path, gate: threading.Event | None = None) -> tuple[Recording, Batcher]:
    """A recording tiny-TextCNN batcher with adaptive waiting and a 1.5 s max wait: any request
    that waited the full window would show in the tests' sub-second bounds."""
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    rec = Recording(model, gate)
    return rec, Batcher("m", rec, config(model, max_wait_s=1.5, adaptive_wait=True))


def test_adaptive_wait_runs_a_lone_request_at_once_and_batches_a_burst(tiny_bundles: Path) -> None:
    rec, batcher = adaptive_batcher(tiny_bundles)
    try:
        started = time.monotonic()
        batcher.submit(["great"]).result(10)
        assert time.monotonic() - started < 1.0  # sparse: no 1.5 s wait
        time.sleep(0.05)
        # a burst: the first arrival after a quiet spell runs at once, the rest arrive while it is
        # taken or running and share the next batch
        futures = [batcher.submit([t]) for t in MIXED[:4]]
        for f in futures:
            f.result(10)
    finally:
        batcher.close(5)
    assert rec.rows_seen[0] == 1 and sum(rec.rows_seen) == 5 and len(rec.rows_seen) <= 3


def test_adaptive_wait_does_not_delay_one_client_sending_back_to_back(tiny_bundles: Path) -> None:
    # One closed-loop client: each request arrives well within max_wait of the previous one, but
    # never with company, so none may wait the 1.5 s for a batch that is not coming.
    rec, batcher = adaptive_batcher(tiny_bundles)
    try:
        started = time.monotonic()
        for text in MIXED[:5]:
            batcher.submit([text]).result(10)
        assert time.monotonic() - started < 1.0
        # requests queued together still share one batch
        futures = [batcher.submit([t]) for t in MIXED[:3]]
        for f in futures:
            f.result(10)
    finally:
        batcher.close(5)
    assert rec.rows_seen[:5] == [1] * 5 and sum(rec.rows_seen[5:]) == 3 and len(rec.rows_seen) <= 7


def test_adaptive_wait_ends_when_as_much_company_as_last_time_arrived(tiny_bundles: Path) -> None:
    # Two closed-loop clients: once a batch of two has run, the next request waits for one more
    # (50 ms here), not for the full 1.5 s or a batch of 32 that never comes.
    gate = threading.Event()
    rec, batcher = adaptive_batcher(tiny_bundles, gate)
    try:
        first = batcher.submit(["great"])  # taken alone at once; the gate holds it in run
        deadline = time.monotonic() + 5
        while batcher.queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        pair = [batcher.submit([t]) for t in MIXED[:2]]  # queued while the model runs
        gate.set()
        for f in [first, *pair]:
            f.result(10)
        started = time.monotonic()
        early = batcher.submit([MIXED[2]])
        time.sleep(0.05)
        late = batcher.submit([MIXED[3]])
        early.result(10)
        late.result(10)
        waited = time.monotonic() - started
    finally:
        batcher.close(5)
    assert rec.rows_seen == [1, 2, 2] and waited < 1.0


def test_full_batch_closes_before_the_wait(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    batcher = Batcher("m", model, config(model, max_batch_size=2, max_wait_s=5.0))
    try:
        started = time.monotonic()
        batcher.submit(["great", "dull"]).result(10)
        assert time.monotonic() - started < 2.0  # not the 5 s wait: the batch was full
    finally:
        batcher.close(5)


def test_queue_bound_and_closing(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    gate = threading.Event()
    rec = Recording(model, gate)
    batcher = Batcher("m", rec, config(model, max_queue_texts=3, max_wait_s=0.0, retry_after_s=7))
    try:
        first = batcher.submit(["great"])  # taken by the worker, which then blocks in run
        deadline = time.monotonic() + 5
        while batcher.queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = batcher.submit(["a", "b", "c"])
        assert batcher.queue_depth == 3
        with pytest.raises(QueueFull) as exc:
            batcher.submit(["d"])
        assert exc.value.retry_after == 7 and "queue is full" in exc.value.message
    finally:
        gate.set()
    assert batcher.close(10)
    # closing drained what was queued
    assert first.result(0).shape == (1, 2) and queued.result(0).shape == (3, 2)
    with pytest.raises(NotReady):
        batcher.submit(["late"])


def test_truncate_false_fails_only_that_request(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    long_text = " ".join(["great"] * (model.manifest.max_length + 5))
    batcher = Batcher("m", model, config(model, max_wait_s=0.2))
    try:
        strict = batcher.submit(["good", long_text], truncate=False)
        lenient = batcher.submit([long_text], truncate=True)
        with pytest.raises(TextTooLong) as exc:
            strict.result(10)
        assert lenient.result(10).shape == (1, 2)
    finally:
        batcher.close(5)
    assert exc.value.index == 1 and exc.value.text == long_text
    assert f"longer than {model.manifest.max_length} tokens" in exc.value.message


def test_a_failing_batch_fails_its_requests_and_the_worker_survives(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")

    class Flaky(Recording):
        def run(self, encoded: Encoded) -> np.ndarray:
            if len(self.shapes) == 0:
                self.shapes.append((0, 0))
                raise RuntimeError("boom")
            return super().run(encoded)

    batcher = Batcher("m", Flaky(model), config(model, max_wait_s=0.0))
    try:
        with pytest.raises(InferenceFailed) as failed:
            batcher.submit(["great"]).result(10)
        assert isinstance(failed.value.__cause__, RuntimeError) and str(failed.value.__cause__) == "boom"
        assert batcher.submit(["great"]).result(10).shape == (1, 2)
    finally:
        batcher.close(5)


def test_batch_config_validates() -> None:
    with pytest.raises(ValueError):
        BatchConfig(max_batch_size=0)
    with pytest.raises(ValueError):
        BatchConfig(max_wait_s=-1)


def test_submit_async_answers_a_batch_in_one_loop_wake_up(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    alone = np.concatenate([model.run(model.encode([t])) for t in MIXED])
    rec = Recording(model)
    batcher = Batcher("m", rec, config(model, max_batch_size=8, max_wait_s=0.3))
    wake_ups: list[int] = []

    async def main() -> list[Scores]:
        loop = asyncio.get_running_loop()
        threadsafe = loop.call_soon_threadsafe

        def counting(callback, *args):  # type: ignore[no-untyped-def]
            wake_ups.append(len(args[0]) if args else 0)
            return threadsafe(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        futures = [batcher.submit_async(MIXED[:3]), batcher.submit_async(MIXED[3:5]), batcher.submit_async(MIXED[5:])]
        return list(await asyncio.gather(*futures))

    try:
        answers = asyncio.run(main())
    finally:
        batcher.close(5)
    logits = np.concatenate([a.logits for a in answers])
    np.testing.assert_allclose(logits, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate([a.probabilities for a in answers]), softmax(alone), atol=1e-6, rtol=0)
    assert [a.logits.shape[0] for a in answers] == [3, 2, 2] and all(
        a.probabilities.dtype == np.float32 for a in answers
    )
    # one batch of 7 texts from three requests: their answers reach the loop together
    assert rec.rows_seen == [7] and wake_ups == [3]


def test_submit_async_cancelled_is_dropped_and_errors_reach_the_loop(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    long_text = " ".join(["great"] * (model.manifest.max_length + 5))
    rec = Recording(model)
    batcher = Batcher("m", rec, config(model, max_wait_s=0.3))

    async def main() -> tuple[Scores, BaseException | None]:
        gone = batcher.submit_async(["the movie was great .", "dull"])
        strict = batcher.submit_async(["good", long_text], truncate=False)
        kept = batcher.submit_async(["the film was awful ."])
        gone.cancel()  # the client went away while queued
        error = None
        try:
            await strict
        except TextTooLong as exc:
            error = exc
        empty = await batcher.submit_async([])
        assert empty.logits.shape == (0, 0)
        return await kept, error

    try:
        kept, error = asyncio.run(main())
    finally:
        batcher.close(5)
    assert kept.logits.shape == (1, 2) and isinstance(error, TextTooLong) and error.index == 1
    assert rec.rows_seen == [1] and batcher.dropped == 2


def test_answers_for_a_closed_loop_are_dropped_and_the_worker_goes_on(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    gate = threading.Event()
    batcher = Batcher("m", Recording(model, gate), config(model, max_wait_s=0.0))
    loop = asyncio.new_event_loop()
    try:

        async def submit() -> asyncio.Future[Scores]:
            return batcher.submit_async(["great"])

        orphan = loop.run_until_complete(submit())
        loop.close()  # its loop is gone before the answer is ready
        gate.set()
        assert batcher.submit(["dull"]).result(10).shape == (1, 2)
    finally:
        gate.set()
        batcher.close(5)
    assert not orphan.done() and batcher.texts_run == 2


def test_two_workers_run_batches_side_by_side(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    alone = np.concatenate([model.run(model.encode([t])) for t in MIXED])
    running: list[int] = []
    overlap = threading.Event()

    class Slow(Recording):
        def run(self, encoded: Encoded) -> np.ndarray:
            running.append(1)
            if len(running) == 2:
                overlap.set()  # a second batch started while the first still runs
            assert overlap.wait(10), "the second worker never ran a batch"
            out = super().run(encoded)
            running.pop()
            return out

    rec = Slow(model)
    batcher = Batcher("m", rec, config(model, max_batch_size=4, max_wait_s=0.0, workers=2))
    try:
        first = batcher.submit(MIXED[:4])  # taken by one worker, which then waits in run for company
        deadline = time.monotonic() + 5
        while batcher.queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        second = batcher.submit(MIXED[4:])  # the other worker takes it
        batched = np.concatenate([first.result(10), second.result(10)])
    finally:
        assert batcher.close(5)
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    assert batcher.batches == 2 and batcher.texts_run == len(MIXED) and overlap.is_set()
    with pytest.raises(ValueError):
        BatchConfig(workers=0)


class Threads(Recording):
    """The real model, recording which thread ran each batch."""

    def __init__(self, model: BundleModel) -> None:
        super().__init__(model)
        self.threads: list[int] = []

    def run(self, encoded: Encoded) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().run(encoded)


def test_a_lone_text_on_an_idle_model_runs_inline_and_company_queues(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    rec = Threads(model)
    company = {"busy": 1}  # connections with a request in progress, as the HTTP edge counts them
    batcher = Batcher("m", rec, config(model, adaptive_wait=True, max_wait_s=0.05), alone=lambda: company["busy"] <= 1)

    async def main() -> tuple[int, list[Scores], list[Scores]]:
        loop_thread = threading.get_ident()
        lone = [await batcher.submit_async([MIXED[0]]), await batcher.submit_async([MIXED[1]])]
        company["busy"] = 3  # two more clients: their requests queue and share a batch
        crowd = list(await asyncio.gather(*(batcher.submit_async([t]) for t in MIXED[2:5])))
        return loop_thread, lone, crowd

    try:
        loop_thread, lone, crowd = asyncio.run(main())
    finally:
        batcher.close(5)
    alone = np.concatenate([model.run(model.encode([t])) for t in MIXED[:5]])
    got = np.concatenate([a.logits for a in lone + crowd])
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lone[0].probabilities, softmax(alone[:1]), atol=1e-6, rtol=0)
    # the two lone texts ran on the event loop's thread, one call each; the crowd on the worker, together
    assert rec.threads[:2] == [loop_thread, loop_thread] and batcher.inline_runs == 2
    assert rec.rows_seen == [1, 1, 3] and rec.threads[2] != loop_thread


def test_inline_is_off_without_the_hook_with_several_texts_or_when_disabled(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    cases = [
        (config(model, adaptive_wait=True), None, ["great"]),  # no hook: the server cannot say it is alone
        (config(model, adaptive_wait=True), lambda: True, ["great", "dull"]),  # two texts: a batch
        (config(model, adaptive_wait=True, inline_lone=False), lambda: True, ["great"]),
    ]
    for cfg, hook, texts in cases:
        rec = Threads(model)
        batcher = Batcher("m", rec, cfg, alone=hook)

        async def main(b: Batcher = batcher, t: list[str] = texts) -> tuple[int, Scores]:
            return threading.get_ident(), await b.submit_async(t)

        try:
            loop_thread, answer = asyncio.run(main())
        finally:
            batcher.close(5)
        assert answer.logits.shape == (len(texts), 2)
        assert batcher.inline_runs == 0 and rec.threads and loop_thread not in rec.threads


def test_an_inline_failure_reaches_the_caller_and_the_batcher_goes_on(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-textcnn")
    long_text = " ".join(["great"] * (model.manifest.max_length + 5))
    batcher = Batcher("m", Recording(model), config(model, adaptive_wait=True), alone=lambda: True)

    async def main() -> tuple[BaseException | None, Scores]:
        error = None
        try:
            await batcher.submit_async([long_text], truncate=False)
        except TextTooLong as exc:
            error = exc
        return error, await batcher.submit_async(["dull"])

    try:
        error, after = asyncio.run(main())
    finally:
        batcher.close(5)
    assert isinstance(error, TextTooLong) and after.logits.shape == (1, 2) and batcher.inline_runs == 2
