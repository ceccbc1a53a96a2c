"""The FastAPI application: thin routes over ``kdserve.serve.service.Service``.

``create_app(settings)`` verifies the bundles at once (a checksum mismatch raises ``BundleError``
naming the file) and starts loading + warming them when the app starts: ``/health`` answers 200
from the first moment, ``/ready`` 503 until every model is warm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.routing import Match
from starlette.types import ASGIApp

from kdserve import __version__
from kdserve.serve.admin import admin_router
from kdserve.serve.auth import install_api_key, protect_direct
from kdserve.serve.classify_route import answer, direct_classify
from kdserve.serve.config import Settings
from kdserve.serve.edge import EdgeState
from kdserve.serve.edge import register as register_edge_metrics
from kdserve.serve.errors import NotReady, error_response, install_error_handlers
from kdserve.serve.middleware import ServeMiddleware
from kdserve.serve.openai_api import moderations_router
from kdserve.serve.openapi_schema import refine
from kdserve.serve.protocols import hf_router, v2_router
from kdserve.serve.schemas import (
    ERRORS,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ModelsResponse,
    ModelSummary,
)
from kdserve.serve.service import Service
from kdserve.serve.ui import mount_ui

DESCRIPTION = """Distilled text classifiers behind one API, with dynamic batching and
teacher/student routing (A/B, shadow, cascade). Also speaks the Hugging Face inference shape
(`POST /`) and the Open Inference Protocol V2 (`/v2/...`). Every error is
`{"error": {"code", "message"}}`."""


class KdserveApp(FastAPI):
    """FastAPI with ``outer_middleware`` (outermost first) around its whole stack, its own error and
    body-limit layers included: ``ServeMiddleware`` refuses overload and answers the direct
    /classify path before any per-request work of FastAPI's (about 30 us a request on this machine,
    a tenth of the event loop's time per /classify)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outer_middleware: list[Middleware] = []

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for layer in reversed(self.outer_middleware):
            app = layer.cls(app, *layer.args, **layer.kwargs)
        return app


#: the methods probed for ``Allow`` (OPTIONS is never served: no CORS preflight without cors_origins)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route whose
    path matched (``/models/{name}`` is GET in one router and POST in another): Allow must list both.
    Each method is tried against every route (included routers too) through ``BaseRoute.matches``."""
    served = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in app.router.routes):
            served.append(method)
    return served


def install_method_not_allowed(app: FastAPI) -> None:
    async def _405(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"method {request.method} is not allowed on {request.url.path}"
        allow = {"Allow": ", ".join(allowed_methods(app, request))}
        return error_response(405, "method_not_allowed", message, allow, request.url.path)

    app.add_exception_handler(405, _405)  # type: ignore[arg-type]  # a status handler wins over the class one


def create_app(
    settings: Settings, service: Service | None = None, on_startup_failure: Callable[[str], None] | None = None
) -> FastAPI:
    """The app; ``service`` may be built beforehand (the CLI does, to fail before binding a port).
    ``on_startup_failure`` is called with the reason when loading fails (the CLI stops the server)."""
    svc = service if service is not None else Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start_in_background(on_startup_failure)
        try:
            yield
        finally:
            await svc.aclose()

    # FastAPI checks per request whether OpenTelemetry is configured unless told it is off
    telemetry = None if settings.otel else {"tracing": False, "metrics": False, "logs": False}
    app = KdserveApp(
        title="kdserve", version=__version__, description=DESCRIPTION, lifespan=lifespan, telemetry=telemetry
    )
    app.state.service = svc
    app.state.settings = settings
    # counts shared by the connection edge (kdserve.serve.http_protocol) and the middleware
    app.state.edge = edge = EdgeState(max_connections=settings.max_connections)
    svc.alone = edge.alone  # a lone request may run inline (kdserve.serve.batching, inline_lone)
    register_edge_metrics(svc.metrics.registry, edge)
    install_error_handlers(app)
    install_method_not_allowed(app)
    install_api_key(app, settings.api_key)
    if settings.cors_origins:
        app.outer_middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT"],
                allow_headers=["*"],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        )
    app.outer_middleware.append(
        Middleware(
            ServeMiddleware,
            max_body_bytes=settings.max_body_bytes,
            max_inflight=settings.max_inflight_requests,
            retry_after_s=settings.retry_after_s,
            metrics=svc.metrics,
            direct={"/classify": protect_direct(direct_classify(svc, settings), settings.api_key)},
            edge=edge,
            body_timeout_s=settings.body_timeout_s,
            body_min_rate_bytes_s=settings.body_min_rate_bytes_s,
            max_buffered_body_bytes=settings.max_buffered_body_bytes,
        )
    )

    @app.post("/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["classify"])
    async def classify(body: ClassifyRequest, request: Request) -> Response:
        """Classify one text or several; see the fields for routing, scores and truncation."""
        # The middleware's direct path answers every body this route would accept, so in a server
        # only bodies FastAPI refuses (its 422) get here; the body below runs when the direct path is
        # off (tests compare the two). The route stays the OpenAPI schema's account of /classify.
        request_id = body.request_id or request.state.request_id
        request.state.request_id = request_id
        content = await answer(svc, settings, body, request_id, request.receive)
        return Response(content, media_type="application/json")

    @app.get("/models", response_model=ModelsResponse, tags=["models"])
    async def models() -> dict[str, Any]:
        """Every bundle: manifest summary, status and live counters; and the routing config."""
        return svc.describe()

    @app.get("/models/{name}", response_model=ModelSummary, responses=ERRORS, tags=["models"])
    async def model(name: str) -> dict[str, Any]:
        """One bundle, with its full manifest."""
        return svc.describe_model(name, detail=True)

    @app.get("/routing", tags=["models"])
    async def routing() -> dict[str, Any]:
        """The effective routes."""
        return svc.router.describe()

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: 200 while the process runs."""
        return {"status": "alive"}

    @app.get("/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once every bundle is loaded and warm, 503 before (and while stopping)."""
        if not svc.ready:
            reason = f"not ready: the server is {svc.status}" + (f" ({svc.failure})" if svc.failure else "")
            exc = NotReady(reason, retry_after=settings.retry_after_s)
            return error_response(503, exc.code, exc.message, {"Retry-After": str(settings.retry_after_s)})
        # saturation is reported, not a 503: taking a busy replica out of rotation would push its load
        # onto the others exactly when all are busy (see docs/RELIABILITY.md)
        return JSONResponse(
            {"ready": True, "models": {n: s.loaded.checksum for n, s in svc.slots.items()}, **edge.snapshot()}
        )

    # HEAD for probes that only look at the status (curl -I, some load balancers); out of the schema
    # so each operation keeps one id
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(hf_router(svc))
    app.include_router(v2_router(svc))
    app.include_router(moderations_router(svc))
    if settings.admin_token is not None:
        app.include_router(admin_router(svc, settings.admin_token))
    if settings.ui:
        mount_ui(app)

    # the schema with its cross-field rules and the settings' limits (kdserve.serve.openapi_schema)
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(FastAPI.openapi(app), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
