"""Faults: corrupted bundles at start and on reload, a model failing at run time, a slow model,
SIGTERM under load. Each asserts what the server promises: refuse with the file named, keep the
old version serving, fail only the affected requests, honour timeouts and queue bounds, lose no
accepted request.

Already covered in tests/serve: the CLI refusing a bundle with a modified tokenizer and one
ONNX Runtime cannot load (test_config.py), a reload with a modified labels.json and a reload that
would strand a route (test_admin.py), a run-time failure of every batch (test_api.py), SIGTERM
with six queued requests (test_shutdown.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kdserve.core.bundle import BundleError, BundleModel, Encoded, read_manifest, softmax, write_manifest
from tests.conftest import REPO
from tests.reliability.conftest import build_fragile_bundle, error_of, hold_queue, serving
from tests.serve.conftest import free_port, make_settings, ready_client, wait_process_ready, wait_ready

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_onnx_rehashed(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"\x08\x07not an onnx graph")
    write_manifest(folder, read_manifest(folder))


# (name, how to break the bundle folder, the file the error must name, how the message goes on)
CORRUPTIONS: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("model.onnx truncated", lambda f: _truncate(f / "model.onnx"), "model.onnx", "size"),
    ("model.onnx missing", lambda f: (f / "model.onnx").unlink(), "model.onnx", "listed in the manifest but missing"),
    (
        "tokenizer.json missing",
        lambda f: (f / "tokenizer.json").unlink(),
        "tokenizer.json",
        "listed in the manifest but missing",
    ),
    ("manifest.json half-written", lambda f: _truncate(f / "manifest.json"), "manifest.json", "unreadable JSON"),
    (
        "manifest.json edited",
        lambda f: (f / "manifest.json").write_text(
            (f / "manifest.json").read_text().replace('"max_length": 32', '"max_length": 64')
        ),
        "manifest.json",
        "sha256 does not match its manifest_sha256",
    ),
    ("consistent but not ONNX", _garbage_onnx_rehashed, "model.onnx", "ONNX Runtime cannot load it"),
]


@pytest.mark.parametrize(("name", "corrupt", "file", "why"), CORRUPTIONS[:5], ids=[c[0] for c in CORRUPTIONS[:5]])
def test_a_corrupted_bundle_at_start_is_refused_naming_the_file(
    tiny_bundles: Path, tmp_path: Path, name: str, corrupt: Callable[[Path], None], file: str, why: str
) -> None:
    """Building the app verifies every bundle before anything is served (the CLI builds it before
    binding the port; the case of a consistent bundle ONNX Runtime cannot open is in test_config)."""
    from kdserve.serve.app import create_app

    root = tmp_path / "bundles"
    shutil.copytree(tiny_bundles / "tiny-textcnn", root / "tiny-textcnn")
    shutil.copytree(tiny_bundles / "tiny-bilstm", root / "tiny-bilstm")
    corrupt(root / "tiny-bilstm")
    with pytest.raises(BundleError) as exc:
        create_app(make_settings(root))
    message = str(exc.value)
    assert message.startswith(f"{root / 'tiny-bilstm' / file}: ") and why in message, message
    assert "\n" not in message


def test_a_corrupted_or_missing_bundle_on_reload_keeps_the_old_version_serving(
    tiny_bundles: Path, tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    pristine = tmp_path / "pristine"
    for model in ("tiny-textcnn", "tiny-bilstm"):
        shutil.copytree(tiny_bundles / model, pristine / model)
    shutil.copytree(pristine, root)
    breakages = [(n, c, str(root / "tiny-bilstm" / f), w) for n, c, f, w in CORRUPTIONS]
    breakages += [
        (
            "bundle folder gone",
            lambda f: shutil.rmtree(f),
            str(root),
            "no bundle tiny-bilstm any more, but it is being served",
        ),
        ("bundles root gone", lambda f: shutil.rmtree(root), f"bundles folder not found: {root}", ""),
    ]
    with ready_client(root, admin_token=TOKEN) as client:
        before = {m: client.get(f"/models/{m}").json()["checksum"] for m in ("tiny-textcnn", "tiny-bilstm")}
        for name, corrupt, file, why in breakages:
            corrupt(root / "tiny-bilstm")
            status, code, message = error_of(client.post("/admin/reload", headers=AUTH))
            assert (status, code) == (409, "reload_failed"), (name, message)
            assert message.startswith(f"reload failed, still serving the previous bundles: {file}"), (name, message)
            assert why in message, (name, message)
            for model, checksum in before.items():  # the old versions answer, untouched
                r = client.post("/classify", json={"text": "the movie was great .", "model": model})
                assert r.status_code == 200 and r.json()["results"][0]["checksum"] == checksum, (name, r.text)
            assert client.get("/ready").status_code == 200
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(pristine, root)
        assert f'kdserve_reloads_total{{status="failed"}} {float(len(breakages))}' in client.get("/metrics").text
        # repaired: the same reload succeeds
        assert client.post("/admin/reload", headers=AUTH).status_code == 200


def test_an_inference_error_fails_only_the_requests_it_affects(
    tiny_bundles: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real ONNX graph that fails at run time for inputs over 8 tokens: the long text gets a JSON
    500, a short text batched with it in the same batch still gets its answer, the server keeps serving."""
    from fastapi.testclient import TestClient

    from kdserve.serve.app import create_app

    build_fragile_bundle(tiny_bundles / "tiny-textcnn", tmp_path / "bundles" / "fragile")
    short, long = "the movie was great .", " ".join(["the movie was great ."] * 4)
    model = BundleModel(tmp_path / "bundles" / "fragile")
    assert model.encode([short]).lengths[0] <= 8 < model.encode([long]).lengths[0]
    expected = float(softmax(model.run(model.encode([short])))[0].max())
    app = create_app(make_settings(tmp_path / "bundles", max_wait_ms=400, **hold_queue()))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        assert client.post("/classify", json={"text": short}).status_code == 200
        assert error_of(client.post("/classify", json={"text": long})) == (
            500,
            "internal_error",
            "internal server error; see the server log",
        )
        answers: dict[str, Any] = {}

        def ask(text: str) -> None:
            answers[text] = client.post("/classify", json={"text": text})

        batcher = app.state.service.slots["fragile"].batcher
        batches = batcher.batches
        threads = [threading.Thread(target=ask, args=(t,)) for t in (short, long)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # both waited 400 ms in the queue and went in one batch; it failed, and was rerun per request
        assert "a batch of 2 failed" in caplog.text and "rerunning its 2 requests one by one" in caplog.text
        assert answers[short].status_code == 200
        assert answers[short].json()["results"][0]["score"] == pytest.approx(expected, abs=1e-6)
        assert error_of(answers[long])[:2] == (500, "internal_error")
        assert batcher.batches == batches + 1  # the rerun of the short one
        assert client.get("/ready").status_code == 200
        assert client.post("/classify", json={"texts": [short, short]}).status_code == 200
        counters = client.get("/models/fragile").json()["counters"]
        assert (counters["requests"], counters["errors"]) == (5, 2)


class _PoisonTokenizer:
    """A Runnable whose tokenizer raises on one text, as a tokenizer bug would."""

    def __init__(self, model: BundleModel, poison: str) -> None:
        self.model, self.poison = model, poison

    def encode(self, texts: Sequence[str]) -> Encoded:
        if self.poison in texts:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return self.model.encode(texts)

    def run(self, encoded: Encoded) -> np.ndarray:
        return self.model.run(encoded)


def test_a_tokenizer_error_fails_only_that_request(tiny_bundles: Path) -> None:
    from kdserve.serve.batching import BatchConfig, Batcher

    model = BundleModel(tiny_bundles / "tiny-textcnn")
    # all three requests in one pool: every one waits the full 0.3 s for company
    hold = {"adaptive_wait": False} if "adaptive_wait" in BatchConfig.__dataclass_fields__ else {}
    batcher = Batcher("m", _PoisonTokenizer(model, "poison"), BatchConfig(max_wait_s=0.3, **hold))
    try:
        futures = [batcher.submit(["great"]), batcher.submit(["dull", "poison"]), batcher.submit(["awful", "good"])]
        assert futures[0].result(10).shape == (1, 2) and futures[2].result(10).shape == (2, 2)
        with pytest.raises(TypeError, match="TextEncodeInput"):
            futures[1].result(10)
        assert batcher.submit(["great"]).result(10).shape == (1, 2)
    finally:
        batcher.close(5)
    assert batcher.batches == 3  # the pool failed to tokenize, then two requests ran alone, then the last


class _Slow:
    """A Runnable that takes ``seconds`` per batch, as an overloaded or pathological model would."""

    def __init__(self, model: Any, seconds: float) -> None:
        self.model, self.seconds = model, seconds

    def encode(self, texts: Sequence[str]) -> Encoded:
        return self.model.encode(texts)

    def run(self, encoded: Encoded) -> np.ndarray:
        time.sleep(self.seconds)
        return self.model.run(encoded)


def test_a_slow_model_honours_timeouts_and_bounds_the_queue(tiny_bundles: Path) -> None:
    """0.4 s per batch of 2, a 1 s deadline, 8 queued texts at most, 30 requests at once: some are
    answered, the queue overflows into 429s, the ones left waiting past the deadline get 503; each
    answer comes within the deadline (plus scheduling slack) and the queue never exceeds its bound."""
    from kdserve.bench.loadgen import Target, closed_loop, run_async
    from kdserve.serve.app import create_app

    timeout, queue_limit = 1.0, 8
    app = create_app(
        make_settings(
            tiny_bundles,
            models=["tiny-textcnn"],
            request_timeout_s=timeout,
            max_wait_ms=0,
            max_batch_size=2,
            max_queue_texts=queue_limit,
            max_texts_per_request=2,
            retry_after_s=2,
        )
    )
    with serving(app) as url:
        batcher = app.state.service.slots["tiny-textcnn"].batcher
        batcher.model = _Slow(batcher.model, 0.4)
        depths: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                depths.append(batcher.queue_depth)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        target = Target.parse(url, "/classify")
        requests = [target.request(f'{{"text": "the movie was great {i} ."}}'.encode()) for i in range(30)]
        try:
            run = run_async(
                lambda: closed_loop(target, requests, concurrency=30, duration_s=0, total_requests=30, timeout_s=10)
            )
        finally:
            stop.set()
            watcher.join()
        statuses = Counter(r.status for r in run.records)
        assert sum(statuses.values()) == 30 and set(statuses) <= {200, 429, 503}, statuses
        assert statuses[200] >= 2 and statuses[429] >= 1 and statuses[503] >= 1, statuses
        assert max(depths) <= queue_limit
        slowest = max(r.done - r.sent for r in run.records) / 1e9
        assert slowest < timeout + 0.5, f"an answer took {slowest:.2f} s with a {timeout} s deadline"
        # refusals are immediate: a full queue answers 429 at once, it does not wait for room
        refused = [(r.done - r.sent) / 1e9 for r in run.records if r.status == 429]
        assert max(refused) < 0.5, f"a 429 took {max(refused):.2f} s"
        batcher.model = batcher.model.model
        # the burst leaves nothing behind: texts of requests already answered 503 are dropped as soon
        # as the worker is past the slow batch it may still be running (0.4 s), then the next
        # request is answered at once
        drained_by = time.monotonic() + 2.0
        while batcher.queue_depth and time.monotonic() < drained_by:
            time.sleep(0.01)
        assert batcher.queue_depth == 0, "texts of answered requests stayed queued"
        r = httpx.post(url + "/classify", json={"text": "great"}, timeout=10)
        assert r.status_code == 200 and batcher.queue_depth == 0


def test_the_deadline_counts_from_admission_not_from_inference(
    tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """request_timeout_s covers the server's time from reading the request, so a request delayed
    before inference (an event loop busy with other requests, as under overload) is answered 503
    instead of a late 200: 0.6 s of delay after admission against a 0.5 s deadline."""
    from fastapi.testclient import TestClient

    from kdserve.serve.app import create_app

    app = create_app(make_settings(tiny_bundles, models=["tiny-textcnn"], request_timeout_s=0.5))
    with TestClient(app) as client:
        wait_ready(client.get)
        service = app.state.service
        batches = service.slots["tiny-textcnn"].batcher.batches
        real_validate = service.validate_texts

        def busy_loop_then_validate(*args: Any, **kwargs: Any) -> None:
            time.sleep(0.6)  # blocks the event loop, as a flood of other requests would
            real_validate(*args, **kwargs)

        monkeypatch.setattr(service, "validate_texts", busy_loop_then_validate)
        started = time.monotonic()
        r = client.post("/classify", json={"text": "great"})
        assert time.monotonic() - started < 1.0
        status, code, message = error_of(r)
        assert (status, code) == (503, "timeout") and "request_timeout_s (0.5 s)" in message
        assert service.slots["tiny-textcnn"].batcher.batches == batches  # never ran
        monkeypatch.setattr(service, "validate_texts", real_validate)
        assert client.post("/classify", json={"text": "great"}).status_code == 200


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_under_load_loses_no_accepted_request(tiny_bundles: Path, tmp_path: Path) -> None:
    """The load generator replays up to 20,000 distinct requests (16 connections) at the real ``kdserve
    serve``; SIGTERM lands mid-load. The server logs each request its handler accepts (``--log-texts``);
    every one of them must get its 200 answer, the process must exit 0 after draining, and the
    requests refused once it stopped listening must fail without an answer (never a wrong one)."""
    from kdserve.bench.loadgen import CONNECTION_ERROR, Target, replay, run_async

    port = free_port()
    env = {**os.environ, "KDSERVE_WARMUP_BATCH_SIZES": "1", "KDSERVE_WARMUP_LENGTHS": "8"}
    log_path = (
        tmp_path / "server.log"
    )  # a file, not a pipe: thousands of log lines would fill a pipe and stall the server
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kdserve",
                "serve",
                "--bundles",
                str(tiny_bundles),
                "--models",
                "tiny-textcnn",
                # every batch waits 20 ms (no adaptive wait), so requests are surely in flight at SIGTERM
                "--port",
                str(port),
                "--log-texts",
                "--max-wait-ms",
                "20",
                "--no-adaptive-wait",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    n = 20_000
    try:
        wait_process_ready(proc, url, log_path.read_text)
        target = Target.parse(url, "/classify")
        requests = [target.request(f'{{"text": "load {i} great"}}'.encode()) for i in range(n)]
        sigterm_at: list[int] = []

        def terminate_mid_load() -> None:
            time.sleep(1.5)
            sigterm_at.append(time.perf_counter_ns())
            proc.send_signal(signal.SIGTERM)

        killer = threading.Thread(target=terminate_mid_load)
        killer.start()
        run = run_async(lambda: replay(target, requests, concurrency=16, timeout_s=30))
        killer.join()
        code = proc.wait(60)
        stderr = log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 0, stderr[-3000:]
    assert "server stopped on SIGTERM after draining in-flight requests" in stderr
    accepted = {int(i) for i in re.findall(r"texts=\['load (\d+) great'\]", stderr)}
    statuses = [r.status for r in run.records]
    answered = {i for i, s in enumerate(statuses) if s == 200}
    assert accepted, "the server logged no request"
    lost = sorted(accepted - answered)
    assert not lost, f"{len(lost)} accepted request(s) without an answer, e.g. {lost[:5]}: {Counter(statuses)}"
    assert answered == accepted  # every 200 is for a request the server logged
    # the load was real: answers arrived after SIGTERM for requests sent before it
    after = [r for r in run.records if r.sent < sigterm_at[0] < r.done and r.status == 200]
    assert after, "no request was in flight when SIGTERM arrived"
    # what the server did not accept failed as a connection error, not as some other answer
    assert set(statuses) <= {200, CONNECTION_ERROR}, Counter(statuses)
    assert 0 < len(answered) < n
    print(
        f"\nSIGTERM under load: {len(answered)} requests answered 200 (all {len(accepted)} the server accepted), "
        f"{len(after)} of them in flight at SIGTERM; "
        f"{statuses.count(CONNECTION_ERROR)} refused after it stopped listening"
    )
