"""Admin routes, mounted only when an admin token is configured (else they are plain 404s).

Bearer token, compared in constant time. The token is checked before the body is read, so an
unauthenticated caller learns nothing from validation errors.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr

from kdserve.serve.errors import Forbidden, InvalidInput, Unauthorized
from kdserve.serve.policies import NAME_PATTERN, InvalidPolicy, PolicyError
from kdserve.serve.routing_config import ABRoute, CascadeRoute, FixedRoute, ShadowRoute
from kdserve.serve.schemas import ADMIN_ERRORS, ReloadResponse
from kdserve.serve.service import Service


def _route_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


#: the routing file's shape (kdserve.serve.routing_config); its model names are checked against the
#: loaded bundles when it is applied (422 invalid_routing), which a schema cannot say
ROUTING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "routes": {
            "type": "object",
            "propertyNames": {"minLength": 1, "pattern": r"\S"},
            "additionalProperties": {
                "oneOf": [_route_schema(m) for m in (FixedRoute, ABRoute, ShadowRoute, CascadeRoute)]
            },
        }
    },
}

#: the policy file's shape (kdserve.serve.policies); models and categories are checked against the
#: loaded bundles (422 invalid_policy)
POLICIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "policies": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN.pattern},
            "additionalProperties": {
                "type": "object",
                # a model's entry; null: its manifest's default policy
                "additionalProperties": {
                    "anyOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "thresholds": {
                                    "type": "object",
                                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                                },
                                "benign_labels": {
                                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                                },
                            },
                        },
                        {"type": "null"},
                    ]
                },
            },
        }
    },
}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body (the routes read it raw, to answer their own 422s)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def admin_router(service: Service, token: SecretStr) -> APIRouter:
    bearer = HTTPBearer(auto_error=False)
    expected = token.get_secret_value().encode("utf-8")

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None:
            raise Unauthorized("admin routes need an 'Authorization: Bearer <token>' header")
        # HTTP header bytes reach us decoded as Latin-1: encoding back gives the bytes the client sent,
        # so a UTF-8 client's non-ASCII token matches the token configured (UTF-8)
        if not hmac.compare_digest(credentials.credentials.encode("latin-1", "replace"), expected):
            raise Forbidden("wrong admin token")

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)], responses=ADMIN_ERRORS)

    @router.post("/reload", response_model=ReloadResponse)
    async def reload() -> dict[str, Any]:
        """Load, verify and warm the bundles on disk, then swap them in atomically. On failure
        (409) the previous versions keep serving and the message names the file at fault."""
        started = time.perf_counter()
        changes = await service.reload()
        return {"reloaded": changes, "seconds": round(time.perf_counter() - started, 3)}

    @router.put("/routing", openapi_extra=json_body(ROUTING_SCHEMA))
    async def put_routing(request: Request) -> dict[str, Any]:
        """Replace the routing config (the body is one, as in the routing file); 422 if invalid,
        and then the old config stays. Answers the effective routes."""
        try:
            config = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
            raise InvalidInput(f"body is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise InvalidInput("the routing config must be a JSON object")
        service.router.update(config)
        return service.router.describe()

    add_policy_routes(router, service)
    return router


def add_policy_routes(router: APIRouter, service: Service) -> None:
    """``GET``/``PUT /admin/policies``: read and replace the moderation policies (kdserve.serve.policies)."""

    @router.get("/policies")
    async def get_policies() -> dict[str, Any]:
        """The live policies: per policy and model, the effective thresholds and benign labels; and the config."""
        return service.policies.describe()

    @router.put("/policies", openapi_extra=json_body(POLICIES_SCHEMA))
    async def put_policies(request: Request) -> dict[str, Any]:
        """Replace the policy config (the body is one, as in the policy file, as JSON). Validated whole
        against the loaded bundles, then swapped in one assignment: requests in flight finish under the
        old policies, later ones decide under the new. 422 invalid_policy if invalid: the old ones stay."""
        try:
            config = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInput(f"body is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise InvalidInput("the policy config must be a JSON object with 'policies'")
        try:
            service.policies.replace(config)
        except PolicyError as exc:
            raise InvalidPolicy(str(exc)) from None
        return service.policies.describe()
