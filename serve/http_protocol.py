"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``
and the body when it sends ``http.response.body``: two ``send`` system calls and, with
TCP_NODELAY, two packets the client must read. On this 2-core machine that second write was about
12 us of event-loop time per request, a tenth of what a student's whole /classify costs the loop
(measured on a bare ASGI app: 90-106 us per request with two writes, 78-92 us with one).

``CoalescingTransport`` holds what is written during one turn of the event loop and writes it
at the end of that turn (``call_soon``), joined; everything else goes to the real transport.
Order is kept, and closing writes what is held first. ``kdserve.serve.cli`` uses this protocol whenever
httptools is importable (which uvicorn's "auto" would pick too), with websockets off: an upgrade
would hand the wrapped transport to a websocket protocol.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kdserve.serve.edge import EdgeLimits, EdgeState


class CoalescingTransport:
    """Buffers ``write`` until the current loop turn ends; forwards all else to ``transport``."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        # request cycles created from here on write through the wrapper; the flow control made in
        # super().connection_made keeps the real transport (it only pauses and resumes reading)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type,assignment]


# ------------------------------------------------------------------ the connection edge

#: codes of the refusals answered below the app, with their reason phrases
_REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
_REASONS[503] = "Service Unavailable"


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing and answer ``status`` (the parser wraps it)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def refusal_bytes(status: int, code: str, message: str) -> bytes:
    """A whole ``Connection: close`` response with the server's JSON error shape."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class EdgeHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """Bounds what one client can hold before its request reaches the app: the request line and
    headers (bytes, count, URL length: 431/414, counted before httptools buffers them), the time to
    send them (408), the time a connection may sit open before its first request, and the number of
    open connections (past ``max_connections`` the longest-idle one is closed to make room, or the
    newcomer gets 503 when none is idle). Parser errors answer the JSON error shape, not plain text.
    ``edge_protocol`` binds ``limits`` and ``state`` per server."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()
    state: ClassVar[EdgeState]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._in_head = True  # between a request's first byte (or the connection's) and its headers' end
        self._head_bytes = 0
        self._header_count = 0
        self._url_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    # --- connection lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits, state = self.limits, self.state
        if state.open >= limits.max_connections and not state.evict_idle():
            self._refused = True
            self.transport = transport  # type: ignore[assignment] # connection_lost closes it
            state.closed["refused_over_max_connections"] += 1
            message = f"too many open connections (max_connections = {limits.max_connections}); retry later"
            transport.write(refusal_bytes(503, "overloaded", message))  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        state.open += 1
        state.idle[self] = None
        self._arm(limits.idle_timeout_s, "idle_before_first_request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._refused:
            self.state.open -= 1
            self.state.idle.pop(self, None)
        super().connection_lost(exc)

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if reason == "header_timeout":  # counted by _refuse, as request_timeout
            limit = self.limits.header_timeout_s
            self._refuse(408, "request_timeout", f"request headers not complete within header_timeout_s ({limit:g} s)")
        else:  # nothing sent at all: close quietly, as after a keep-alive timeout
            self.state.closed[reason] += 1
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm()
        self.state.closed[code] += 1
        self.transport.write(refusal_bytes(status, code, message))
        self.transport.close()

    # --- parsing, with the head counted before httptools buffers it

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        while data:
            if self._in_head:
                room = self.limits.max_header_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(
                        431,
                        "headers_too_large",
                        f"request line and headers exceed max_header_bytes ({self.limits.max_header_bytes})",
                    )
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError as exc:
                cause = exc.__context__
                if isinstance(cause, _Refuse):
                    self._refuse(cause.status, cause.code, cause.message)
                else:
                    self._refuse(400, "bad_request", f"invalid HTTP request ({_parser_reason(exc)})")
                return
            if self.transport.is_closing():
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = self._url_bytes = 0
        self.state.idle.pop(self, None)
        self._arm(self.limits.header_timeout_s, "header_timeout")

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise _Refuse(414, "uri_too_long", f"request target exceeds max_url_bytes ({self.limits.max_url_bytes})")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise _Refuse(
                431, "too_many_headers", f"more than max_header_count ({self.limits.max_header_count}) headers"
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what follows is the next request's head
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (
            not self.transport.is_closing()
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self.state.idle[self] = None  # keep-alive: idle until the next request begins


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def edge_protocol(limits: EdgeLimits, state: EdgeState) -> type[EdgeHttpToolsProtocol]:
    """The protocol class for one server: uvicorn builds one instance per connection."""
    return type("BoundEdgeHttpToolsProtocol", (EdgeHttpToolsProtocol,), {"limits": limits, "state": state})
