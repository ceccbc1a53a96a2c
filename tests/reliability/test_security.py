"""Security properties of the server, filling the gaps left by tests/serve (which covers: admin
routes 404 without a token and bearer auth with one, the body limit through TestClient, CORS
preflight off by default, texts absent from the log for /classify).

Here: nothing on the load path unpickles (by reading the source, and by loading and serving with
the unpicklers booby-trapped); texts absent from every log record at DEBUG and from the shadow
log, on every protocol and error path, over a real uvicorn; the body limit on a raw socket (a
huge Content-Length, a chunked body that never ends); admin absent from the OpenAPI schema
without a token; no CORS header on a plain cross-origin request.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.reliability.conftest import build_fragile_bundle, error_of, serving, v2_body, write_json
from tests.serve.conftest import make_settings, ready_client, real_server

# ------------------------------------------------------------------ no pickle

LOAD_PATH = sorted((REPO / "serve").rglob("*.py")) + sorted((REPO / "core").rglob("*.py"))
# Ways Python code turns bytes into arbitrary objects: pickle and its wrappers, torch.load (pickle
# inside), numpy's pickled object arrays, YAML's unsafe loaders, marshal and shelve.
FORBIDDEN = re.compile(
    r"\bimport\s+(c?pickle|dill|joblib|cloudpickle|shelve|marshal)\b|\bfrom\s+(c?pickle|dill|joblib|cloudpickle|shelve|marshal)\b"
    r"|\bpickle\.|\btorch\.load\b|allow_pickle\s*=\s*True|\byaml\.(load|unsafe_load|full_load)\s*\("
    r"|Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)\b"
)
NUMPY_LOAD = re.compile(r"\b(np|numpy)\.load\s*\(")


def forbidden_lines(source: str) -> list[str]:
    """Lines of ``source`` that could unpickle: a forbidden call, or ``np.load`` without ``allow_pickle=False``."""
    hits = []
    for line in source.splitlines():
        code = line.split("#", 1)[0]
        if FORBIDDEN.search(code) or (NUMPY_LOAD.search(code) and "allow_pickle=False" not in code):
            hits.append(line.strip())
    return hits


def test_the_scanner_finds_what_it_looks_for() -> None:
    planted = (
        "import pickle\nfrom joblib import load\nx = torch.load(path)\nnp.load(p, allow_pickle=True)\n"
        "np.load(p)\nyaml.load(text, Loader=yaml.FullLoader)\nok = np.load(p, allow_pickle=False)\n"
        "# pickle.loads in a comment is fine\nyaml.safe_load(text)\n"
    )
    assert forbidden_lines(planted) == [
        "import pickle",
        "from joblib import load",
        "x = torch.load(path)",
        "np.load(p, allow_pickle=True)",
        "np.load(p)",
        "yaml.load(text, Loader=yaml.FullLoader)",
    ]


def test_no_pickle_in_the_load_path_source() -> None:
    assert len(LOAD_PATH) > 10 and all(p.is_file() for p in LOAD_PATH)
    hits = {str(p.relative_to(REPO)): forbidden_lines(p.read_text()) for p in LOAD_PATH}
    assert {k: v for k, v in hits.items() if v} == {}


def test_loading_and_serving_never_unpickles(
    tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Start, serve, reload and run a YAML routing file with every unpickler raising: they are never called."""
    calls: list[str] = []

    def trap(name: str) -> Any:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called on the load path")

        return raiser

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap(f"pickle.{name}"))
    routing = tmp_path / "routing.yaml"
    routing.write_text("routes:\n  exp:\n    policy: ab\n    variants: {tiny-textcnn: 0.5, tiny-bilstm: 0.5}\n")
    with ready_client(
        tiny_bundles, models=["tiny-textcnn", "tiny-bilstm"], admin_token="t", routing_file=routing
    ) as client:
        assert client.post("/classify", json={"text": "great", "model": "exp", "routing_key": "u"}).status_code == 200
        assert client.post("/admin/reload", headers={"Authorization": "Bearer t"}).status_code == 200
        assert client.post("/", json={"inputs": ["great", "dull"]}).status_code == 200
    assert calls == []


# ------------------------------------------------------------------ texts stay out of the logs

SECRET = "the acting was secretly wonderful ."
# an HTTP body may escape the text differently from the log: check the words, not only the phrase
SECRET_PARTS = (SECRET, "secretly")


