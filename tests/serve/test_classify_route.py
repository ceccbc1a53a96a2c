"""The direct /classify path (below FastAPI) answers exactly what the FastAPI route answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from kdserve.serve.app import KdserveApp, create_app
from kdserve.serve.middleware import ServeMiddleware
from kdserve.serve.schemas import ClassifyResponse, TextResult
from tests.serve.conftest import make_settings, wait_ready

LONG = " ".join(["word"] * 400)
BODIES: list[Any] = [
    {"text": "the movie was really wonderful .", "model": "tiny-textcnn", "request_id": "r1"},
    {"texts": ["great plot", "dull acting", "great plot"], "all_scores": True, "request_id": "r2"},
    {"text": "fine", "model": "teacher", "top_k": 1, "request_id": "r3"},
    {"text": "fine", "model": "student", "request_id": "r4"},
    # the service's own errors: both paths answer them through the same handler
    {"text": "fine", "model": "nope", "request_id": "e1"},
    {"text": "   ", "request_id": "e2"},
    {"texts": ["ok", LONG], "model": "tiny-teacher", "truncate": False, "request_id": "e3"},
    # invalid bodies: the direct path hands these on to FastAPI
    {"text": "hi", "extra": 1},
    {"text": 5},
    {"texts": "hi"},
    {"text": "a", "top_k": 0},
    {},
    [1, 2],
]
RAW: list[tuple[bytes, str]] = [
    (b'{"text": "ok", "request_id": "c1"}', "application/json; charset=utf-8"),
    (b'{"text": "ok", "request_id": "c2"}', "application/vnd.kdserve+json"),
    (b'{"text": "ok", "request_id": "c3"}', "text/plain"),
    (b'{"text": "ok"', "application/json"),
    (b'{"text": "\xff"}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b"", "application/json"),
    # JSON the direct path's parser and json.loads may read differently: both paths must agree
    (b'{"text": "\\ud800 lone"}', "application/json"),
    (b'{"text": "a", "text": "the movie was great ."}', "application/json"),
    (b'{"text": "ok", "top_k": NaN}', "application/json"),
    # 1.0 is an integer to JSON Schema, so the schema and both paths accept it as top_k 1
    (b'{"text": "ok", "top_k": 1.0}', "application/json"),
]


def _middleware(app: KdserveApp) -> dict[str, Any]:
    (entry,) = [m for m in app.outer_middleware if m.cls is ServeMiddleware]
    return entry.kwargs


@contextmanager
def client(bundles: Path, direct: bool) -> Iterator[tuple[TestClient, list[bool]]]:
    """A client over a fresh app; ``answered`` records each direct-path call's result."""
    app = create_app(make_settings(bundles))
    kwargs = _middleware(app)
    answered: list[bool] = []
    if direct:
        inner = kwargs["direct"]["/classify"]

        async def counting(*args: Any) -> bool:
            answered.append(await inner(*args))
            return answered[-1]

        kwargs["direct"] = {"/classify": counting}
    else:
        kwargs["direct"] = {}
    with TestClient(app) as c:
        wait_ready(c.get)
        yield c, answered


def test_direct_path_answers_like_the_fastapi_route(tiny_bundles: Path) -> None:
    results: dict[bool, list[tuple[int, Any, str | None]]] = {}
    for direct in (True, False):
        with client(tiny_bundles, direct) as (c, answered):
            out = []
            for i, body in enumerate(BODIES):
                r = c.post("/classify", json=body, headers={"X-Request-ID": f"h{i}"})
                out.append((r.status_code, r.json(), r.headers.get("retry-after")))
            for i, (raw, kind) in enumerate(RAW):
                r = c.post("/classify", content=raw, headers={"Content-Type": kind, "X-Request-ID": f"raw{i}"})
                out.append((r.status_code, r.json(), r.headers["x-request-id"]))
            results[direct] = out
            if direct:
                # valid JSON objects of the API's shape with a JSON type went direct; the rest were handed on
                # text/plain is refused (415) at the edge, before either path sees the body
                assert answered == [True] * 7 + [False] * 6 + [True, True] + [False] * 4 + [False, True, False, True]
    assert results[True] == results[False]
    statuses = [status for status, _, _ in results[True]]
    assert statuses == [200] * 4 + [404, 422, 413] + [422] * 6 + [200, 200, 415] + [422] * 4 + [422, 200, 422, 200]
    assert results[True][0][1]["request_id"] == "r1" and results[True][13][2] == "c1"


def test_direct_path_metrics_and_request_id(tiny_bundles: Path) -> None:
    with client(tiny_bundles, True) as (c, answered):
        r = c.post("/classify", json={"text": "good"}, headers={"X-Request-ID": "from-header"})
        assert r.status_code == 200 and r.json()["request_id"] == "from-header" == r.headers["x-request-id"]
        assert r.headers["content-type"] == "application/json"
        r = c.post("/classify", json={"text": "good", "request_id": "from-body"}, headers={"X-Request-ID": "h"})
        assert r.json()["request_id"] == "from-body" == r.headers["x-request-id"]
        r = c.post("/classify", json={"text": "good"})
        assert len(r.json()["request_id"]) == 32 and r.json()["request_id"] == r.headers["x-request-id"]
        assert answered == [True, True, True]
        metrics = c.get("/metrics").text
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="200"} 3.0' in metrics


def test_answer_bytes_are_the_response_models_json(tiny_bundles: Path) -> None:
    # the answer is encoded from dicts: byte for byte what the documented models would give
    with client(tiny_bundles, True) as (c, answered):
        for body in BODIES[:4] + [{"text": "fine", "top_k": 2}, {"texts": ["a b", "c"], "all_scores": True}]:
            r = c.post("/classify", json=body)
            assert r.status_code == 200, r.text
            model = ClassifyResponse.model_validate_json(r.content)
            assert r.content == model.model_dump_json().encode()
            assert all(isinstance(t, TextResult) for t in model.results)
        assert all(answered)
