"""Standard protocols, called by real clients nobody here wrote, against a real uvicorn on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, softmax
from tests.serve.conftest import real_server

TEXTS = ["the movie was really wonderful .", "the plot was very dull .", "great"]


@pytest.fixture(scope="module")
def server(tiny_bundles: Path) -> Iterator[str]:
    with real_server(tiny_bundles, models=["tiny-textcnn", "tiny-bilstm"], max_wait_ms=1) as url:
        yield url


def expected(tiny_bundles: Path, name: str, texts: list[str]) -> np.ndarray:
    return softmax(BundleModel(tiny_bundles / name).predict(texts))


@pytest.fixture()
def hf_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """huggingface_hub's offline mode (set for every test) refuses any URL, loopback included; lift
    it for the client here, which only talks to 127.0.0.1 (a URL model needs no hub lookup)."""
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub.utils._http import reset_sessions

    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()


def test_huggingface_inference_client(server: str, tiny_bundles: Path, hf_loopback: None) -> None:
    import huggingface_hub as hf

    client = hf.InferenceClient(model=server, timeout=30)
    # the default route is the first student alphabetically: tiny-bilstm
    probs = expected(tiny_bundles, "tiny-bilstm", TEXTS[:1])[0]
    out = client.text_classification(TEXTS[0])
    assert [(o.label, round(o.score, 5)) for o in out] == [
        ("positive", round(float(probs[1]), 5)),
        ("negative", round(float(probs[0]), 5)),
    ]
    top = client.text_classification(TEXTS[1], top_k=1)
    assert [o.label for o in top] == ["negative"]
    # a model by name, as the HF serverless URL /models/{name}
    named = hf.InferenceClient(model=f"{server}/models/tiny-textcnn", timeout=30)
    probs = expected(tiny_bundles, "tiny-textcnn", TEXTS[2:])[0]
    out = named.text_classification(TEXTS[2], function_to_apply="softmax")
    assert {o.label: o.score for o in out} == pytest.approx(
        {"negative": float(probs[0]), "positive": float(probs[1])}, abs=1e-6
    )
    logits = BundleModel(tiny_bundles / "tiny-textcnn").predict(TEXTS[2:])[0]
    sig = named.text_classification(TEXTS[2], function_to_apply="sigmoid")
    assert {o.label: o.score for o in sig} == pytest.approx(
        {"negative": float(1 / (1 + np.exp(-logits[0]))), "positive": float(1 / (1 + np.exp(-logits[1])))}, abs=1e-6
    )


def test_huggingface_shape_for_a_list_and_errors(server: str) -> None:
    r = httpx.post(server + "/", json={"inputs": TEXTS, "parameters": {"top_k": 1}})
    assert r.status_code == 200
    assert [[d["label"] for d in row] for row in r.json()][:2] == [["positive"], ["negative"]]
    assert [len(row) for row in r.json()] == [1, 1, 1]
    r = httpx.post(server + "/", json={"inputs": "x", "parameters": {"function_to_apply": "tanh"}})
    assert r.status_code == 422 and "function_to_apply" in r.json()["error"]["message"]
    r = httpx.post(server + "/models/nope", json={"inputs": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    r = httpx.post(server + "/", json={"inputs": ""})
    assert r.status_code == 422 and r.json()["error"]["message"] == "inputs is empty or whitespace-only"


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http(server: str, tiny_bundles: Path, binary: bool) -> None:
    triton = pytest.importorskip("tritonclient.http")
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny-textcnn") and not client.is_model_ready("nope")
        meta = client.get_model_metadata("tiny-textcnn")
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
        assert client.get_server_metadata()["name"] == "kdserve"
        text = triton.InferInput("text", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer("tiny-textcnn", [text], outputs=outputs, request_id="r-1")
        probs = result.as_numpy("probabilities")
        assert probs.dtype == np.float32 and probs.shape == (3, 2)
        want = expected(tiny_bundles, "tiny-textcnn", TEXTS)
        np.testing.assert_allclose(probs, want, atol=1e-6)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [["negative", "positive"][i] for i in want.argmax(axis=1)] and labels[:2] == [
            "positive",
            "negative",
        ]
        assert result.get_response()["id"] == "r-1"
        # no outputs named: the client asks for binary_data_output and gets both tensors
        default = client.infer("tiny-textcnn", [text])
        np.testing.assert_allclose(default.as_numpy("probabilities"), probs, atol=0)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="no model 'nope'"):
            client.infer("nope", [text])
    finally:
        client.close()


def test_v2_json_errors(server: str) -> None:
    url = server + "/v2/models/tiny-textcnn/infer"
    cases = [
        (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            "exactly one input named 'text'",
        ),
        ({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, "datatype BYTES"),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]},
            "has 1 elements but shape [2]",
        ),
        (
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "outputs": [{"name": "z"}],
            },
            "unknown output(s) ['z']",
        ),
        ({"inputs": []}, "exactly one input"),
    ]
    for body, message in cases:
        r = httpx.post(url, content=json.dumps(body))
        # V2's own error shape: "error" is the message string
        assert r.status_code == 422 and r.json()["code"] == "invalid_request" and message in r.json()["error"], r.text
    assert httpx.get(server + "/v2/health/live").status_code == 200
    r = httpx.get(server + "/v2/models/nope")
    assert r.status_code == 404 and r.json() == {"error": r.json()["error"], "code": "not_found"}
    r = httpx.post(url, content=b"x" * 2_000_000)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]


def test_disconnected_client_is_dropped_before_inference(tiny_bundles: Path) -> None:
    with real_server(tiny_bundles, models=["tiny-textcnn"], max_wait_ms=1000, adaptive_wait=False) as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"text": "great"}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            deadline = time.monotonic() + 5
            while 'kdserve_queue_depth{model="tiny-textcnn"} 1.0' not in httpx.get(url + "/metrics").text:
                assert time.monotonic() < deadline, "the request was never queued"
                time.sleep(0.01)
            # queued, waiting for the batch to fill: now the client goes away
        deadline = time.monotonic() + 10
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(url + "/metrics").text
            if 'status="499"' in metrics:
                break
            time.sleep(0.05)
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="499"} 1.0' in metrics
        assert 'kdserve_model_requests_total{model="tiny-textcnn",status="cancelled"} 1.0' in metrics
        time.sleep(1.2)  # past the batch wait: the dropped text must not have run
        counters = httpx.get(url + "/models/tiny-textcnn").json()["counters"]
        assert counters["batches"] == 0 and counters["requests"] == 1
