"""The routing config: its schema, validation against the loaded models, and the file reader.

``build_state`` turns a config dict into validated, precomputed routes or raises one
``RoutingError`` naming the route and the field; the router swaps the result in only when it
succeeds. This module imports no torch or FastAPI (pydantic, numpy and the standard library).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from kdserve.core.config_files import load_json_or_yaml
from kdserve.core.errors import KdserveError

ROLES = ("teacher", "student")


class RoutingError(KdserveError):
    """A routing config is invalid (the server answers HTTP 422)."""

    exit_code = 2


@dataclass
class ModelInfo:
    """What routing needs of a loaded bundle: its name, role and label order."""

    name: str
    role: str
    labels: list[str]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RoutingError(f"model {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise RoutingError(f"model {self.name!r}: needs at least two distinct labels, got {self.labels}")


class _Route(BaseModel):
    # strict: "0.5" or true is not a number here, a typo'd field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FixedRoute(_Route):
    policy: Literal["fixed"]
    model: str


class ABRoute(_Route):
    policy: Literal["ab"]
    variants: dict[str, float]


class ShadowRoute(_Route):
    policy: Literal["shadow"]
    primary: str
    shadow: str
    sample_rate: float = 1.0


class CascadeRoute(_Route):
    policy: Literal["cascade"]
    student: str
    teacher: str
    threshold: float | None = None
    thresholds: dict[str, float] = {}
    # "boundary": also escalate a text when any category's calibrated student score lies within
    # ``band`` of that category's policy threshold (kdserve.serve.policies), where the student's
    # decision is most likely wrong; None = "top_score" only (the rule above)
    escalate: Literal["top_score", "boundary"] | None = None
    band: float | None = None


RouteSpec = FixedRoute | ABRoute | ShadowRoute | CascadeRoute
POLICIES: dict[str, type[_Route]] = {
    "ab": ABRoute,
    "cascade": CascadeRoute,
    "fixed": FixedRoute,
    "shadow": ShadowRoute,
}


@dataclass(frozen=True)
class CompiledRoute:
    """A validated route with what classify needs precomputed for the current models."""

    name: str
    spec: RouteSpec
    implicit: bool = False
    alias_of: str | None = None  # "default" standing in for this route (hashed in its place for A/B)
    cumulative: tuple[float, ...] = ()  # ab: normalized cumulative weights, in variant order
    thresholds: np.ndarray | None = None  # cascade: float [C], per student label
    shadow_order: tuple[int, ...] = ()  # shadow: column of each primary label in the shadow output


@dataclass(frozen=True)
class RoutingState:
    models: dict[str, ModelInfo]
    config: dict[str, Any]
    routes: dict[str, CompiledRoute] = field(default_factory=dict)


def _fail(route: str, fieldname: str, message: str) -> RoutingError:
    return RoutingError(f"route {route!r}, field {fieldname!r}: {message}")


def _in_unit(value: float) -> bool:
    return 0.0 <= value <= 1.0  # False for NaN too


def _parse_route(name: Any, raw: Any) -> RouteSpec:
    if not isinstance(name, str) or not name.strip():
        raise RoutingError(f"route names must be non-empty strings, got {name!r}")
    if not isinstance(raw, Mapping):
        raise RoutingError(f"route {name!r}: expected an object with a 'policy', got {type(raw).__name__}")
    policy = raw.get("policy")
    if not isinstance(policy, str) or policy not in POLICIES:  # an object or list here is unhashable
        what = "missing" if policy is None else f"unknown policy {policy!r}"
        raise _fail(name, "policy", f"{what} (expected one of: {', '.join(POLICIES)})")
    try:
        spec = POLICIES[policy].model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"]) or "policy"
            msg = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].lower()
            problems.append(f"route {name!r}, field {loc!r}: {msg}")
        raise RoutingError("; ".join(problems)) from None
    return spec  # type: ignore[return-value]


def _check_model(route: str, fieldname: str, model: str, models: Mapping[str, ModelInfo]) -> ModelInfo:
    if model not in models:
        raise _fail(route, fieldname, f"unknown model {model!r} (models: {', '.join(sorted(models)) or 'none'})")
    return models[model]


def _same_labels(route: str, a: tuple[str, str], b: tuple[str, str], models: Mapping[str, ModelInfo]) -> None:
    (field_a, name_a), (field_b, name_b) = a, b
    if set(models[name_a].labels) != set(models[name_b].labels):
        raise RoutingError(
            f"route {route!r}, fields {field_a!r}/{field_b!r}: labels of {name_a!r} {models[name_a].labels} "
            f"differ from labels of {name_b!r} {models[name_b].labels}"
        )


def _compile(name: str, spec: RouteSpec, models: Mapping[str, ModelInfo], implicit: bool = False) -> CompiledRoute:
    if isinstance(spec, FixedRoute):
        _check_model(name, "model", spec.model, models)
        return CompiledRoute(name, spec, implicit)
    if isinstance(spec, ABRoute):
        if not spec.variants:
            raise _fail(name, "variants", "needs at least one variant")
        for model, weight in spec.variants.items():
            _check_model(name, "variants", model, models)
            if not (math.isfinite(weight) and weight > 0):
                raise _fail(name, "variants", f"weight of {model!r} must be a positive finite number, got {weight}")
        # scaled by the largest weight first: 1e308 twice would sum to inf (and every share to 0 or NaN)
        largest = max(spec.variants.values())
        scaled = [w / largest for w in spec.variants.values()]
        total = math.fsum(scaled)
        cumulative = tuple(float(c) / total for c in np.cumsum(scaled))
        return CompiledRoute(name, spec, implicit, cumulative=cumulative)
    if isinstance(spec, ShadowRoute):
        primary = _check_model(name, "primary", spec.primary, models)
        shadow = _check_model(name, "shadow", spec.shadow, models)
        if spec.primary == spec.shadow:
            raise _fail(name, "shadow", f"must differ from the primary {spec.primary!r}")
        if not _in_unit(spec.sample_rate):
            raise _fail(name, "sample_rate", f"must be within [0, 1], got {spec.sample_rate}")
        _same_labels(name, ("primary", spec.primary), ("shadow", spec.shadow), models)
        order = tuple(shadow.labels.index(label) for label in primary.labels)
        return CompiledRoute(name, spec, implicit, shadow_order=order)
    student = _check_model(name, "student", spec.student, models)
    _check_model(name, "teacher", spec.teacher, models)
    _same_labels(name, ("student", spec.student), ("teacher", spec.teacher), models)
    if spec.threshold is not None and not _in_unit(spec.threshold):
        raise _fail(name, "threshold", f"must be within [0, 1], got {spec.threshold}")
    for label, value in spec.thresholds.items():
        if label not in student.labels:
            raise _fail(
                name,
                "thresholds",
                f"{label!r} is not a label of {spec.student!r} (labels: {', '.join(student.labels)})",
            )
        if not _in_unit(value):
            raise _fail(name, "thresholds", f"threshold of {label!r} must be within [0, 1], got {value}")
    if spec.band is not None and spec.escalate != "boundary":
        raise _fail(name, "band", 'only applies with "escalate": "boundary"')
    if spec.band is not None and not 0.0 <= spec.band <= 0.5:
        raise _fail(name, "band", f"must be within [0, 0.5], got {spec.band}")
    missing = [label for label in student.labels if label not in spec.thresholds]
    # a boundary cascade may rely on the band alone: labels without a top-score threshold never escalate by it
    if missing and spec.threshold is None and spec.escalate != "boundary":
        raise _fail(
            name, "threshold", f"required as the default for labels without their own threshold ({', '.join(missing)})"
        )
    vector = np.array([spec.thresholds.get(label, spec.threshold) for label in student.labels], dtype=np.float64)
    return CompiledRoute(name, spec, implicit, thresholds=vector)


def _first(models: Mapping[str, ModelInfo], role: str) -> str | None:
    names = sorted(name for name, info in models.items() if info.role == role)
    return names[0] if names else None


def build_state(models: Mapping[str, ModelInfo], config: Mapping[str, Any] | None) -> RoutingState:
    """Validate ``config`` against ``models`` completely; raises ``RoutingError`` naming route and field."""
    models = dict(models)
    for key, info in models.items():
        if not isinstance(info, ModelInfo) or info.name != key:
            raise RoutingError(f"model entry {key!r} must be a ModelInfo named {key!r}")
    config = dict(config or {})
    unknown = sorted(set(config) - {"routes"})
    if unknown:
        raise RoutingError(f"routing config: unknown field(s) {', '.join(map(repr, unknown))} (expected 'routes')")
    raw_routes = config.get("routes", {})
    if not isinstance(raw_routes, Mapping):
        raise RoutingError(
            f"routing config: 'routes' must be an object of route name -> route, got {type(raw_routes).__name__}"
        )
    routes: dict[str, CompiledRoute] = {}
    for name, raw in raw_routes.items():
        spec = _parse_route(name, raw)
        if name in models and not (isinstance(spec, FixedRoute) and spec.model == name):
            raise RoutingError(
                f"route {name!r}: is the name of a model, so it must be a fixed route to that model "
                f"(it would hide the model)"
            )
        routes[name] = _compile(name, spec, models)
    # Aliases the config does not define, unless a model owns the name (a model name always reaches it).
    for alias, role in (("teacher", "teacher"), ("student", "student")):
        target = _first(models, role)
        if alias not in routes and alias not in models and target is not None:
            routes[alias] = _compile(alias, FixedRoute(policy="fixed", model=target), models, implicit=True)
    # "default" follows the student route (as configured, or implicit) when a student exists, else the teacher's.
    aliased = routes.get("student") if _first(models, "student") else routes.get("teacher")
    if "default" not in routes and "default" not in models and aliased is not None:
        routes["default"] = replace(aliased, name="default", implicit=True, alias_of=aliased.name)
    return RoutingState(models=models, config={"routes": copy.deepcopy(dict(raw_routes))}, routes=routes)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a routing file: JSON, or YAML for .yaml/.yml. ``RoutingError`` names the file."""
    return load_json_or_yaml(path, RoutingError, "routing", "routes")
