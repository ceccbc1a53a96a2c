"""ASGI plumbing shared by every route: request ids, the body-size limit, HTTP metrics, and
cancelling work when the client goes away.

The body limit lives here, below FastAPI, so it holds before any JSON parsing: a
``Content-Length`` over the limit is refused at once, and a body without one (chunked) is read
incrementally and refused as soon as it passes the limit, never buffered whole.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import ClientGone, error_response
from serve.metrics import Metrics
from serve.service import admitted_at

T = TypeVar("T")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
# Probes and scrapes must answer even when the server is saturated.
EXEMPT = frozenset({"/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready"})


def new_request_id() -> str:
    return uuid.uuid4().hex


class ServeMiddleware:
    """Gives each request ``scope["state"]["request_id"]`` (a valid ``X-Request-ID`` header or a new
    id; a route may replace it) and echoes it as ``X-Request-ID``; refuses requests beyond
    ``max_inflight`` at once (503) and bodies over ``max_body_bytes`` (413); records
    ``kdserve_http_requests`` and latency by route template."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_inflight: int, retry_after_s: int,
                 metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.inflight = 0  # only touched on the event loop: no lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        state = scope.setdefault("state", {})
        state["request_id"] = given if _REQUEST_ID.match(given) else new_request_id()
        status = 500  # stays 500 when the app raised before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = state["request_id"]
            await send(message)

        counted = scope["path"] not in EXEMPT
        try:
            if counted:
                if self.inflight >= self.max_inflight:
                    self.metrics.rejected.labels("overloaded").inc()
                    response = error_response(
                        503, "overloaded", f"too many requests in progress (max_inflight_requests = "
                        f"{self.max_inflight}); retry later", {"Retry-After": str(self.retry_after_s)},
                        path=scope["path"])
                    counted = False
                    await response(scope, receive, send_with_id)
                    return
                self.inflight += 1
                self.metrics.inflight.set(self.inflight)
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(scope, headers, receive, send_with_id)
                if body is None:
                    return
                receive = _replay(body, receive)
            admitted_at.set(time.monotonic())
            await self.app(scope, receive, send_with_id)
        finally:
            if counted:
                self.inflight -= 1
                self.metrics.inflight.set(self.inflight)
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.http_latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _read_body(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 (too large) or when the client left."""
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, receive, send, f"Content-Length {declared}")
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, f"more than {limit} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        self.metrics.rejected.labels("body_too_large").inc()
        response = error_response(413, "payload_too_large",
                                  f"request body too large ({what}); the limit is max_body_bytes = {self.max_body_bytes}",
                                  path=scope.get("path", ""))
        # the unread rest of the body makes keep-alive pointless: ask the client to reconnect
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


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


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it when the client disconnects first (then ``ClientGone``):
    its queued texts are dropped before inference instead of computed for nobody."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.create_task(watch())
    try:
        waiting: set[asyncio.Future[Any]] = {task, watcher}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if watcher.exception() is not None:  # the watch broke, not the client: just wait for the answer
            return await task
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        raise ClientGone("the client disconnected before the answer was ready")
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
