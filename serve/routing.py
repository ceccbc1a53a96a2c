"""Routing policies: which model answers a ``/classify`` request.

A routing config names routes; each route has one policy:

- ``fixed``: one model answers.
- ``ab``: a weighted split between variants, sticky per ``routing_key`` (a blake2b hash of the
  route and the key, so every process and restart sends a key to the same variant); without a
  key, a seeded random draw per request.
- ``shadow``: the primary answers; a ``sample_rate`` fraction of requests also goes to the shadow
  model in the background (see ``kdserve.serve.shadow``).
- ``cascade``: the student answers when its top score reaches the threshold of its top label;
  the other texts go to the teacher in one call and are marked escalated. With ``"escalate":
  "boundary"`` a text also escalates when any category's score lies within ``band`` of that
  category's policy threshold (``category_thresholds``, wired to kdserve.serve.policies).

``requested`` resolves to a configured route, else a model name (a fixed route to it), else
``UnknownModel``. Unless the config defines them, routes ``teacher`` and ``student`` answer with
the first model of that role by name, and ``default`` (used when nothing is requested) stands in
for the ``student`` route when a student exists, else the ``teacher`` route. The config is
validated as a whole before it replaces the old one, so a bad ``update`` or ``set_models``
leaves the router as it was.
This module imports no torch or FastAPI.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import prometheus_client as prom

from kdserve.core.errors import KdserveError
from kdserve.serve.routing_config import (
    ABRoute,
    CascadeRoute,
    CompiledRoute,
    FixedRoute,
    ModelInfo,
    RouteSpec,
    RoutingError,
    RoutingState,
    ShadowRoute,
    build_state,
    load_config,
)
from kdserve.serve.scores import Reading, Scores
from kdserve.serve.shadow import ShadowJob, ShadowLog, ShadowRecorder

__all__ = [
    "Infer",
    "ModelInfo",
    "RoutedAnswer",
    "Router",
    "RoutingError",
    "Scores",
    "TextAnswer",
    "UnknownModel",
    "load_config",
]

# the band of a boundary cascade that names none: calibrated score within 0.1 of a category's threshold
BOUNDARY_BAND = 0.1


class UnknownModel(KdserveError):
    """The requested name is neither a route nor a model (HTTP 404); ``valid`` lists the names that are."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(f"unknown model or route {name!r}; valid names: {', '.join(valid) or '(none loaded)'}")


class Infer(Protocol):
    async def __call__(self, model: str, texts: list[str], reading: Reading) -> Scores:
        """``model``'s scores for ``texts``."""
        ...


@dataclass
class TextAnswer:
    """One text's answer, with its metadata: ``probabilities`` and ``logits`` float32 [C] in
    ``labels`` order, from the bundle version ``checksum`` of ``model``."""

    model: str
    probabilities: np.ndarray
    escalated: bool = False
    checksum: str = ""
    labels: list[str] = field(default_factory=list)
    logits: np.ndarray | None = None
    truncated: bool = False  # tokens of the text were not read (long_text truncate or head_tail)
    windows: int = 1  # rows the model ran for the text (more than one with long_text chunk)


@dataclass
class RoutedAnswer:
    """``answers`` are in input order; ``variant`` is the A/B model chosen, ``shadowed`` says a
    shadow call was started for this request."""

    route: str
    answers: list[TextAnswer]
    variant: str | None = None
    shadowed: bool = False


