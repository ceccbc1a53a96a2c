"""The connection edge (issue 23): header, URL and connection limits, header/idle/body timeouts,
slots not held while a body is read, and the JSON shape of refusals below the app. Each test runs a
real uvicorn with the server's own protocol on loopback and speaks raw HTTP where clients would not."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import real_server

LIMITS = {
    "max_header_bytes": 4096,
    "max_header_count": 20,
    "max_url_bytes": 1024,
    "header_timeout_s": 1.0,
    "idle_timeout_s": 1.0,
    "body_timeout_s": 1.0,
    "body_min_rate_bytes_s": 1024,
    "max_connections": 8,
    "max_inflight_requests": 2,
}


@pytest.fixture(scope="module")
def url(tiny_bundles: Path) -> Iterator[str]:
    with real_server(tiny_bundles, models=["tiny-textcnn"], **LIMITS) as base:
        yield base


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or 10 s)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def status_and_error(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)["error"]


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server refused and closed before reading everything: what the test wants


def classify_ok(url: str) -> None:
    r = httpx.post(url + "/classify", json={"text": "great"}, timeout=10)
    assert r.status_code == 200, r.text


def test_headers_over_max_header_bytes_get_431_before_buffering(url: str) -> None:
    with connect(url) as sock:
        # one 2 MB header value: refused once 4096 bytes are in, not buffered to the end
        send_ignoring_close(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n")
        status, error = status_and_error(read_all(sock))
    assert status == 431 and error == {
        "code": "headers_too_large",
        "message": "request line and headers exceed max_header_bytes (4096)",
    }
    classify_ok(url)


def test_too_many_headers_get_431(url: str) -> None:
    with connect(url) as sock:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(21))
        send_ignoring_close(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, error = status_and_error(read_all(sock))
    assert (status, error["code"]) == (431, "too_many_headers")
    assert error["message"] == "more than max_header_count (20) headers"


def test_a_long_url_gets_414(url: str) -> None:
    with connect(url) as sock:
        send_ignoring_close(sock, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, error = status_and_error(read_all(sock))
    assert (status, error["code"]) == (414, "uri_too_long")


def test_a_malformed_request_gets_a_json_400(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n")
        status, error = status_and_error(read_all(sock))
    assert status == 400 and error["code"] == "bad_request"
    assert error["message"].startswith("invalid HTTP request (")


def test_headers_not_finished_in_header_timeout_get_408(url: str) -> None:
    with connect(url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        status, error = status_and_error(read_all(sock))
        took = time.monotonic() - started
    assert (status, error["code"]) == (408, "request_timeout") and 0.9 <= took < 3, took
    assert error["message"] == "request headers not complete within header_timeout_s (1 s)"


def test_a_silent_connection_is_closed_after_idle_timeout(url: str) -> None:
    with connect(url) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""  # closed without a word
        assert 0.9 <= time.monotonic() - started < 3


def test_a_stalled_body_holds_no_slot_and_gets_408(url: str) -> None:
    """max_inflight_requests is 2; five uploads stalled after one byte must not lock anyone out."""
    socks = [connect(url) for _ in range(5)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            sock.sendall(b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        ready = httpx.get(url + "/ready", timeout=10).json()
        assert ready["reading_body"] == 5 and ready["inflight"] == 0 and ready["saturated"] is False
        classify_ok(url)  # with 5 bodies stalled and 2 slots
        answers = [status_and_error(read_all(sock)) for sock in socks]
        took = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert all(status == 408 and error["code"] == "request_timeout" for status, error in answers), answers
    assert answers[0][1]["message"].startswith("request body too slow: 1 bytes in 1.0 s (body_timeout_s = 1, ")
    assert took < 4
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'kdserve_edge_closed_total{reason="body_timeout"}' in metrics
    assert "kdserve_connections_open " in metrics and "kdserve_saturated 0.0" in metrics


def test_past_max_connections_the_longest_idle_is_evicted(url: str) -> None:
    time.sleep(1.2)  # let earlier tests' keep-alive connections time out
    idle = [connect(url) for _ in range(8)]  # the cap, all idle
    time.sleep(0.1)
    try:
        classify_ok(url)  # a 9th connection: the oldest idle one makes room
        assert read_all(idle[0]) == b""  # evicted first
    finally:
        for sock in idle:
            sock.close()


def test_past_max_connections_with_none_idle_the_newcomer_gets_503(url: str) -> None:
    time.sleep(1.2)
    busy = [connect(url) for _ in range(8)]
    try:
        for sock in busy:  # every connection mid-request (a body on its way): none can be evicted
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        with connect(url) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, error = status_and_error(read_all(sock))
        assert (status, error["code"]) == (503, "overloaded")
        assert error["message"] == "too many open connections (max_connections = 8); retry later"
    finally:
        for sock in busy:
            sock.close()


def test_content_length_with_whitespace_and_unsupported_bodies(url: str) -> None:
    body = b'{"text":"great"}'
    with connect(url) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: %d \r\n\r\n" % len(body) + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    r = httpx.post(url + "/classify", content=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(url + "/classify", content=body, headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415
    assert r.json()["error"]["message"] == "Content-Type 'text/plain' is not supported; send application/json"


def test_head_probes_and_a_long_unknown_path(url: str) -> None:
    assert httpx.head(url + "/health", timeout=10).status_code == 200
    assert httpx.head(url + "/ready", timeout=10).status_code == 200
    r = httpx.get(url + "/" + "x" * 900, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"].endswith("...(901 chars)")
    assert len(r.content) < 400
