"""``POST /v1/moderations``: OpenAI's moderation API over the same service, so the clients and SDKs
that moderation pipelines already use work unchanged
(``OpenAI(base_url="http://host:port/v1", api_key=...).moderations.create(input=..., model=...)``).

``{"input": str | [str], "model"?: str}`` -> ``{"id", "model", "results": [{"flagged", "categories",
"category_scores", "category_applied_input_types"}]}``, one result per input in order. The categories
are the answering model's own (its non-benign labels with a policy threshold), not OpenAI's
taxonomy; the SDK parses them without validation, and ``result.categories.model_extra`` (or
``to_dict()``) holds them. ``model`` names a bundle or a route (default: the ``default`` route);
kdserve's extension ``policy`` (SDK: ``extra_body={"policy": "strict"}``) picks a named policy.
Every model the route can answer with must have a policy (else 422 ``no_policy``), since this API
always decides. Texts longer than the model's token limit are cut at it, as ``/classify`` does by
default. Errors keep kdserve's ``{"error": {"code", "message"}}``, which OpenAI's SDK reads as its
own error shape (``AuthenticationError`` on 401, ``NotFoundError`` on 404, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from kdserve.serve.middleware import until_disconnect
from kdserve.serve.policies import NoPolicy
from kdserve.serve.routing import Router
from kdserve.serve.routing_config import ABRoute, CascadeRoute, FixedRoute, ShadowRoute
from kdserve.serve.schemas import ERRORS
from kdserve.serve.service import Service


class ModerationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"input": "you are lovely"}, {"input": ["a", "b"], "model": "hate-bilstm"}]},
    )

    input: StrictStr | list[StrictStr] = Field(
        description="one text or several (limits as /classify: max_texts_per_request, max_text_chars)"
    )
    model: StrictStr | None = Field(None, description="a bundle or route name; default: the default route")
    policy: StrictStr | None = Field(
        None, min_length=1, max_length=64, description="kdserve extension: a named policy (e.g. strict)"
    )


class ModerationResult(BaseModel):
    flagged: bool = Field(description="any category true")
    categories: dict[str, bool] = Field(description="category -> calibrated score >= the policy's threshold")
    category_scores: dict[str, float] = Field(description="category -> calibrated score (sigmoid for multi-label)")
    category_applied_input_types: dict[str, list[str]] = Field(description='category -> ["text"] (OpenAI field)')
    policy: str = Field(description="kdserve extension: the policy that decided")
    escalated: bool = Field(False, description="kdserve extension: a cascade sent this text to the teacher")


class ModerationResponse(BaseModel):
    id: str = Field(description='"modr-" and the request id (X-Request-ID)')
    model: str = Field(description="the bundle that answered every input, else the route (e.g. a cascade)")
    results: list[ModerationResult]


def route_models(router: Router, requested: str | None) -> list[str]:
    """Every model that may answer a request for ``requested`` (``UnknownModel`` for a bad name)."""
    _, spec = router.resolve(requested)
    if isinstance(spec, FixedRoute):
        return [spec.model]
    if isinstance(spec, ABRoute):
        return list(spec.variants)
    if isinstance(spec, ShadowRoute):
        return [spec.primary]  # the shadow's answers are never returned
    assert isinstance(spec, CascadeRoute)
    return [spec.student, spec.teacher]


def moderations_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])
    errors = {**ERRORS, 422: {**ERRORS[422], "description": "invalid request, unknown_policy, or no_policy"}}

    @router.post("/moderations", response_model=ModerationResponse, responses=errors)
    async def moderations(body: ModerationRequest, request: Request) -> dict[str, Any]:
        """OpenAI-compatible moderation: a decision per input under the model's (or the named) policy."""
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        service.validate_texts(texts, "input")
        service.policies.require(route_models(service.router, body.model), body.policy)
        outcome = await until_disconnect(
            request.receive, service.classify(texts, body.model, None, True, "input", policy=body.policy)
        )
        state = service.policies.snapshot()
        results = []
        for answer in outcome.results:
            decision = service.policies.decide(answer.model, answer.probabilities, body.policy, state)
            if decision is None:  # the policies were replaced in between and this model lost its thresholds
                raise NoPolicy(f"model {answer.model!r} has no category thresholds under the live policies")
            results.append(
                {
                    "flagged": decision.flagged,
                    "categories": decision.categories,
                    "category_scores": decision.category_scores,
                    "category_applied_input_types": {c: ["text"] for c in decision.categories},
                    "policy": decision.policy,
                    "escalated": answer.escalated,
                }
            )
        answered = {r.model for r in outcome.results}
        model = answered.pop() if len(answered) == 1 else outcome.route
        return {"id": f"modr-{request.state.request_id}", "model": model, "results": results}

    return router