def _unit_hash(*parts: str) -> float:
    """A uniform float in [0, 1) from a stable hash: the same in every process (unlike ``hash()``)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _answers(scores: Scores, model: ModelInfo, n: int, escalated: bool = False) -> list[TextAnswer]:
    """One ``TextAnswer`` per row of ``scores``, after checking its shape against the model."""
    probs = np.asarray(scores.probabilities, dtype=np.float32)
    if probs.shape != (n, len(model.labels)):
        raise RuntimeError(f"infer({model.name!r}) returned shape {probs.shape}, expected {(n, len(model.labels))}")
    logits = scores.logits if scores.logits is not None else [None] * n
    truncated = scores.truncated if scores.truncated is not None else [False] * n
    windows = scores.windows if scores.windows is not None else [1] * n
    return [
        TextAnswer(scores.model, row, escalated, scores.checksum, scores.labels, raw, bool(cut), count)
        for row, raw, cut, count in zip(probs, logits, truncated, windows)
    ]


# a request that names nothing: truncate, the server's long_text mode, each model's default policy
DEFAULT_READING = Reading()

# ---------------------------------------------------------------- the router


class Router:
    """Resolves a requested name to a route and runs its policy through the caller's ``infer``.

    ``registry`` receives the routing metrics (a private registry when None). ``shadow_log`` is the
    disagreement JSONL file (none written when None); ``log_texts`` adds the raw text to it.
    ``seed`` seeds the per-request draws (A/B without a key, shadow sampling)."""

    def __init__(
        self,
        models: Mapping[str, ModelInfo],
        config: dict[str, Any] | None = None,
        *,
        registry: prom.CollectorRegistry | None = None,
        shadow_log: Path | None = None,
        log_texts: bool = False,
        shadow_max_inflight: int = 8,
        seed: int = 0,
    ) -> None:
        if shadow_max_inflight < 0:
            raise RoutingError(f"shadow_max_inflight must be >= 0, got {shadow_max_inflight}")
        self._state = build_state(models, config)
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self._ab_rng = random.Random(f"{seed}:ab")
        self._shadow_rng = random.Random(f"{seed}:shadow")
        log = ShadowLog(shadow_log, log_texts) if shadow_log is not None else None
        self.shadow = ShadowRecorder(self.registry, log, shadow_max_inflight)
        self.log_texts = log_texts
        # (model, policy name) -> its category thresholds [C] (NaN: none) under that policy, for
        # boundary cascades; the service wires in kdserve.serve.policies.PolicyStore.band_thresholds
        self.category_thresholds: Callable[[str, str | None], np.ndarray | None] | None = None
        self._ab_assignments = prom.Counter(
            "kdserve_ab_assignments", "Requests sent to each A/B variant", ["route", "variant"], registry=self.registry
        )
        self._cascade_texts = prom.Counter(
            "kdserve_cascade_texts", "Texts answered through a cascade route", ["route"], registry=self.registry
        )
        self._escalations = prom.Counter(
            "kdserve_cascade_escalations",
            "Cascade texts the student was unsure of, answered by the teacher",
            ["route"],
            registry=self.registry,
        )

    @classmethod
    def from_file(cls, path: str | Path, models: Mapping[str, ModelInfo], **kw: Any) -> Router:
        """Load a JSON routing file (YAML for .yaml/.yml, when PyYAML is installed)."""
        config = load_config(path)
        try:
            return cls(models, config, **kw)
        except RoutingError as exc:
            raise RoutingError(f"{path}: {exc}") from None

    # -- configuration

    def update(self, config: dict[str, Any]) -> None:
        """Replace the routing config; validated in full first, so on error nothing changes."""
        self._state = build_state(self._state.models, config)

    def set_models(self, models: Mapping[str, ModelInfo]) -> None:
        """Re-validate the current config against a new model set (after a hot reload). On
        ``RoutingError`` the router keeps its old models and routes: the caller decides."""
        self._state = build_state(models, self._state.config)

    def resolve(self, requested: str | None) -> tuple[str, RouteSpec]:
        """(route name, spec) for ``requested``; None means the ``default`` route."""
        compiled = self._resolve(self._state, requested)
        return compiled.name, compiled.spec

    def _resolve(self, state: RoutingState, requested: str | None) -> CompiledRoute:
        name = "default" if requested is None else requested
        if name in state.routes:
            return state.routes[name]
        if name in state.models:
            return CompiledRoute(name, FixedRoute(policy="fixed", model=name), implicit=True)
        raise UnknownModel(name, sorted(set(state.routes) | set(state.models)))

    def pick_variant(self, route: str, routing_key: str | None) -> str:
        """The A/B variant of ``route`` for this key: the same in every process; random without a key."""
        compiled = self._resolve(self._state, route)
        if not isinstance(compiled.spec, ABRoute):
            raise RoutingError(f"route {route!r} is not an ab route")
        return self._pick(compiled, routing_key)

    def _pick(self, compiled: CompiledRoute, routing_key: str | None) -> str:
        assert isinstance(compiled.spec, ABRoute)
        if routing_key is None:
            u = self._ab_rng.random()
        else:
            # The route name salts the hash so two experiments split the same users independently;
            # "default" hashes as the route it stands in for, so both names give a key one variant.
            u = _unit_hash(compiled.alias_of or compiled.name, routing_key)
        names = list(compiled.spec.variants)
        for name, bound in zip(names, compiled.cumulative):
            if u < bound:
                return name
        return names[-1]  # u within rounding of 1.0

    # -- serving

    async def classify(
        self,
        texts: list[str],
        requested: str | None,
        routing_key: str | None,
        infer: Infer,
        reading: Reading = DEFAULT_READING,
    ) -> RoutedAnswer:
        """Answer ``texts`` through the route ``requested`` names.

        Errors from ``infer`` for the answering model propagate unchanged, including the
        teacher's in a cascade (the request fails). Shadow errors are only counted and logged.
        Raises ``UnknownModel`` for a name that is neither route nor model."""
        state = self._state  # one snapshot: a concurrent update() does not change this request
        route = self._resolve(state, requested)
        spec = route.spec
        if isinstance(spec, FixedRoute):
            return RoutedAnswer(route.name, await self._run(state, infer, spec.model, texts, reading))
        if isinstance(spec, ABRoute):
            variant = self._pick(route, routing_key)
            self._ab_assignments.labels(route.name, variant).inc()
            answers = await self._run(state, infer, variant, texts, reading)
            return RoutedAnswer(route.name, answers, variant=variant)
        if isinstance(spec, ShadowRoute):
            return await self._shadowed(state, route, spec, texts, infer, reading)
        return await self._cascade(state, route, spec, texts, infer, reading)

    async def _run(
        self, state: RoutingState, infer: Infer, model: str, texts: list[str], reading: Reading
    ) -> list[TextAnswer]:
        if not texts:
            return []
        return _answers(await infer(model, texts, reading), state.models[model], len(texts))

    async def _shadowed(
        self,
        state: RoutingState,
        route: CompiledRoute,
        spec: ShadowRoute,
        texts: list[str],
        infer: Infer,
        reading: Reading,
    ) -> RoutedAnswer:
        answers = await self._run(state, infer, spec.primary, texts, reading)
        shadowed = False
        if answers and self._shadow_rng.random() < spec.sample_rate:
            job = ShadowJob(
                route=route.name,
                primary=spec.primary,
                shadow=spec.shadow,
                labels=tuple(state.models[spec.primary].labels),
                shadow_labels=tuple(state.models[spec.shadow].labels),
                shadow_order=route.shadow_order,
                texts=list(texts),
                primary_probs=np.stack([a.probabilities for a in answers]),
                reading=reading,
            )
            shadowed = self.shadow.submit(job, infer)
        return RoutedAnswer(route.name, answers, shadowed=shadowed)

    async def _cascade(
        self,
        state: RoutingState,
        route: CompiledRoute,
        spec: CascadeRoute,
        texts: list[str],
        infer: Infer,
        reading: Reading,
    ) -> RoutedAnswer:
        answers = await self._run(state, infer, spec.student, texts, reading)
        if not answers:
            return RoutedAnswer(route.name, answers)
        probs = np.stack([a.probabilities for a in answers])  # [N, C] student label order
        top = probs.argmax(axis=1)
        assert route.thresholds is not None
        # "clears the threshold" = top score >= the threshold of the top label
        unsure = probs[np.arange(len(texts)), top] < route.thresholds[top]  # NaN threshold: never
        if spec.escalate == "boundary" and self.category_thresholds is not None:
            cuts = self.category_thresholds(spec.student, reading.policy)
            if cuts is not None and cuts.shape == (probs.shape[1],):
                band = BOUNDARY_BAND if spec.band is None else spec.band
                with np.errstate(invalid="ignore"):
                    unsure |= (np.abs(probs - cuts) <= band).any(axis=1)  # NaN (no threshold): never
        escalate = np.flatnonzero(unsure)
        self._cascade_texts.labels(route.name).inc(len(texts))
        if len(escalate):
            self._escalations.labels(route.name).inc(len(escalate))
            subset = [texts[i] for i in escalate]
            scores = await infer(spec.teacher, subset, reading)
            for answer, i in zip(_answers(scores, state.models[spec.teacher], len(subset), escalated=True), escalate):
                answers[i] = answer
        return RoutedAnswer(route.name, answers)

    # -- introspection and shutdown

    def describe(self) -> dict[str, Any]:
        """The effective routes (config and implicit), models and shadow state, JSON-serializable."""
        state = self._state
        routes = {}
        for name, compiled in sorted(state.routes.items()):
            entry = compiled.spec.model_dump(exclude_none=True)
            entry["source"] = "implicit" if compiled.implicit else "config"
            if compiled.alias_of:
                entry["alias_of"] = compiled.alias_of
            routes[name] = entry
        return {
            "routes": routes,
            "models": {n: {"role": m.role, "labels": list(m.labels)} for n, m in sorted(state.models.items())},
            "config": copy.deepcopy(state.config),
            "shadow": {
                "inflight": self.shadow.inflight,
                "max_inflight": self.shadow.max_inflight,
                "log": str(self.shadow.log.path) if self.shadow.log else None,
                "log_texts": self.log_texts,
            },
        }

    async def aclose(self, timeout: float = 1.0) -> None:
        """Wait up to ``timeout`` s for shadow calls in flight, cancel the rest, close the log."""
        await self.shadow.aclose(timeout)
