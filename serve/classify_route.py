"""``POST /classify``: the one route production traffic hammers, answered in one place.

``answer`` does the work for both ways in: the FastAPI route (which the OpenAPI schema
documents) and ``direct``, which the middleware calls for a well-formed JSON body before FastAPI
sees the request. Per request, FastAPI spends more event-loop time than a student model does
(dependency solving, validating the returned model against ``response_model`` again,
``jsonable_encoder``), and on 2 cores that event loop is what caps single-text throughput.
``direct`` validates the body against the same ``ClassifyRequest`` (parsing the JSON in the same
pydantic call); anything it does not accept is left to the FastAPI route, so every 4xx for a
malformed body still comes from one place with one wording.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from kdserve.core.explain import Explanation
from kdserve.serve.config import Settings
from kdserve.serve.errors import response_for
from kdserve.serve.middleware import Direct, until_disconnect
from kdserve.serve.policies import PolicyStore
from kdserve.serve.routing import TextAnswer
from kdserve.serve.schemas import ClassifyRequest
from kdserve.serve.service import Service

log = logging.getLogger("kdserve.serve")


# The answer is built as plain dicts in ``ClassifyResponse``'s field order and encoded by
# pydantic-core: the same JSON as ``ClassifyResponse(...).model_dump_json()`` (a test holds them
# equal) without building and validating three kinds of model per request, which cost more of the
# event loop than the JSON encoding. The models stay the OpenAPI schema's account of the answer.


def ranked(labels: list[str], scores: np.ndarray, k: int | None = None) -> list[dict[str, Any]]:
    """``Score`` objects, best first, the first ``k`` (all when None)."""
    order = np.argsort(-scores, kind="stable")[: k if k is not None else len(labels)]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


def explanation(text: str, explained: Explanation, labels: list[str], target: int) -> dict[str, Any]:
    """One ``Explanation`` object: ``target``'s attributions, words in text order."""
    drops = explained.attribution(target)
    return {
        "label": labels[target],
        "score": float(explained.base[target]),
        "complete": explained.complete,
        "tokens": [
            {"token": text[unit.start : unit.end], "start": unit.start, "end": unit.end, "attribution": float(drop)}
            for unit, drop in zip(explained.units, drops)
        ],
    }


def text_result(
    scored: TextAnswer, top_k: int | None, all_scores: bool, explained: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One ``TextResult`` object."""
    best = int(scored.probabilities.argmax())
    scores = None
    if all_scores or top_k is not None:
        scores = ranked(scored.labels, scored.probabilities, None if all_scores else top_k)
    return {
        "label": scored.labels[best],
        "score": float(scored.probabilities[best]),
        "scores": scores,
        "model": scored.model,
        "checksum": scored.checksum,
        "escalated": scored.escalated,
        "truncated": scored.truncated,
        "windows": scored.windows,
        "explanation": explained,
    }


def with_decisions(
    policies: PolicyStore, results: list[dict[str, Any]], answers: list[TextAnswer], policy: str | None
) -> list[dict[str, Any]]:
    """Each ``TextResult`` object with its moderation decision (``categories``, ``flagged``, ``policy``;
    null where the answering model has no policy), all of a request's texts under one policy version.
    A multi-label model's answer always carries every category's calibrated score in ``scores``."""
    state = policies.snapshot()
    for result, scored in zip(results, answers):
        decision = policies.decide(scored.model, scored.probabilities, policy, state)
        if decision is not None:
            result.update(categories=decision.categories, flagged=decision.flagged, policy=decision.policy)
        else:
            result.update(categories=None, flagged=None, policy=None)
        if result["scores"] is None and policies.multi_label(scored.model):
            result["scores"] = ranked(scored.labels, scored.probabilities)
        result["category_explanations"] = None
    return results


def explain_flags(
    texts: list[str], results: list[dict[str, Any]], explanations: list[Explanation], answers: list[TextAnswer]
) -> None:
    """Give each flagged result one explanation per flagged category (``with_decisions`` decided
    them), read from the occlusion batch its top-label explanation came from: no second model call."""
    for text, result, explained, scored in zip(texts, results, explanations, answers):
        flagged = [name for name, hit in (result["categories"] or {}).items() if hit]
        if flagged:
            result["category_explanations"] = {
                name: explanation(text, explained, scored.labels, scored.labels.index(name)) for name in flagged
            }


async def answer(svc: Service, settings: Settings, body: ClassifyRequest, request_id: str, receive: Receive) -> bytes:
    """The JSON bytes of the ``ClassifyResponse``; raises the service's errors (``ServeError``...)."""
    texts = body.text_list()
    svc.policies.check(body.policy)  # an unknown policy is a 422 before any inference
    if settings.log_texts:
        log.info("classify %s model=%s texts=%r", request_id, body.model, texts)
    outcome = await until_disconnect(
        receive,
        svc.classify(
            texts,
            body.model,
            body.routing_key,
            body.truncate,
            "text" if body.text is not None else "texts",
            body.long_text,
            body.explain,
            body.policy,
        ),
    )
    if outcome.explanations is not None:
        explained = [
            explanation(text, e, r.labels, int(r.probabilities.argmax()))
            for text, e, r in zip(texts, outcome.explanations, outcome.results)
        ]
        results = [text_result(r, body.top_k, body.all_scores, x) for r, x in zip(outcome.results, explained)]
    else:
        results = [text_result(r, body.top_k, body.all_scores) for r in outcome.results]
    results = with_decisions(svc.policies, results, outcome.results, body.policy)
    if outcome.explanations is not None:
        explain_flags(texts, results, outcome.explanations, outcome.results)
    return to_json(
        {
            "request_id": request_id,
            "route": outcome.route,
            "variant": outcome.variant,
            "shadowed": outcome.shadowed,
            "models": {r.model: r.checksum for r in outcome.results},
            "results": results,
        }
    )


def _json_content_type(scope: Scope) -> bool:
    """FastAPI's rule for parsing a body as JSON: no Content-Type, or application/json or */*+json."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))
    return True


def direct_classify(svc: Service, settings: Settings) -> Direct:
    """The middleware's way in (see the module docstring)."""

    async def direct(scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        if not body or not _json_content_type(scope):
            return False
        try:
            request = ClassifyRequest.model_validate_json(body)  # parse and validate in one Rust call
        except (ValueError, ValidationError, RecursionError):  # bad JSON or bytes are ValidationErrors here
            return False
        state = scope["state"]
        if request.request_id:
            state["request_id"] = request.request_id
        try:
            content = await answer(svc, settings, request, state["request_id"], receive)
        except Exception as exc:  # the same answer as the app's exception handlers give
            await response_for(exc, "/classify")(scope, receive, send)
            return True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})
        return True

    return direct
