"""A minimal HTTP/1.1 keep-alive client: pre-built request bytes in, status (and body) out.

The parser reads the status line, ``Content-Length`` / ``Transfer-Encoding: chunked`` and
``Connection`` and nothing else, and a connection carries one request at a time (no
pipelining). Failures without an HTTP answer are negative status codes (``FAILURES``), so a
load loop never has to handle an exception per request.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import NamedTuple

from kdserve.bench.common import BenchError

TIMEOUT, CONNECTION_ERROR, NOT_SENT = -1, -2, -3
FAILURES = {TIMEOUT: "timeout", CONNECTION_ERROR: "connection_error", NOT_SENT: "not_sent"}


@dataclass(frozen=True)
class Target:
    """Where requests go: host, port, path, and the Host header value."""

    host: str
    port: int
    path: str = "/"

    @classmethod
    def parse(cls, url: str, path: str | None = None) -> Target:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme != "http":
            raise BenchError(
                f"target {url!r}: only plain http:// is supported (the generator speaks HTTP/1.1 without TLS)"
            )
        if not parsed.hostname:
            raise BenchError(f"target {url!r} has no host")
        try:
            port = parsed.port or 80
        except ValueError:
            raise BenchError(f"target {url!r} has an invalid port") from None
        chosen = path if path is not None else (parsed.path or "/")
        if not chosen.startswith("/"):
            raise BenchError(f"path must start with '/', got {chosen!r}")
        return cls(parsed.hostname, port, chosen)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def request(self, body: bytes | None = None, method: str | None = None, path: str | None = None) -> bytes:
        """The full request bytes: POST with a JSON body, or GET without one."""
        method = method or ("POST" if body is not None else "GET")
        head = f"{method} {path or self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is None:
            return (head + "\r\n").encode("latin-1")
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode("latin-1") + body


class Response(NamedTuple):
    status: int
    body: bytes | None
    close: bool


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._head_end = -1
        self._status = 0
        self._length = -1
        self._chunked = False
        self._close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            if self._head_end >= 0 and self._length < 0 and not self._chunked:
                # A response delimited by the connection closing (HTTP/1.0 style) is complete now.
                body = bytes(self._buffer[self._head_end + 4 :]) if self.keep_body else None
                self._finish(Response(self._status, body, True))
            else:
                self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None:
            self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head_end = end
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            try:
                self._status = int(lines[0][9:12])
            except ValueError:
                self._fail(ConnectionError(f"not an HTTP response: {lines[0][:60]!r}"))
                return
            self._close = lines[0].startswith("HTTP/1.0")
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self._length = int(value)
                elif name == "transfer-encoding":
                    self._chunked = "chunked" in value.lower()
                elif name == "connection":
                    self._close = value.strip().lower() == "close"
        start = self._head_end + 4
        if self._chunked:
            body, consumed = _dechunk(buf, start)
            if consumed < 0:
                return
        elif self._length >= 0:
            consumed = start + self._length
            if len(buf) < consumed:
                return
            body = bytes(buf[start:consumed])
        else:
            return  # delimited by close: finished in connection_lost
        del buf[:consumed]
        self._finish(Response(self._status, body if self.keep_body else None, self._close))

    def _finish(self, response: Response) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()  # a half-read response leaves the connection unusable
        self.lost = True
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def request(self, data: bytes, timeout_s: float) -> asyncio.Future[Response]:
        """Write ``data`` and return a future for the response; TimeoutError after ``timeout_s``."""
        assert self.transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._on_timeout)
        self.transport.write(data)
        if self._buffer:  # bytes that arrived early belong to this response
            self._parse()
        return self._waiter

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(TimeoutError("no response in time"))

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int]:
    """(body, bytes consumed) of a complete chunked body at ``start``, or (b"", -1) if incomplete."""
    pos, parts = start, list[bytes]()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return b"", -1
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # skip optional trailers
            return (b"".join(parts), end + 4) if end >= 0 else (b"", -1)
        if len(buf) < eol + 2 + size + 2:
            return b"", -1
        parts.append(bytes(buf[eol + 2 : eol + 2 + size]))
        pos = eol + 2 + size + 2


class Client:
    """A connection that reconnects after errors and ``Connection: close``; sends one request at a time."""

    def __init__(self, target: Target, timeout_s: float, keep_body: bool = False) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.keep_body = keep_body
        self._conn: HttpConnection | None = None

    async def connect(self) -> HttpConnection:
        if self._conn is None or self._conn.lost:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(
                lambda: HttpConnection(self.keep_body), self.target.host, self.target.port
            )
            self._conn = protocol
        return self._conn

    async def send(self, data: bytes) -> tuple[int, bytes | None]:
        """(status, body) where status is an HTTP code or one of ``FAILURES``; never raises."""
        try:
            conn = await self.connect()
        except OSError:
            await asyncio.sleep(0.001)  # a refused connect returns at once: do not spin the CPU
            return CONNECTION_ERROR, None
        try:
            response = await conn.request(data, self.timeout_s)
        except TimeoutError:
            self._conn = None
            return TIMEOUT, None
        except (ConnectionError, OSError):
            self._conn = None
            return CONNECTION_ERROR, None
        if response.close:
            conn.close()
            self._conn = None
        return response.status, response.body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
