"""Hostile and odd input over real HTTP (uvicorn on loopback), on every protocol: each gets a 4xx
with a message that says what is wrong, or a correct classification; never a 500 or a hang.

tests/serve/test_api.py already covers a whitespace-only text, an empty text in a list, too many
texts against a small limit, ``text: 5`` / ``texts: "hi"`` / ``truncate: "no"``, an unknown
``/classify`` field, an unknown model on ``/classify`` and invalid JSON syntax; this module covers
the rest of the list in the reliability issue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, softmax
from tests.reliability.conftest import error_of, v2_body
from tests.serve.conftest import real_server

MODEL = "tiny-textcnn"
ROUTES = ["/classify", f"/models/{MODEL}", f"/v2/models/{MODEL}/infer"]  # ours, Hugging Face, V2
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def url(tiny_bundles: Path) -> Iterator[str]:
    with real_server(tiny_bundles, models=[MODEL, "tiny-bilstm"]) as base:
        yield base


@pytest.fixture()
def http(url: str) -> Iterator[httpx.Client]:
    """A client whose timeout turns a hang into a failure; after each test the server must still
    answer a plain request (no bad input may leave it broken)."""
    with httpx.Client(base_url=url, timeout=15) as client:
        yield client
        r = client.post("/classify", json={"text": "the movie was great .", "model": MODEL})
        assert r.status_code == 200 and r.json()["results"][0]["label"] == "positive", r.text


def body_for(route: str, texts: list[str] | str) -> dict[str, Any]:
    """The request body of ``route`` for ``texts`` (a list) or one text (a string)."""
    if route == "/classify":
        return {"text": texts, "model": MODEL} if isinstance(texts, str) else {"texts": texts, "model": MODEL}
    if not route.startswith("/v2"):
        return {"inputs": texts}
    return v2_body([texts] if isinstance(texts, str) else texts)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("text", ["", "\u00a0\u3000\u2003\t\r\n"], ids=["empty", "unicode-whitespace"])
def test_empty_and_whitespace_only_text(http: httpx.Client, route: str, text: str) -> None:
    status, code, message = error_of(http.post(route, json=body_for(route, text)))
    field = "inputs" if route == f"/models/{MODEL}" else "text"
    assert (status, code, message) == (422, "invalid_request", f"{field} is empty or whitespace-only")


def test_a_one_megabyte_text(http: httpx.Client) -> None:
    # over the default 1 MiB body limit: refused from Content-Length, before parsing
    big = "a" * (1 << 20)
    for route in ROUTES:
        status, code, message = error_of(http.post(route, json=body_for(route, big)))
        assert (status, code) == (413, "payload_too_large") and "max_body_bytes = 1048576" in message
    # a million characters fit in the body: then the per-text limit answers, naming it
    status, code, message = error_of(http.post("/classify", json={"text": "a" * 1_000_000}))
    assert (status, code, message) == (
        422,
        "invalid_request",
        "text has 1000000 characters, over max_text_chars (20000)",
    )


def test_ten_thousand_texts_in_one_request(http: httpx.Client) -> None:
    texts = [f"the movie was great {i} ." for i in range(10_000)]
    for route in ROUTES:
        body = body_for(route, texts)
        status, code, message = error_of(http.post(route, json=body))
        assert (status, code, message) == (
            422,
            "invalid_request",
            "too many texts: 10000 > max_texts_per_request (256)",
        )


@pytest.mark.parametrize("route", ROUTES)
def test_invalid_utf8_in_the_body(http: httpx.Client, route: str) -> None:
    raw = b'{"text": "the movie was \xff\xfe great"}'
    if route == f"/models/{MODEL}":
        raw = raw.replace(b'"text"', b'"inputs"')
    status, code, message = error_of(http.post(route, content=raw, headers=JSON))
    assert (status, code) == (422, "invalid_request")
    if route.startswith("/v2"):  # pydantic's own JSON parser, with its own words
        assert "invalid unicode code point" in message
    else:
        offset = raw.index(b"\xff")
        assert message == f"body is not valid UTF-8 (byte 0xff at offset {offset}); send JSON encoded as UTF-8"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("where", ["top", "field"])
def test_deeply_nested_json(http: httpx.Client, route: str, where: str) -> None:
    depth = 100_000
    nested = b"[" * depth + b"]" * depth
    raw = nested if where == "top" else b'{"text": ' + nested + b"}"
    status, code, message = error_of(http.post(route, content=raw, headers=JSON))
    assert (status, code) == (422, "invalid_request")
    if route.startswith("/v2"):
        assert "recursion limit exceeded" in message
    else:
        assert message == "body JSON is nested too deeply to parse"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"text": "great"}], "body: Input should be a valid dictionary"),
        ("great", "body: Input should be a valid dictionary"),
        (3, "body: Input should be a valid dictionary"),
        (None, "body: Input should be a valid dictionary"),  # JSON null
        (..., "body: Field required"),  # no body at all
        ({"texts": [1, 2]}, "texts.0: Input should be a valid string"),
        ({"texts": ["ok", None]}, "texts.1: Input should be a valid string"),
        ({"text": ["great"]}, "text: Input should be a valid string"),
        ({"text": "great", "model": 3}, "model: Input should be a valid string"),
        ({"text": "great", "top_k": 1.5}, "top_k: Input should be a valid integer"),
        ({"text": "great", "top_k": True}, "top_k: Input should be a valid integer"),
        ({"text": "great", "all_scores": "yes"}, "all_scores: Input should be a valid boolean"),
        ({"text": "great", "routing_key": {"user": 1}}, "routing_key: Input should be a valid string"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_wrong_json_types_on_classify(http: httpx.Client, body: Any, message: str) -> None:
    raw = b"" if body is ... else json.dumps(body).encode()
    status, code, got = error_of(http.post("/classify", content=raw, headers=JSON))
    assert (status, code) == (422, "invalid_request") and message in got, got


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/", {"inputs": 5}, "inputs.str: Input should be a valid string"),
        ("/", {"inputs": ["great", 7]}, "inputs.list[str].1: Input should be a valid string"),
        ("/", {"inputs": "great", "parameters": {"top_k": "2"}}, "parameters.top_k: Input should be a valid integer"),
        ("/", {"inputs": "great", "parameters": {"function_to_apply": "relu"}}, "parameters.function_to_apply"),
        (f"/v2/models/{MODEL}/infer", {"inputs": "great"}, "inputs: Input should be a valid array"),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [5]}]},
            "input 'text' data must be a list of strings",
        ),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
            "input 'text' has 1 elements but shape [2]",
        ),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            "input 'text' must have datatype BYTES, got FP32",
        ),
    ],
)
def test_wrong_json_types_on_the_standard_protocols(http: httpx.Client, route: str, body: Any, message: str) -> None:
    status, code, got = error_of(http.post(route, json=body))
    assert (status, code) == (422, "invalid_request") and message in got, got


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/", {"inputs": "great", "modle": "x"}, "modle: unknown field (not part of this API)"),
        ("/", {"inputs": "great", "parameters": {"topk": 1}}, "parameters.topk: unknown field (not part of this API)"),
        (f"/v2/models/{MODEL}/infer", {**v2_body(["great"]), "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_unknown_fields(http: httpx.Client, route: str, body: Any, message: str) -> None:
    status, code, got = error_of(http.post(route, json=body))
    assert (status, code) == (422, "invalid_request") and message in got, got


def test_unknown_model_on_every_protocol(http: httpx.Client) -> None:
    assert error_of(http.post("/models/nope", json={"inputs": "great"})) == (
        404,
        "unknown_model",
        "unknown model or route 'nope'; valid names: default, student, tiny-bilstm, tiny-textcnn",
    )
    status, code, message = error_of(http.post("/v2/models/nope/infer", json=v2_body(["great"])))
    assert (status, code) == (404, "not_found") and message.startswith(
        "no model 'nope'; V2 model names are bundle names"
    )
    assert error_of(http.get("/v2/models/nope"))[:2] == (404, "not_found")
    assert error_of(http.get("/models/nope"))[:2] == (404, "not_found")


@pytest.mark.parametrize("route", ROUTES)
def test_a_lone_surrogate_is_refused_not_a_500(http: httpx.Client, route: str) -> None:
    # JSON's \ud800 escape decodes to a lone surrogate: not Unicode, and the tokenizer raises on it
    raw = {
        "/classify": b'{"texts": ["fine", "bad \\ud800 text"]}',
        f"/models/{MODEL}": b'{"inputs": ["fine", "bad \\ud800 text"]}',
    }.get(route, b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["bad \\ud800"]}]}')
    status, code, message = error_of(http.post(route, content=raw, headers=JSON))
    assert (status, code) == (422, "invalid_request")
    if route.startswith("/v2"):
        assert message.startswith("invalid V2 inference request")  # pydantic's parser refuses it first
    else:
        field = "texts" if route == "/classify" else "inputs"
        assert message == f"{field}[1] is not valid Unicode: a lone surrogate U+D800 at character 4"


ODD_TEXTS = {
    "control characters": "\x00the movie\x07 was \x1b[31mgreat\x1b[0m\x7f .",
    "only control characters": "\x00\x01\x02\x1f",
    "zero-width and bidi marks": "\u200bthe movie\u200f was\u202e great\u2066 .",
    "emoji": "the movie was great 😀🎉👍🏽 .",
    "only emoji": "😀🎉👨‍👩‍👧",
    "chinese": "这部电影非常精彩 。",
    "japanese": "この映画は素晴らしかった。",
    "hebrew (right to left)": "הסרט היה נהדר .",
    "arabic (right to left)": "كان الفيلم رائعا .",
    "combining marks": "the movie was gre\u0301a\u0308t .",
}


@pytest.mark.parametrize("route", ROUTES)
def test_odd_but_valid_text_is_classified(http: httpx.Client, tiny_bundles: Path, route: str) -> None:
    """Control characters, emoji, CJK and right-to-left text are text: 200, with the label and scores
    the bundle itself gives (the tokenizer maps what it does not know to [UNK])."""
    texts = list(ODD_TEXTS.values())
    expected = softmax(BundleModel(tiny_bundles / MODEL).predict(texts))
    labels = BundleModel(tiny_bundles / MODEL, verify=False).labels
    r = http.post(route, json=body_for(route, texts))
    assert r.status_code == 200, r.text
    body = r.json()
    if route == "/classify":
        assert [res["label"] for res in body["results"]] == [labels[int(i)] for i in expected.argmax(1)]
        assert [res["score"] for res in body["results"]] == pytest.approx(expected.max(1).tolist(), abs=1e-5)
    elif route == f"/models/{MODEL}":
        got = np.array([[{d["label"]: d["score"] for d in row}[label] for label in labels] for row in body])
        assert got == pytest.approx(expected, abs=1e-5)
    else:
        probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert np.array(probs["data"]).reshape(len(texts), len(labels)) == pytest.approx(expected, abs=1e-5)
