"""One socket write per response: the transport wrapper, and HTTP through it."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from kdserve.serve.cli import _http_protocol
from kdserve.serve.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from tests.serve.conftest import real_server


class Recorder:
    """The transport side the wrapper talks to: records writes and closing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def test_writes_of_one_loop_turn_leave_as_one() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[bytes]]:
        inner = Recorder()
        wrapped = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        wrapped.write(b"HTTP/1.1 200 OK\r\n\r\n")
        wrapped.write(b"body")
        held = list(inner.writes)  # nothing yet: the turn has not ended
        await asyncio.sleep(0)
        after_turn = list(inner.writes)
        wrapped.write(b"second")
        wrapped.close()  # closing writes what is held first
        wrapped.write(b"late")
        await asyncio.sleep(0)
        assert wrapped.get_extra_info("peername") == ("127.0.0.1", 1)
        return held, after_turn, inner.writes

    held, after_turn, final = asyncio.run(main())
    assert held == [] and after_turn == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert final == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"second"]  # "late" went to a closed transport: dropped


def test_the_server_uses_it_and_answers_keep_alive_requests_whole(tiny_bundles: Path) -> None:
    assert _http_protocol() is CoalescingHttpToolsProtocol
    with real_server(tiny_bundles, models=["tiny-textcnn"]) as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"text": "great"}).encode()
        request = (
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            answers = []
            for _ in range(3):  # one connection, several requests: each answer complete and in order
                sock.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
                    chunk = sock.recv(65536)
                    assert chunk, "the server closed the connection"
                    data += chunk
                head, rest = data.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200") and b"x-request-id" in head.lower()
                answers.append(json.loads(rest))
        assert len({a["request_id"] for a in answers}) == 3
        assert all(a["results"][0]["model"] == "tiny-textcnn" for a in answers)


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 10**9
