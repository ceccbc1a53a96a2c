"""Moderation policies as live configuration: which categories a score flags, per model.

A policy gives, per model, a threshold per category and the benign labels (which never flag). The
``default`` policy of a model is its manifest's ``policy`` block (written by ``kdserve export
--policy``); a policy file (``--policy-file``, JSON or YAML) may override it and add named policies
such as ``strict`` and ``lenient``::

    policies:
      default:                       # overrides the manifests' default policy
        hate-bilstm: {thresholds: {hate_speech: 0.45}}
      strict:
        hate-bilstm: {thresholds: {hate_speech: 0.25, offensive: 0.4}, benign_labels: [neither]}

A model's entry is merged over its manifest's default: ``thresholds`` win label by label (the
manifest's other thresholds stay), ``benign_labels`` replaces the manifest's list when given. A
named policy that does not list a model leaves that model on its default policy, and every answer
says which policy decided it (``policy``), so a request for ``strict`` is never silently decided
by another policy without saying so.

The whole file is validated against the loaded bundles (unknown policy field, model or category, a
threshold outside [0, 1], a benign label with a threshold) before it replaces the live one in one
assignment: a request sees either the old or the new policies, never a mix (``PUT
/admin/policies`` swaps under load with no failed request).

A decision: ``categories`` = every non-benign label with a threshold -> score >= threshold;
``flagged`` = any of them true. This module imports no FastAPI.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import prometheus_client as prom

from kdserve.core.bundle import Manifest
from kdserve.core.config_files import load_json_or_yaml
from kdserve.core.errors import ConfigError
from kdserve.serve.errors import ServeError

DEFAULT = "default"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ENTRY_FIELDS = ("thresholds", "benign_labels")

# The policy a request named (None: default), set by the HTTP layer before it calls the router, so
# the boundary cascade escalates around the thresholds of the policy that will decide the answer
# without threading a new argument through every router and service signature.


class PolicyError(ConfigError):
    """A policy file or config is invalid: a one-line error and exit 2 at start-up, 422 from the admin route."""


class InvalidPolicy(ServeError):
    status, code = 422, "invalid_policy"


class UnknownPolicy(ServeError):
    status, code = 422, "unknown_policy"


class NoPolicy(ServeError):
    """A route that must decide (``/v1/moderations``) reached a model without any category threshold."""

    status, code = 422, "no_policy"


@dataclass(frozen=True)
class ModelPolicy:
    """One model under one policy: ``categories`` are (column, label, threshold) of every
    non-benign label with a threshold; ``vector`` the thresholds per column (NaN: none)."""

    policy: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    benign: tuple[str, ...]
    categories: tuple[tuple[int, str, float], ...]
    vector: np.ndarray

    def decide(self, probabilities: np.ndarray) -> tuple[dict[str, bool], bool]:
        categories = {label: bool(probabilities[i] >= t) for i, label, t in self.categories}
        return categories, any(categories.values())

    def describe(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds), "benign_labels": list(self.benign)}


@dataclass(frozen=True)
class Decision:
    policy: str
    categories: dict[str, bool]
    flagged: bool
    category_scores: dict[str, float]


@dataclass(frozen=True)
class PolicyState:
    config: dict[str, Any]
    # policy name -> model -> its compiled policy (every model under "default"; named ones where listed)
    policies: dict[str, dict[str, ModelPolicy]] = field(default_factory=dict)
    problem_types: dict[str, str] = field(default_factory=dict)


def _fail(where: str, message: str) -> PolicyError:
    return PolicyError(f"policy config, {where}: {message}")


def _compile(policy: str, model: str, manifest: Manifest, entry: Mapping[str, Any] | None) -> ModelPolicy:
    labels = tuple(manifest.labels)
    base = manifest.policy if isinstance(manifest.policy, dict) else {}
    benign = list(base.get("benign_labels", []))
    thresholds = {k: float(v) for k, v in base.get("thresholds", {}).items()}
    where = f"policy {policy!r}, model {model!r}"
    if entry is not None:
        if not isinstance(entry, Mapping):
            raise _fail(where, f"expected an object with {' and/or '.join(ENTRY_FIELDS)}, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise _fail(where, f"unknown field(s) {', '.join(map(repr, unknown))} (expected {', '.join(ENTRY_FIELDS)})")
        given_benign = entry.get("benign_labels")
        if given_benign is not None:
            if not isinstance(given_benign, list) or not all(isinstance(b, str) for b in given_benign):
                raise _fail(where, f"benign_labels must be a list of labels, got {given_benign!r}")
            for label in given_benign:
                if label not in labels:
                    raise _fail(where, f"benign label {label!r} is not a category of the model ({', '.join(labels)})")
            benign = list(given_benign)
            thresholds = {k: v for k, v in thresholds.items() if k not in benign}
        given = entry.get("thresholds", {})
        if not isinstance(given, Mapping):
            raise _fail(where, f"thresholds must map categories to numbers, got {type(given).__name__}")
        for label, value in given.items():
            if label not in labels:
                raise _fail(where, f"unknown category {label!r} (categories: {', '.join(labels)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise _fail(where, f"threshold of {label!r} must be a number within [0, 1], got {value!r}")
            if label in benign:
                raise _fail(where, f"{label!r} is a benign label: it never flags, so it takes no threshold")
            thresholds[label] = float(value)
    vector = np.full(len(labels), math.nan)
    categories = []
    for i, label in enumerate(labels):
        if label in thresholds and label not in benign:
            vector[i] = thresholds[label]
            categories.append((i, label, thresholds[label]))
    kept = {label: thresholds[label] for label in labels if label in thresholds and label not in benign}
    return ModelPolicy(policy, labels, kept, tuple(benign), tuple(categories), vector)


def build_policies(manifests: Mapping[str, Manifest], config: Mapping[str, Any] | None) -> PolicyState:
    """Validate ``config`` against the loaded bundles completely; raises ``PolicyError`` naming the place."""
    config = dict(config or {})
    unknown = sorted(set(config) - {"policies"})
    if unknown:
        raise PolicyError(f"policy config: unknown field(s) {', '.join(map(repr, unknown))} (expected 'policies')")
    raw = config.get("policies", {})
    if not isinstance(raw, Mapping):
        raise PolicyError(f"policy config: 'policies' must map policy names to models, got {type(raw).__name__}")
    compiled: dict[str, dict[str, ModelPolicy]] = {}
    for name, models in raw.items():
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise PolicyError(f"policy config: policy name {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if not isinstance(models, Mapping):
            raise _fail(f"policy {name!r}", f"expected an object of model -> entry, got {type(models).__name__}")
        for model in models:
            if model not in manifests:
                raise _fail(f"policy {name!r}", f"unknown model {model!r} (loaded: {', '.join(sorted(manifests))})")
        compiled[name] = {model: _compile(name, model, manifests[model], entry) for model, entry in models.items()}
    # every model has a default policy: the file's entry over the manifest's, or the manifest's alone
    defaults = compiled.get(DEFAULT, {})
    compiled[DEFAULT] = {
        model: defaults.get(model) or _compile(DEFAULT, model, manifest, None) for model, manifest in manifests.items()
    }
    return PolicyState(
        config={"policies": copy.deepcopy(dict(raw))},
        policies=compiled,
        problem_types={model: m.problem_type for model, m in manifests.items()},
    )


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """Read a policy file: JSON, or YAML for .yaml/.yml. ``PolicyError`` names the file."""
    return load_json_or_yaml(path, PolicyError, "policy", "policies")


class PolicyStore:
    """The live policies. ``replace`` and ``set_models`` validate in full, then swap one reference."""

    def __init__(
        self,
        manifests: Mapping[str, Manifest],
        config: Mapping[str, Any] | None = None,
        registry: prom.CollectorRegistry | None = None,
        source: str | None = None,
    ) -> None:
        self._manifests = dict(manifests)
        try:
            self._state = build_policies(self._manifests, config)
        except PolicyError as exc:
            if source is None:
                raise
            raise PolicyError(f"{source}: {exc}") from None
        registry = registry if registry is not None else prom.CollectorRegistry()
        self._flags = prom.Counter(
            "kdserve_policy_flags",
            "Texts flagged, by the model that answered, the category and the policy that decided",
            ["model", "category", "policy"],
            registry=registry,
        )
        self._decisions = prom.Counter(
            "kdserve_policy_decisions",
            "Texts decided under a policy (flagged or not), by model and policy: the flag rate's denominator",
            ["model", "policy"],
            registry=registry,
        )

    @classmethod
    def from_file(
        cls, path: str | Path | None, manifests: Mapping[str, Manifest], registry: prom.CollectorRegistry | None
    ) -> PolicyStore:
        config = load_policy_file(path) if path is not None else None
        return cls(manifests, config, registry, source=str(path) if path is not None else None)

    # -- configuration

    def replace(self, config: Mapping[str, Any]) -> None:
        """Swap in a new policy config; ``PolicyError`` (nothing changed) if any part is invalid."""
        self._state = build_policies(self._manifests, config)

    def prepare(self, manifests: Mapping[str, Manifest]) -> tuple[dict[str, Manifest], PolicyState]:
        """The live config validated against new bundles (a hot reload), not yet in use:
        ``PolicyError`` leaves everything as it is; ``commit`` swaps it in."""
        return dict(manifests), build_policies(manifests, self._state.config)

    def commit(self, prepared: tuple[dict[str, Manifest], PolicyState]) -> None:
        self._manifests, self._state = prepared

    @property
    def names(self) -> list[str]:
        return sorted(self._state.policies)

    def check(self, name: str | None) -> None:
        """Raise ``UnknownPolicy`` (422) for a name no policy has; None is the default."""
        if name is not None and name not in self._state.policies:
            raise UnknownPolicy(f"unknown policy {name!r}; policies: {', '.join(self.names)}")

    def resolve(self, model: str, name: str | None, state: PolicyState | None = None) -> ModelPolicy | None:
        """``model``'s policy under ``name`` (its default where ``name`` does not list it); None
        when the model has no category threshold at all (no decisions then)."""
        state = state or self._state
        named = state.policies.get(name or DEFAULT, {})
        chosen = named.get(model) or state.policies[DEFAULT].get(model)
        return chosen if chosen is not None and chosen.categories else None

    def require(self, models: list[str], name: str | None) -> None:
        """Raise ``NoPolicy`` unless every model in ``models`` gets decisions under ``name``."""
        self.check(name)
        missing = [model for model in models if self.resolve(model, name) is None]
        if missing:
            raise NoPolicy(
                f"model(s) {', '.join(missing)} have no category thresholds under policy {name or DEFAULT!r}: "
                f"export with --policy, or give thresholds in the policy file"
            )

    def multi_label(self, model: str) -> bool:
        return self._state.problem_types.get(model) == "multi_label"

    def snapshot(self) -> PolicyState:
        """The live state, for a request to decide all its texts under one version."""
        return self._state

    def decide(self, model: str, probabilities: np.ndarray, name: str | None, state: PolicyState) -> Decision | None:
        """The decision for one text's scores by ``model`` (None: the model has no policy); counted."""
        policy = self.resolve(model, name, state)
        if policy is None:
            return None
        categories, flagged = policy.decide(probabilities)
        self._decisions.labels(model, policy.policy).inc()
        for label, hit in categories.items():
            if hit:
                self._flags.labels(model, label, policy.policy).inc()
        scores = {label: float(probabilities[i]) for i, label, _ in policy.categories}
        return Decision(policy.policy, categories, flagged, scores)

    def band_thresholds(self, model: str, name: str | None) -> np.ndarray | None:
        """Per-column thresholds (NaN: none) of ``model`` under the policy ``name`` (None: its
        default), for the boundary cascade; None when it has none."""
        policy = self.resolve(model, name)
        return None if policy is None else policy.vector

    def describe(self) -> dict[str, Any]:
        state = self._state
        return {
            "policies": {
                name: {model: p.describe() for model, p in sorted(models.items()) if p.categories}
                for name, models in sorted(state.policies.items())
            },
            "config": copy.deepcopy(state.config),
        }