def test_texts_are_not_logged_on_any_protocol_or_error_path(
    tiny_bundles: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kdserve.serve.app import create_app

    root = tmp_path / "bundles"
    shutil.copytree(tiny_bundles / "tiny-textcnn", root / "tiny-textcnn")
    build_fragile_bundle(tiny_bundles / "tiny-textcnn", root / "fragile")  # fails over 8 tokens: a 500
    routing, shadow_log = tmp_path / "routing.json", tmp_path / "shadow.jsonl"
    write_json(
        routing,
        {
            "routes": {
                "mirror": {"policy": "shadow", "primary": "tiny-textcnn", "shadow": "fragile", "sample_rate": 1.0}
            }
        },
    )
    app = create_app(make_settings(root, routing_file=routing, shadow_log=shadow_log, max_text_chars=1000))
    long_secret = " ".join([SECRET] * 8)  # 48 tokens: over tiny-textcnn's 32
    with caplog.at_level("DEBUG"), serving(app) as url, httpx.Client(base_url=url, timeout=15) as http:
        answers = [
            http.post("/classify", json={"text": SECRET, "model": "tiny-textcnn"}),
            http.post("/classify", json={"texts": [SECRET, long_secret], "model": "tiny-textcnn", "truncate": False}),
            http.post("/classify", json={"text": SECRET * 40}),  # over max_text_chars
            http.post("/classify", json={"text": long_secret, "model": "fragile"}),  # inference error
            http.post("/classify", json={"text": SECRET, "model": "mirror"}),  # shadowed, disagrees
            http.post("/classify", json={"text": long_secret, "model": "mirror"}),  # the shadow fails
            http.post("/classify", json={"text": SECRET, "modle": "x"}),  # validation error
            http.post("/models/tiny-textcnn", json={"inputs": [SECRET]}),
            http.post("/v2/models/tiny-textcnn/infer", json=v2_body([SECRET])),
            http.post(
                "/v2/models/tiny-textcnn/infer",
                content=_binary_v2(SECRET),
                headers={"Inference-Header-Content-Length": str(len(_binary_v2_header(SECRET)))},
            ),
        ]
        deadline = time.monotonic() + 5  # shadow calls finish after the answers
        while "kdserve_shadow" not in http.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 413, 422, 500, 200, 200, 422, 200, 200, 200], [a.text[:200] for a in answers]
    loggers = {r.name for r in caplog.records}
    # the capture saw the access log and the server's own error log: the absence below means something
    assert "uvicorn.access" in loggers and any("inference failed" in r.getMessage() for r in caplog.records)
    for part in SECRET_PARTS:
        assert part not in caplog.text
    records = [json.loads(line) for line in shadow_log.read_text().splitlines()]
    assert records, "the shadow route should have logged a disagreement"
    assert not any(part in shadow_log.read_text() for part in SECRET_PARTS)


def _binary_v2_header(text: str) -> bytes:
    payload = struct.pack("<I", len(text.encode())) + text.encode()
    header = {
        "inputs": [
            {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(payload)}}
        ]
    }
    return json.dumps(header).encode()


def _binary_v2(text: str) -> bytes:
    return _binary_v2_header(text) + struct.pack("<I", len(text.encode())) + text.encode()


# ------------------------------------------------------------------ body limit on a raw socket


def _raw_exchange(url: str, head: bytes, body_chunks: list[bytes], read_timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``head`` then each chunk (stopping early if the server answers), read the answer;
    returns (response bytes, seconds from the head to the answer's first byte)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for chunk in body_chunks:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                break
            time.sleep(0.01)
        sock.setblocking(True)
        sock.settimeout(read_timeout)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer, time.monotonic() - started


def test_the_body_limit_holds_on_a_raw_socket(tiny_bundles: Path) -> None:
    with real_server(tiny_bundles, models=["tiny-textcnn"], max_body_bytes=1000) as url:
        # a 10 GB Content-Length and no body: refused from the header alone, at once
        head = (
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        answer, seconds = _raw_exchange(url, head, [])
        assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower() and seconds < 2
        # a chunked body that never ends: refused once past the limit, not after reading "everything"
        head = b"POST /v2/models/tiny-textcnn/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = [b"100\r\n" + b"x" * 256 + b"\r\n"] * 400  # 100 KB offered; the server reads ~1 KB of it
        answer, seconds = _raw_exchange(url, head, chunks)
        assert answer.startswith(b"HTTP/1.1 413 ") and seconds < 3, answer[:200]
        # still serving
        assert httpx.post(url + "/classify", json={"text": "great"}, timeout=10).status_code == 200


def test_admin_is_absent_from_the_schema_without_a_token(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/admin")]
        assert error_of(client.put("/admin/routing", json={}))[:2] == (404, "not_found")
    with ready_client(tiny_bundles, models=["tiny-textcnn"], admin_token="t") as client:
        assert {"/admin/reload", "/admin/routing"} <= set(client.get("/openapi.json").json()["paths"])


def test_no_cors_header_on_a_plain_cross_origin_request(tiny_bundles: Path) -> None:
    with real_server(tiny_bundles, models=["tiny-textcnn"]) as url:
        r = httpx.post(
            url + "/classify", json={"text": "great"}, headers={"Origin": "https://evil.example"}, timeout=10
        )
        assert r.status_code == 200
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
