"""Optional API-key auth for the inference routes (``api_key`` / ``KDSERVE_API_KEY``; off when unset).

An ASGI middleware rather than a FastAPI dependency: ``/classify``'s direct path answers in
``ServeMiddleware`` before FastAPI routes anything, and a dependency would not run there. Placed
inside CORS (a browser's preflight carries no credentials) and outside ``ServeMiddleware``, so an
unauthenticated request costs no queue slot and never reaches a model.

Deny by default: every path needs ``Authorization: Bearer <key>`` except the probes and metrics a
platform scrapes without credentials (``/health``, ``/ready``, ``/metrics``, ``/v2/health/*``), the
API docs, and ``/admin/*``, which has its own token in the same header. The key is compared with
``hmac.compare_digest`` (constant time). A missing or wrong key is 401 ``unauthorized`` with
``WWW-Authenticate: Bearer``, in the route's own error shape (the V2 one under ``/v2``); OpenAI's
SDK raises ``AuthenticationError`` on it.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from kdserve.serve.errors import Unauthorized, response_for
from kdserve.serve.middleware import Direct

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready", "/docs", "/redoc", "/openapi.json"}
)
OPEN_PREFIXES = ("/admin/", "/docs/")
_MISSING = "this server needs an API key: send 'Authorization: Bearer <key>'"
_WRONG = "wrong API key"


def is_open(path: str) -> bool:
    """True for the paths that need no API key (see the module docstring)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, None without one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class ApiKeyMiddleware:
    """Refuse requests to protected paths without the API key (see the module docstring)."""

    def __init__(self, app: ASGIApp, api_key: SecretStr) -> None:
        self.app = app
        self.expected = api_key.get_secret_value().encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            failure = Unauthorized(_MISSING)
        elif not hmac.compare_digest(token.encode("utf-8"), self.expected):
            failure = Unauthorized(_WRONG)
        else:
            await self.app(scope, receive, send)
            return
        await response_for(failure, scope["path"])(scope, receive, send)


def protect_direct(direct: Direct, api_key: SecretStr | None) -> Direct:
    """``ServeMiddleware``'s direct ``/classify`` handler behind the API key (unchanged without one):
    that path answers before the app's middleware stack, so it checks the key itself."""
    if api_key is None:
        return direct
    expected = api_key.get_secret_value().encode("utf-8")

    async def guarded(scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        token = bearer_token(scope)
        if token is None or not hmac.compare_digest(token.encode("utf-8"), expected):
            failure = Unauthorized(_MISSING if token is None else _WRONG)
            await response_for(failure, scope["path"])(scope, receive, send)
            return True
        return await direct(scope, body, receive, send)

    return guarded


def install_api_key(app: FastAPI, api_key: SecretStr | None) -> None:
    """Every route of ``app`` but the open ones behind ``api_key`` (nothing when None). Inside the app's
    stack, so ``ServeMiddleware`` gives a 401 its request id and counts it in the HTTP metrics."""
    if api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
