"""ASGI plumbing shared by every route: request ids, the body-size limit, HTTP metrics, and
cancelling work when the client goes away.

The body limit lives here, below FastAPI, so it holds before any JSON parsing: a
``Content-Length`` over the limit is refused at once, and a body without one (chunked) is read
incrementally and refused as soon as it passes the limit, never buffered whole.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kdserve.serve.edge import EdgeState
from kdserve.serve.errors import ClientGone, error_response, is_v2
from kdserve.serve.metrics import Metrics
from kdserve.serve.service import admitted_at

T = TypeVar("T")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
# Probes and scrapes must answer even when the server is saturated.
EXEMPT = frozenset({"/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready"})
#: a route answered below FastAPI: ``(scope, body, receive, send) -> answered``; False hands the
#: request on to the app (see ``kdserve.serve.classify_route``)
Direct = Callable[[Scope, bytes, Receive, Send], Awaitable[bool]]


_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


def new_request_id() -> str:
    """32 hex digits, unique: a random per-process prefix and a counter (uuid4 costs a getrandom
    syscall per request, 3% of the event loop's time per /classify)."""
    return f"{_ID_PREFIX}{next(_ids):016x}"


class ServeMiddleware:
    """Gives each request ``scope["state"]["request_id"]`` (a valid ``X-Request-ID`` header or a new
    id; a route may replace it) and echoes it as ``X-Request-ID``; refuses requests beyond
    ``max_inflight`` at once (503) and bodies over ``max_body_bytes`` (413); records
    ``kdserve_http_requests`` and latency by route template. A POST to a path in ``direct`` goes to
    that handler with its body first."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_inflight: int,
        retry_after_s: int,
        metrics: Metrics,
        direct: dict[str, Direct] | None = None,
        edge: EdgeState | None = None,
        body_timeout_s: float = 10.0,
        body_min_rate_bytes_s: int = 1024,
        max_buffered_body_bytes: int = 256 << 20,
    ) -> None:
        self.app = app
        self.direct = direct or {}
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.body_min_rate = body_min_rate_bytes_s
        self.max_buffered = max_buffered_body_bytes
        # in-flight, reading and buffered counts live in the edge state the app's /ready reads; only
        # touched on the event loop: no lock
        self.edge = edge if edge is not None else EdgeState()
        self.edge.max_inflight = max_inflight
        # Read at scrape time rather than set twice per request; the series children are bound once
        # per label set (bounded: route templates, methods, statuses): per-request ``labels()`` calls
        # were a tenth of the loop's Python time per /classify.
        metrics.inflight.set_function(lambda: self.edge.inflight)
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        # Under overload most requests are refused, so a refusal must cost as little as possible:
        # its response is rendered once here (per error shape), not per request.
        message = f"too many requests in progress (max_inflight_requests = {max_inflight}); retry later"
        self._overloaded = {
            v2: error_response(
                503, "overloaded", message, {"Retry-After": str(retry_after_s)}, path="/v2" if v2 else ""
            )
            for v2 in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given, declared = _request_headers(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = given if given is not None and _REQUEST_ID.match(given) else new_request_id()
        status = 500  # stays 500 when the app raised before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", state["request_id"].encode("latin-1")))
                message["headers"] = headers
            await send(message)

        counted = scope["path"] not in EXEMPT
        endpoint: str | None = None  # the route template, when not FastAPI's to tell
        edge = self.edge
        body = b""
        holding = False  # this request holds an in-flight slot
        try:
            # A request takes an in-flight slot only once its body is read: a client stalling its
            # upload holds a share of max_buffered_body_bytes for at most body_timeout_s, not a slot.
            # Full slots are refused before the body is read too (the cheap refusal under overload).
            if counted and edge.inflight >= self.max_inflight:
                counted = False
                endpoint = scope["path"] if scope["path"] in self.direct else None
                await self._refuse_overloaded(scope, send_with_id)
                return
            if scope["method"] in _BODY_METHODS:
                if not await self._acceptable_encoding(scope, send_with_id):
                    return
                read = await self._read_body(scope, declared, receive, send_with_id)
                if read is None:
                    return
                body = read
            if counted:
                if edge.inflight >= self.max_inflight:  # filled up while this body was read
                    counted = False
                    endpoint = scope["path"] if scope["path"] in self.direct else None
                    await self._refuse_overloaded(scope, send_with_id)
                    return
                edge.inflight += 1
                holding = True
            admitted_at.set(time.monotonic())
            if scope["method"] in _BODY_METHODS:
                handler = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
                if handler is not None and await handler(scope, body, receive, send_with_id):
                    endpoint = scope["path"]
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # the server cancels what still runs after graceful_timeout_s: the shutdown log counts it
            edge.closed["cancelled"] += 1
            raise
        finally:
            if holding:
                edge.inflight -= 1
            endpoint = endpoint or getattr(scope.get("route"), "path", None) or "unmatched"
            key = (endpoint, scope["method"], status)
            requests = self._requests.get(key)
            if requests is None:
                requests = self._requests[key] = self.metrics.http_requests.labels(
                    endpoint, scope["method"], str(status)
                )
            requests.inc()
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = self.metrics.http_latency.labels(endpoint)
            latency.observe(time.perf_counter() - started)

    async def _refuse_overloaded(self, scope: Scope, send: Send) -> None:
        self.metrics.rejected.labels("overloaded").inc()
        refusal = self._overloaded[is_v2(scope["path"])]
        await send({"type": "http.response.start", "status": 503, "headers": list(refusal.raw_headers)})
        await send({"type": "http.response.body", "body": refusal.body})

    async def _acceptable_encoding(self, scope: Scope, send: Send) -> bool:
        """False after answering 415 for a body no route can read: compressed (Content-Encoding) or
        declared as text or multipart (a 422 "invalid JSON" would send the client looking at its JSON)."""
        encoding, ctype = _body_headers(scope["headers"])
        problem = None
        if encoding not in ("", "identity"):
            problem = f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
        elif ctype.startswith(("text/", "multipart/")):
            problem = f"Content-Type {ctype!r} is not supported; send application/json"
        if problem is None:
            return True
        self.metrics.rejected.labels("unsupported_media_type").inc()
        response = error_response(415, "unsupported_media_type", problem, path=scope.get("path", ""))
        response.headers["Connection"] = "close"  # the body was not read
        await response(scope, _no_body, send)
        return False

    async def _read_body(self, scope: Scope, declared: str | None, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 (too large), 408 (too slow), 503 (too many
        bodies being read) or when the client left. ``declared`` is the request's Content-Length."""
        limit = self.max_body_bytes
        if declared is not None:
            declared = declared.strip(" \t")  # optional whitespace around a field value (RFC 9110 5.5)
            if not declared.isdigit() or int(declared) > limit:
                await self._too_large(scope, receive, send, f"Content-Length {declared[:32]}")
                return None
        edge = self.edge
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks: list[bytes] = []
        size = 0
        edge.reading += 1
        try:
            while True:
                # the body may take body_timeout_s plus its size at the minimum rate: a stalled or
                # dribbling upload is cut, a large one on a slow link is not
                deadline = started + self.body_timeout_s + size / self.body_min_rate
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    await self._too_slow(scope, send, size, loop.time() - started)
                    return None
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._too_large(scope, receive, send, f"more than {limit} bytes")
                    return None
                if edge.buffered_bytes + len(chunk) > self.max_buffered:
                    await self._buffers_full(scope, send)
                    return None
                edge.buffered_bytes += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            edge.reading -= 1
            edge.buffered_bytes -= sum(len(c) for c in chunks)

    async def _too_slow(self, scope: Scope, send: Send, size: int, seconds: float) -> None:
        self.metrics.rejected.labels("body_timeout").inc()
        self.edge.closed["body_timeout"] += 1
        response = error_response(
            408,
            "request_timeout",
            f"request body too slow: {size} bytes in {seconds:.1f} s (body_timeout_s = {self.body_timeout_s:g}, "
            f"then body_min_rate_bytes_s = {self.body_min_rate})",
            {"Connection": "close"},
            path=scope.get("path", ""),
        )
        await response(scope, _no_body, send)

    async def _buffers_full(self, scope: Scope, send: Send) -> None:
        self.metrics.rejected.labels("body_buffers_full").inc()
        response = error_response(
            503,
            "overloaded",
            f"too many request bodies being uploaded (max_buffered_body_bytes = {self.max_buffered}); retry later",
            {"Retry-After": str(self.retry_after_s), "Connection": "close"},
            path=scope.get("path", ""),
        )
        await response(scope, _no_body, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        self.metrics.rejected.labels("body_too_large").inc()
        response = error_response(
            413,
            "payload_too_large",
            f"request body too large ({what}); the limit is max_body_bytes = {self.max_body_bytes}",
            path=scope.get("path", ""),
        )
        # the unread rest of the body makes keep-alive pointless: ask the client to reconnect
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _request_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The first X-Request-ID and Content-Length values in ASGI's raw headers (names arrive
    lower-cased), in one pass."""
    given: str | None = None
    declared: str | None = None
    for name, value in raw:
        if name == b"x-request-id" and given is None:
            given = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    return given, declared


async def _no_body() -> Message:
    # a response sent without reading the request body must not wait on it (Starlette's response
    # listens for a disconnect through ``receive``)
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _body_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str, str]:
    """(Content-Encoding, Content-Type media type), lower-cased; "" when absent."""
    encoding = ctype = ""
    for name, value in raw:
        if name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
        elif name == b"content-type":
            ctype = value.decode("latin-1").split(";", 1)[0].strip().lower()
    return encoding, ctype


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then the real one (to see disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


#: how long a request may run before a task starts watching for its client's disconnect
WATCH_AFTER_S = 0.02


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` in this task, cancelling it when the client disconnects first (then
    ``ClientGone``): its queued texts are dropped before inference instead of computed for nobody.
    ``receive`` must have given the whole body already, so its next message is the disconnect.

    The watch starts only once the request has run ``WATCH_AFTER_S``: a task per request (created,
    scheduled, cancelled) cost more event-loop time than a student model's whole answer, and a
    client gone within those first milliseconds leaves at most that much work behind."""
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the watch broke, not the client: just wait for the answer
            return
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone("the client disconnected before the answer was ready") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
