"""A trivial HTTP/1.1 server answering a constant JSON: the load generator's own ceiling, and test fixtures.

Measuring a server with a client that shares its two cores only means something if the client
can go much faster than the server. This server does almost nothing per request (find the end
of the headers, read Content-Length, write pre-built bytes), so requests/s against it is the
generator's ceiling on this machine. Knobs make it misbehave on purpose for the harness tests:

* ``--delay-ms D``: answer each request D ms after it arrives (concurrently);
* ``--serial``: with a delay, answer one request at a time (a server with capacity 1000/D per s);
* ``--status-cycle 200,429,503``: the n-th POST gets the n-th status of the cycle (server-wide);
* ``--pause-after-ms A --pause-for-ms P``: A ms after the first POST, hold every answer for P ms
  (a stop-the-world pause: what coordinated omission hides).

``GET /ready`` answers 200; ``GET /stats`` answers ``{"requests": N}`` (POSTs received).
Run: ``python -m kdserve.bench.trivial_server --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Sequence

REASONS = {
    200: "OK",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
BODY = b'{"model":"trivial","results":[{"label":"positive","score":1.0}]}'


def response_bytes(status: int, body: bytes = BODY) -> bytes:
    reason = REASONS.get(status, "Status")
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


class ServerState:
    """Counters and knobs shared by all connections of one server."""

    def __init__(
        self,
        delay_ms: float = 0.0,
        serial: bool = False,
        status_cycle: Sequence[int] = (200,),
        pause_after_ms: float | None = None,
        pause_for_ms: float = 0.0,
    ) -> None:
        self.delay = delay_ms / 1000.0
        self.serial = serial
        self.cycle = [response_bytes(code) for code in status_cycle]
        self.pause_after = None if pause_after_ms is None else pause_after_ms / 1000.0
        self.pause_for = pause_for_ms / 1000.0
        self.requests = 0
        self.first: float | None = None
        self.busy_until = 0.0

    def answer_time(self, now: float) -> float:
        """When the answer to a request arriving at ``now`` (monotonic seconds) may leave."""
        if self.first is None:
            self.first = now
        at = now
        if self.delay:
            if self.serial:
                at = max(now, self.busy_until) + self.delay
                self.busy_until = at
            else:
                at = now + self.delay
        if self.pause_after is not None:
            pause_start = self.first + self.pause_after
            pause_end = pause_start + self.pause_for
            if pause_start <= at < pause_end:
                at = pause_end
        return at


class TrivialProtocol(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : line_end if line_end >= 0 else len(lower)])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"GET "):
            path = head.split(b" ", 2)[1]
            if path == b"/stats":
                self.transport.write(response_bytes(200, json.dumps({"requests": self.state.requests}).encode()))
            elif path in (b"/ready", b"/health", b"/"):
                self.transport.write(response_bytes(200, b'{"ready":true}'))
            else:
                self.transport.write(response_bytes(404, b'{"error":{"code":"not_found","message":"no such path"}}'))
            return
        state = self.state
        payload = state.cycle[state.requests % len(state.cycle)]
        state.requests += 1
        if not state.delay and state.pause_after is None:
            self.transport.write(payload)
            return
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        loop.call_later(max(0.0, state.answer_time(now) - now), self._write, payload)

    def _write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)


async def serve(host: str, port: int, state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TrivialProtocol(state), host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"trivial server on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--serial", action="store_true")
    parser.add_argument("--status-cycle", default="200")
    parser.add_argument("--pause-after-ms", type=float)
    parser.add_argument("--pause-for-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        cycle = [int(code) for code in args.status_cycle.split(",")]
    except ValueError:
        parser.error(f"--status-cycle must be comma-separated status codes, got {args.status_cycle!r}")
    state = ServerState(args.delay_ms, args.serial, cycle, args.pause_after_ms, args.pause_for_ms)
    from kdserve.bench.loadgen import run_async

    run_async(lambda: serve(args.host, args.port, state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
