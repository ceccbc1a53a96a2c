"""The FastAPI application: thin routes over ``serve.service.Service``.

``create_app(settings)`` verifies the bundles at once (a checksum mismatch raises ``BundleError``
naming the file) and starts loading + warming them when the app starts: ``/health`` answers 200
from the first moment, ``/ready`` 503 until every model is warm.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kdserve import __version__
from serve.admin import admin_router
from serve.config import Settings
from serve.errors import NotReady, error_response, install_error_handlers
from serve.middleware import ServeMiddleware, until_disconnect
from serve.protocols import hf_router, v2_router
from serve.schemas import (
    ERRORS,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ModelsResponse,
    ModelSummary,
    Score,
    TextResult,
)
from serve.service import Scored, Service

log = logging.getLogger("kdserve.serve")

DESCRIPTION = """Distilled text classifiers behind one API, with dynamic batching and
teacher/student routing (A/B, shadow, cascade). Also speaks the Hugging Face inference shape
(`POST /`) and the Open Inference Protocol V2 (`/v2/...`). Every error is
`{"error": {"code", "message"}}`."""


def ranked(labels: list[str], scores: np.ndarray, k: int | None = None) -> list[Score]:
    """(label, score) best first, the first ``k`` (all when None)."""
    order = np.argsort(-scores, kind="stable")[: k if k is not None else len(labels)]
    return [Score(label=labels[i], score=float(scores[i])) for i in order]


def text_result(scored: Scored, top_k: int | None, all_scores: bool) -> TextResult:
    best = int(np.argmax(scored.probabilities))
    scores = None
    if all_scores or top_k is not None:
        scores = ranked(scored.labels, scored.probabilities, None if all_scores else top_k)
    return TextResult(label=scored.labels[best], score=float(scored.probabilities[best]), scores=scores,
                      model=scored.model, checksum=scored.checksum, escalated=scored.escalated)


def create_app(settings: Settings, service: Service | None = None,
               on_startup_failure: Callable[[str], None] | None = None) -> FastAPI:
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

    app = FastAPI(title="kdserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = svc
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(ServeMiddleware, max_body_bytes=settings.max_body_bytes, max_inflight=settings.max_inflight_requests,
                       retry_after_s=settings.retry_after_s, metrics=svc.metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["*"], expose_headers=["X-Request-ID", "Retry-After"])

    @app.post("/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["classify"])
    async def classify(body: ClassifyRequest, request: Request) -> ClassifyResponse:
        """Classify one text or several; see the fields for routing, scores and truncation."""
        request_id = body.request_id or request.state.request_id
        request.state.request_id = request_id
        texts = body.text_list()
        if settings.log_texts:
            log.info("classify %s model=%s texts=%r", request_id, body.model, texts)
        outcome = await until_disconnect(request, svc.classify(
            texts, body.model, body.routing_key, body.truncate, "text" if body.text is not None else "texts"))
        results = [text_result(r, body.top_k, body.all_scores) for r in outcome.results]
        return ClassifyResponse(request_id=request_id, route=outcome.route, variant=outcome.variant,
                                shadowed=outcome.shadowed, models={r.model: r.checksum for r in outcome.results},
                                results=results)

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
        return JSONResponse({"ready": True, "models": {n: s.loaded.checksum for n, s in svc.slots.items()}})

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(hf_router(svc))
    app.include_router(v2_router(svc))
    if settings.admin_token is not None:
        app.include_router(admin_router(svc, settings.admin_token))
    return app
