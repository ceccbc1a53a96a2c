"""The HTTP API through FastAPI's TestClient over real tiny bundles: answers, limits, errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, softmax
from kdserve.serve.runtime import parallelism_for
from tests.serve.conftest import make_settings, ready_client, wait_ready

POSITIVE = "the movie was really wonderful ."
NEGATIVE = "the plot was very dull ."


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


def test_classify_answers_like_the_bundle(tiny_bundles: Path) -> None:
    expected = softmax(BundleModel(tiny_bundles / "tiny-textcnn").predict([POSITIVE, NEGATIVE]))
    checksum = BundleModel(tiny_bundles / "tiny-textcnn").manifest.checksum
    with ready_client(tiny_bundles) as client:
        r = client.post("/classify", json={"texts": [POSITIVE, NEGATIVE], "model": "tiny-textcnn", "all_scores": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert r.headers["x-request-id"] == body["request_id"] and len(body["request_id"]) == 32
        assert body["route"] == "tiny-textcnn" and body["variant"] is None and body["shadowed"] is False
        assert body["models"] == {"tiny-textcnn": checksum}
        labels = [res["label"] for res in body["results"]]
        assert labels == ["positive", "negative"]
        for res, probs in zip(body["results"], expected):
            assert res["model"] == "tiny-textcnn" and res["checksum"] == checksum and res["escalated"] is False
            assert res["score"] == pytest.approx(float(probs.max()), abs=1e-6)
            assert {s["label"]: s["score"] for s in res["scores"]} == pytest.approx(
                {"negative": float(probs[0]), "positive": float(probs[1])}, abs=1e-6
            )
        # top_k=1: one score; no scoring option: none; a request id given is echoed in body and header
        r = client.post(
            "/classify", json={"text": POSITIVE, "model": "tiny-textcnn", "top_k": 1, "request_id": "abc-1"}
        )
        assert r.json()["results"][0]["scores"] == [
            {"label": "positive", "score": pytest.approx(float(expected[0, 1]), abs=1e-6)}
        ]
        assert r.json()["request_id"] == "abc-1" and r.headers["x-request-id"] == "abc-1"
        r = client.post(
            "/classify", json={"text": POSITIVE, "model": "tiny-textcnn"}, headers={"X-Request-ID": "hdr-7"}
        )
        assert r.json()["results"][0]["scores"] is None and r.json()["request_id"] == "hdr-7"
        # aliases route to a model of that role
        r = client.post("/classify", json={"text": POSITIVE, "model": "teacher"})
        assert r.json()["route"] == "teacher" and r.json()["results"][0]["model"] == "tiny-teacher"


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"text": "hi", "extra": 1}, 422, "invalid_request", "extra: unknown field"),
        ({"text": 5}, 422, "invalid_request", "text: Input should be a valid string"),
        ({"texts": "hi"}, 422, "invalid_request", "texts: Input should be a valid list"),
        ({"text": "a", "texts": ["b"]}, 422, "invalid_request", "give exactly one of 'text'"),
        ({}, 422, "invalid_request", "give exactly one of 'text'"),
        (
            {"text": "a", "top_k": 2, "all_scores": True},
            422,
            "invalid_request",
            "at most one of 'top_k' and 'all_scores'",
        ),
        ({"text": "a", "top_k": 0}, 422, "invalid_request", "top_k: Input should be greater than or equal to 1"),
        ({"text": "a", "truncate": "no"}, 422, "invalid_request", "truncate: Input should be a valid boolean"),
        ({"text": "   \n"}, 422, "invalid_request", "text is empty or whitespace-only"),
        ({"texts": ["ok", ""]}, 422, "invalid_request", "texts[1] is empty or whitespace-only"),
        ({"texts": []}, 422, "invalid_request", "texts is empty"),
        ({"texts": ["a"] * 5}, 422, "invalid_request", "too many texts: 5 > max_texts_per_request (4)"),
        ({"texts": ["ok", "x" * 41]}, 422, "invalid_request", "texts[1] has 41 characters, over max_text_chars (40)"),
        ({"text": "a", "model": "nope"}, 404, "unknown_model", "unknown model or route 'nope'"),
        ({"text": "a", "request_id": "bad id!"}, 422, "invalid_request", "request_id: String should match pattern"),
    ],
)
def test_invalid_requests(tiny_bundles: Path, body: dict[str, Any], status: int, code: str, message: str) -> None:
    with ready_client(tiny_bundles, models=["tiny-textcnn"], max_texts_per_request=4, max_text_chars=40) as client:
        got = error_of(client.post("/classify", json=body))
    assert got[:2] == (status, code) and message in got[2], got


def test_errors_are_json_everywhere(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        assert error_of(client.get("/nope"))[:2] == (404, "not_found")
        status, code, message = error_of(client.get("/classify"))
        assert (status, code) == (405, "method_not_allowed") and "GET" in message
        status, code, message = error_of(
            client.post("/classify", content=b"{not json", headers={"Content-Type": "application/json"})
        )
        assert (status, code) == (422, "invalid_request") and "JSON" in message
        assert error_of(client.get("/models/nope"))[:2] == (404, "not_found")
        assert error_of(client.post("/admin/reload"))[:2] == (404, "not_found")  # no token configured
        # OpenAPI documents the API
        spec = client.get("/openapi.json").json()
        assert {"/classify", "/models", "/ready", "/metrics", "/", "/v2/models/{name}/infer"} <= set(spec["paths"])
        assert "ClassifyRequest" in spec["components"]["schemas"]


def test_body_limit_before_parsing(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, models=["tiny-textcnn"], max_body_bytes=200) as client:
        big = b'{"text": "' + b"a" * 300 + b'"}'
        status, code, message = error_of(
            client.post("/classify", content=big, headers={"Content-Type": "application/json"})
        )
        assert (status, code) == (413, "payload_too_large") and "max_body_bytes = 200" in message
        # no Content-Length (chunked): refused while reading, whatever the JSON would have said
        chunks = iter([b'{"text": "', b"a" * 150, b"a" * 150, b'"}'])
        status, code, _ = error_of(
            client.post("/classify", content=chunks, headers={"Content-Type": "application/json"})
        )
        assert (status, code) == (413, "payload_too_large")
        # not even valid JSON: still 413, so the limit came first
        assert error_of(client.post("/classify", content=b"x" * 500))[0] == 413
        assert client.post("/classify", json={"text": "great"}).status_code == 200


def test_truncate_false_names_the_text(tiny_bundles: Path) -> None:
    long_text = " ".join(["great"] * 40)  # > 32 tokens, under max_text_chars
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        status, code, message = error_of(
            client.post("/classify", json={"texts": ["good", long_text], "truncate": False})
        )
        assert (status, code) == (413, "text_too_long")
        assert message.startswith("texts[1] is longer than 32 tokens, the limit of model 'tiny-textcnn'")
        r = client.post("/classify", json={"texts": ["good", long_text]})
        assert r.status_code == 200 and r.json()["results"][1]["label"] == "positive"


def test_queue_full_is_429_with_retry_after(tiny_bundles: Path) -> None:
    # a long batching wait keeps the first request queued: the queue (2 texts) is then full
    with ready_client(
        tiny_bundles,
        models=["tiny-textcnn"],
        max_queue_texts=2,
        max_texts_per_request=2,
        max_wait_ms=800,
        retry_after_s=3,
        adaptive_wait=False,
    ) as client:
        first: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: first.update(r=client.post("/classify", json={"texts": ["good", "bad"]}))
        )
        thread.start()
        deadline = time.monotonic() + 5
        service = client.app.state.service
        while service.slots["tiny-textcnn"].batcher.queue_depth < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        r = client.post("/classify", json={"text": "great"})
        thread.join(10)
        status, code, message = error_of(r)
        assert (status, code) == (429, "queue_full") and r.headers["retry-after"] == "3"
        assert "queue is full (2 texts waiting, limit 2)" in message
        assert first["r"].status_code == 200
        metrics = client.get("/metrics").text
        assert 'kdserve_rejected_total{reason="queue_full"} 1.0' in metrics
        assert 'kdserve_model_requests_total{model="tiny-textcnn",status="queue_full"} 1.0' in metrics


def test_timeout_is_503_and_the_text_never_runs(tiny_bundles: Path) -> None:
    with ready_client(
        tiny_bundles, models=["tiny-textcnn"], request_timeout_s=0.2, max_wait_ms=1000, adaptive_wait=False
    ) as client:
        slot = client.app.state.service.slots["tiny-textcnn"]
        started = time.monotonic()
        r = client.post("/classify", json={"text": "great"})
        assert time.monotonic() - started < 0.9  # the deadline, not the 1 s batch wait
        status, code, message = error_of(r)
        assert (status, code) == (503, "timeout") and r.headers["retry-after"] == "1"
        assert "request_timeout_s (0.2 s)" in message
        deadline = time.monotonic() + 5
        while slot.batcher.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slot.batcher.dropped == 1 and slot.batcher.batches == 0  # dropped before inference
        counters = client.get("/models/tiny-textcnn").json()["counters"]
        assert counters["requests"] == 1 and counters["errors"] == 1 and counters["batches"] == 0


def test_ready_is_503_until_warm(tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    import kdserve.serve.service
    from kdserve.serve.app import create_app

    gate = threading.Event()
    real_warm_up = kdserve.serve.service.warm_up

    def slow_warm_up(*args: Any, **kw: Any) -> None:
        assert gate.wait(20)
        real_warm_up(*args, **kw)

    monkeypatch.setattr(kdserve.serve.service, "warm_up", slow_warm_up)
    app = create_app(make_settings(tiny_bundles, models=["tiny-textcnn"]))
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "alive"}
        status, code, message = error_of(client.get("/ready"))
        assert (status, code) == (503, "not_ready") and "loading" in message
        assert error_of(client.post("/classify", json={"text": "great"}))[:2] == (503, "not_ready")
        deadline = time.monotonic() + 20  # on a busy machine the bundle may still be loading here
        while client.get("/models/tiny-textcnn").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/models/tiny-textcnn").json()["status"] == "warming"  # held at the gate
        assert client.get("/v2/health/ready").status_code == 503
        gate.set()
        wait_ready(client.get)
        assert client.get("/models/tiny-textcnn").json()["status"] == "ready"
        assert client.post("/classify", json={"text": "great"}).status_code == 200
        assert "kdserve_ready 1.0" in client.get("/metrics").text


def test_models_and_metrics(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles) as client:
        for _ in range(3):
            assert client.post("/classify", json={"texts": ["good", "bad"], "model": "tiny-bilstm"}).status_code == 200
        client.post("/classify", json={"text": "a", "model": "nope"})
        models = client.get("/models").json()
        assert models["ready"] is True and [m["name"] for m in models["models"]] == [
            "tiny-bilstm",
            "tiny-teacher",
            "tiny-textcnn",
        ]
        assert "routes" in models["routing"]
        one = client.get("/models/tiny-bilstm").json()
        assert one["role"] == "student" and one["model_kind"] == "bilstm" and one["labels"] == ["negative", "positive"]
        assert (
            one["manifest"]["name"] == "tiny-bilstm"
            and one["checksum"] == one["manifest"]["files"]["model.onnx"]["sha256"]
        )
        assert one["providers"] == ["CPUExecutionProvider"] and one["rows_alone"] is False
        # auto threads (the tests' settings may pin them): a BiLSTM gets one unless a number was set
        settings = client.app.state.settings
        assert (one["intra_op_threads"], one["workers"]) == parallelism_for(
            "bilstm", settings.intra_op_threads, settings.model_workers
        )
        c = one["counters"]
        assert (c["requests"], c["texts"], c["errors"], c["queue_depth"]) == (3, 6, 0, 0)
        assert c["batches"] >= 3 and c["mean_batch_size"] == pytest.approx(6 / c["batches"])
        assert client.get("/models/tiny-teacher").json()["role"] == "teacher"
        text = client.get("/metrics").text
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="200"} 3.0' in text
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="404"} 1.0' in text
        assert 'kdserve_model_requests_total{model="tiny-bilstm",status="ok"} 3.0' in text
        assert 'kdserve_model_texts_total{model="tiny-bilstm"} 6.0' in text
        assert 'kdserve_queue_depth{model="tiny-bilstm"} 0.0' in text
        assert 'kdserve_batch_size_count{model="tiny-bilstm"}' in text
        assert 'kdserve_http_request_duration_seconds_bucket{endpoint="/classify",le="+Inf"} 4.0' in text


def test_concurrent_requests_are_batched_and_answer_as_alone(tiny_bundles: Path) -> None:
    texts = [
        "great",
        "the plot was very boring and the acting was quite awful .",
        "dull",
        POSITIVE,
        NEGATIVE,
        "excellent",
    ]
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    alone = {t: softmax(model.run(model.encode([t])))[0] for t in texts}
    with ready_client(tiny_bundles, models=["tiny-bilstm"], max_wait_ms=300, adaptive_wait=False) as client:
        out: dict[str, Any] = {}

        def ask(t: str) -> None:
            out[t] = client.post("/classify", json={"text": t, "all_scores": True}).json()

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        counters = client.get("/models/tiny-bilstm").json()["counters"]
    assert counters["batches"] < len(texts)  # several requests shared a batch
    for t in texts:
        got = {s["label"]: s["score"] for s in out[t]["results"][0]["scores"]}
        assert [got["negative"], got["positive"]] == pytest.approx(alone[t].tolist(), abs=1e-5)


def test_cors_off_by_default_and_on_when_configured(tiny_bundles: Path) -> None:
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        r = client.options("/classify", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with ready_client(tiny_bundles, models=["tiny-textcnn"], cors_origins=["http://ui.example"]) as client:
        r = client.options("/classify", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        # the actual request, answered by the direct /classify path, carries the header too
        r = client.post("/classify", json={"text": "good"}, headers={"Origin": "http://ui.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ui.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


def test_texts_are_not_logged_unless_asked(tiny_bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "the acting was secretly wonderful ."
    with caplog.at_level("DEBUG"):
        with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
            client.post("/classify", json={"texts": [secret, " ".join(["great"] * 40)], "truncate": False})
            client.post("/classify", json={"text": secret})
    assert secret not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        with ready_client(tiny_bundles, models=["tiny-textcnn"], log_texts=True) as client:
            client.post("/classify", json={"text": secret})
    assert secret in caplog.text


def test_batched_probabilities_match_numpy_softmax(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        r = client.post("/", json={"inputs": ["great", "dull"], "parameters": {"function_to_apply": "none"}})
        logits = {d["label"]: d["score"] for d in r.json()[0]}
        r2 = client.post("/", json={"inputs": "great"})
    probs = softmax(np.array([[logits["negative"], logits["positive"]]], dtype=np.float32))[0]
    assert {d["label"]: d["score"] for d in r2.json()[0]} == pytest.approx(
        {"negative": float(probs[0]), "positive": float(probs[1])}, abs=1e-6
    )


def test_inflight_limit_is_503_but_probes_still_answer(tiny_bundles: Path) -> None:
    with ready_client(
        tiny_bundles, models=["tiny-textcnn"], max_inflight_requests=1, max_wait_ms=600, adaptive_wait=False
    ) as client:
        first: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: first.update(r=client.post("/classify", json={"text": "good"})))
        thread.start()
        deadline = time.monotonic() + 5
        while client.app.state.service.slots["tiny-textcnn"].batcher.queue_depth < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        r = client.post("/classify", json={"text": "great"}, headers={"X-Request-ID": "refused-1"})
        v2 = client.post("/v2/models/tiny-textcnn/infer", json={"inputs": []})
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        assert "kdserve_inflight_requests 1.0" in client.get("/metrics").text
        thread.join(10)
        status, code, message = error_of(r)
        assert (status, code) == (503, "overloaded") and r.headers["retry-after"] == "1"
        assert "max_inflight_requests = 1" in message and r.headers["x-request-id"] == "refused-1"
        # the Open Inference Protocol's own error shape, refused just the same
        assert v2.status_code == 503 and v2.json() == {"error": message, "code": "overloaded"}
        assert v2.headers["retry-after"] == "1" and len(v2.headers["x-request-id"]) == 32
        assert first["r"].status_code == 200
        assert client.post("/classify", json={"text": "great"}).status_code == 200  # the slot was released
        metrics = client.get("/metrics").text
        assert 'kdserve_rejected_total{reason="overloaded"} 2.0' in metrics
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="503"} 1.0' in metrics


def test_unexpected_errors_are_json_500_without_internals(
    tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from kdserve.serve.app import create_app

    app = create_app(make_settings(tiny_bundles, models=["tiny-textcnn"]))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        slot = app.state.service.slots["tiny-textcnn"]

        def broken(encoded: Any) -> np.ndarray:
            raise RuntimeError("onnx blew up at node 7")

        monkeypatch.setattr(slot.batcher.model, "run", broken)  # a model failing at run time
        r = client.post("/classify", json={"text": "great"})
        assert error_of(r) == (500, "internal_error", "internal server error; see the server log")
        assert "onnx blew up" in caplog.text  # in the log, not in the answer
        assert client.get("/models/tiny-textcnn").json()["counters"]["errors"] == 1
