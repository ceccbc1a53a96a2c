"""Server errors and their HTTP form: every error answers ``{"error": {"code", "message"}}``.

``ServeError`` subclasses carry their status and code; the handlers installed by
``install_error_handlers`` turn them, the router's errors, FastAPI's validation errors, Starlette's
404/405 and any unexpected exception (500, without internals) into that one JSON shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kdserve.core.bundle import BundleError
from kdserve.core.errors import KdserveError
from kdserve.serve.routing import RoutingError, UnknownModel

log = logging.getLogger("kdserve.serve")


class ServeError(KdserveError):
    """A request the server cannot answer; ``status`` and ``code`` are its HTTP form."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(ServeError):
    status, code = 422, "invalid_request"


class NotFound(ServeError):
    status, code = 404, "not_found"


class PayloadTooLarge(ServeError):
    status, code = 413, "payload_too_large"


class TextTooLong(ServeError):
    """A text over the model's token limit with ``truncate=false``; ``index`` is its position in the
    texts given to ``infer`` (the service maps it back to the request's index)."""

    status, code = 413, "text_too_long"

    def __init__(self, index: int, model: str, max_length: int, text: str = "") -> None:
        self.index, self.model, self.max_length, self.text = index, model, max_length, text
        super().__init__(self.describe(index))

    def describe(self, index: int) -> str:
        return (
            f"texts[{index}] is longer than {self.max_length} tokens, the limit of model {self.model!r}; "
            f"shorten it or send truncate=true"
        )


class QueueFull(ServeError):
    status, code = 429, "queue_full"


class RequestTimeout(ServeError):
    status, code = 503, "timeout"


class NotReady(ServeError):
    status, code = 503, "not_ready"


class Unauthorized(ServeError):
    status, code = 401, "unauthorized"


class Forbidden(ServeError):
    status, code = 403, "forbidden"


class InferenceFailed(ServeError):
    """The model raised on this request's batch; the cause is in the server log. A ServeError rather
    than the runtime's own exception, so the 500 is answered like any other error and the
    connection stays open (an unhandled exception makes the server close it)."""

    status, code = 500, "internal_error"

    def __init__(self) -> None:
        super().__init__("internal server error; see the server log")


class ReloadFailed(ServeError):
    # 409: the request is fine, the bundles on disk conflict with serving them; old ones keep serving
    status, code = 409, "reload_failed"


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    """``{"error": {"code", "message"}}``; under ``/v2`` the Open Inference Protocol's own shape,
    ``{"error": message}`` (plus ``code``), since V2 clients read ``error`` as a string."""
    if is_v2(path):
        return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def response_for(exc: Exception, path: str = "") -> JSONResponse:
    """The JSON error response for any exception (500 for ones that are not user errors)."""
    if isinstance(exc, ServeError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return error_response(exc.status, exc.code, exc.message, headers, path)
    if isinstance(exc, UnknownModel):
        return error_response(404, "unknown_model", str(exc), path=path)
    if isinstance(exc, RoutingError):
        return error_response(422, "invalid_routing", str(exc), path=path)
    if isinstance(exc, BundleError):
        return error_response(409, "bundle_error", str(exc), path=path)
    if isinstance(exc, KdserveError):
        return error_response(400, "bad_request", str(exc), path=path)
    log.error("unhandled error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; see the server log", path=path)


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            message = "unknown field (not part of this API)"
        elif err.get("type") == "json_invalid":
            message = f"invalid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        parts.append(f"{where}: {message}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def unparsable_body(cause: BaseException) -> str:
    """Why a JSON body could not be parsed, for the causes ``json.loads`` raises beyond syntax errors."""
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset {cause.start}); "
            f"send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "body JSON is nested too deeply to parse"
    return f"body could not be parsed as JSON ({type(cause).__name__})"


def install_error_handlers(app: FastAPI) -> None:
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(list(exc.errors())), path=request.url.path)

    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body": json.loads failed other than by a syntax error
            return error_response(422, "invalid_request", unparsable_body(exc.__cause__), path=request.url.path)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            path = request.url.path
            shown = path if len(path) <= 200 else f"{path[:200]}...({len(path)} chars)"  # not a 60 KB echo
            message = f"no route {request.method} {shown}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            message,
            dict(exc.headers) if exc.headers else None,
            request.url.path,
        )

    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc, request.url.path)

    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(KdserveError, _any)
    app.add_exception_handler(Exception, _any)


class ClientGone(ServeError):
    # nginx's 499: nobody reads it, but the access log and metrics show the client left
    status, code = 499, "client_closed_request"


class WindowLimit(ServeError):
    """A text needing more long_text "chunk" windows than ``max_windows_per_text``; ``index`` as in
    ``TextTooLong`` (the service maps it back to the request's index)."""

    status, code = 413, "too_many_windows"

    def __init__(self, index: int, model: str, windows: int, limit: int, text: str = "") -> None:
        self.index, self.model, self.windows, self.limit, self.text = index, model, windows, limit, text
        super().__init__(self.describe(index))

    def describe(self, index: int) -> str:
        return (
            f"texts[{index}] needs {self.windows} windows of model {self.model!r}, over max_windows_per_text "
            f"({self.limit}); shorten it or send long_text=head_tail or truncate"
        )


class ExplainUnavailable(ServeError):
    """``explain`` asked of a request the server cannot explain (see ``Service.explain``)."""

    status, code = 422, "explain_unavailable"
