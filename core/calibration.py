"""Temperature scaling and operating points: what turns a model's logits into scores a policy
threshold can rely on, and the thresholds themselves.

Numpy only (core is torch-free): the export stage fits these on a bundle's own ONNX Runtime
logits (the int8 bundle on the int8 model's scores), and the runtime applies them.

The split (``calibration_split``): the validation rows are shuffled with a seed and cut in two
halves. The temperature is fitted on the first ("fit") half only; ECE and Brier before and after
are reported on the second ("report") half, which the fit never saw; the thresholds are chosen on
the calibrated scores of the fit half too, and their precision/recall are reported on both, so a
threshold's quoted precision is never only the number it was tuned to hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdserve.core.bundle import calibrated_scores
from kdserve.core.errors import ConfigError, DataError
from kdserve.core.moderation import (
    PROBLEM_TYPES,
    OperatingPoint,
    as_indicator,
    calibration_confidence,
    calibration_scores,
    ece_floor,
    operating_point,
)

#: Temperatures are searched in [1/20, 20]: wider than any sane fit, and bounded so a category
#: whose validation rows are all one class cannot drive T to 0 or infinity.
T_MIN, T_MAX = 0.05, 20.0
#: Labels that mean "nothing to flag" in the datasets kdserve knows; a policy never flags them.
DEFAULT_BENIGN = ("neither", "NOT", "neutral")
POLICY_TARGETS = ("precision", "recall", "f1")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # the two branches keep exp() from overflowing for large |logit|
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def calibrated_probabilities(logits: np.ndarray, problem_type: str, temperatures: Sequence[float] | None) -> np.ndarray:
    """softmax(logits / T) for single-label (one T), sigmoid(logits / T_c) per category for
    multi-label; ``temperatures`` None or empty means T = 1 (uncalibrated). The bundle reader's
    own function, so export fits exactly what the runtime applies."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    return calibrated_scores(logits, problem_type, list(temperatures or []))


def golden_section(f: Callable[[float], float], low: float, high: float, tol: float = 1e-6) -> float:
    """Minimiser of a unimodal ``f`` on [low, high]. The NLL/BCE of logits scaled by 1/T is convex
    in 1/T, hence unimodal in log T, so the search is exact up to ``tol``."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _nll(z: np.ndarray, ids: np.ndarray) -> float:
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(ids.size), ids]))


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^z) - y z, written stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, problem_type: str) -> list[float]:
    """One temperature (single-label, minimising NLL) or one per category (multi-label,
    minimising BCE against the 0/1 or soft targets), by golden-section search on log T."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be [N >= 1, C], got {z.shape}")
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    if problem_type == "single_label":
        ids = np.asarray(targets, dtype=np.int64)
        return [math.exp(golden_section(lambda u: _nll(z / math.exp(u), ids), lo, hi))]
    if problem_type != "multi_label":
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    y = np.asarray(targets, dtype=np.float64)
    return [
        math.exp(golden_section(lambda u, c=c: _bce(z[:, c] / math.exp(u), y[:, c]), lo, hi)) for c in range(z.shape[1])
    ]


def calibration_split(n: int, seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, report rows): a seeded shuffle of range(n) cut in two halves (fit gets the
    extra row when n is odd). Both are sorted so results do not depend on the shuffle order."""
    if n < 2:
        raise DataError(f"calibration needs at least 2 validation rows, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    half = (n + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


@dataclass(frozen=True)
class Policy:
    """A threshold rule: ``target`` "precision"/"recall" with a ``value``, or "f1"."""

    target: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``precision=0.9``, ``recall=0.95`` or ``f1``."""
        name, _, raw = str(text).strip().partition("=")
        name = name.strip()
        if name == "f1" and not raw:
            return cls("f1")
        if name in ("precision", "recall") and raw:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if 0 < value <= 1:
                return cls(name, value)
        raise ConfigError(f"policy must be precision=P, recall=R (0 < value <= 1) or f1, got {text!r}")

    def __str__(self) -> str:
        return self.target if self.value is None else f"{self.target}={self.value:g}"


def resolve_benign(labels: Sequence[str], benign: Sequence[str] | None) -> list[str]:
    """The benign labels: those asked for (each must be a label), else the defaults present."""
    if benign is None:
        return [label for label in labels if label in DEFAULT_BENIGN]
    unknown = [b for b in benign if b not in labels]
    if unknown:
        raise DataError(
            f"benign label(s) {', '.join(map(repr, unknown))} are not labels of this model ({', '.join(labels)})"
        )
    return list(dict.fromkeys(benign))


def choose_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    problem_type: str,
    policy: Policy,
    benign: Sequence[str],
) -> dict[str, OperatingPoint]:
    """Per non-benign category, the operating point for ``policy`` on these rows' scores."""
    indicator = as_indicator(targets, problem_type, len(labels))
    probs = np.asarray(probabilities, dtype=np.float64)
    return {
        name: operating_point(indicator[:, c], probs[:, c], policy.target, policy.value)
        for c, name in enumerate(labels)
        if name not in benign
    }


def measure_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    problem_type: str,
    thresholds: dict[str, float],
) -> dict[str, dict[str, float]]:
    """Precision and recall each category's threshold gives on other rows (``score >= t`` flags)."""
    indicator = as_indicator(targets, problem_type, len(labels)) >= 0.5
    probs = np.asarray(probabilities, dtype=np.float64)
    out = {}
    for c, name in enumerate(labels):
        if name not in thresholds:
            continue
        flagged = probs[:, c] >= thresholds[name]
        tp = float((flagged & indicator[:, c]).sum())
        out[name] = {
            "precision": tp / flagged.sum() if flagged.sum() else 0.0,
            "recall": tp / indicator[:, c].sum() if indicator[:, c].sum() else 0.0,
        }
    return out


def calibrate_and_choose(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    problem_type: str,
    policy: Policy | None,
    benign: Sequence[str] | None = None,
    method: str = "temperature",
    seed: int = 13,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest's ``calibration`` and ``policy`` blocks for one model's validation logits.

    Split as the module docstring says: fit T on the fit half; ECE/Brier before and after on the
    report half; thresholds chosen on the fit half's calibrated scores, measured on both halves.
    ``method`` "none" keeps T = 1 (scores are still reported); ``policy`` None writes no policy."""
    if method not in ("temperature", "none"):
        raise ConfigError(f"calibration must be temperature or none, got {method!r}")
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets)
    fit_rows, report_rows = calibration_split(z.shape[0], seed)
    if method == "temperature":
        temperatures = fit_temperature(z[fit_rows], y[fit_rows], problem_type)
    else:
        temperatures = [1.0] * (z.shape[1] if problem_type == "multi_label" else 1)
    before = calibration_scores(
        calibrated_probabilities(z[report_rows], problem_type, None), y[report_rows], problem_type
    )
    served = calibrated_probabilities(z[report_rows], problem_type, temperatures)
    after = calibration_scores(served, y[report_rows], problem_type)
    # what a perfectly calibrated model with the served scores would show on these rows; with soft
    # targets (vote shares) there is no 0/1 outcome to draw, so no floor
    hard = problem_type == "single_label" or bool(np.isin(y[report_rows], (0, 1)).all())
    floor = ece_floor(calibration_confidence(served, problem_type)) if hard else None
    calibration = {
        "method": method,
        "temperatures": [round(t, 6) for t in temperatures],
        "fit_rows": int(fit_rows.size),
        "report_rows": int(report_rows.size),
        "split": f"validation rows shuffled with seed {seed}, halved: T fitted on one half, ECE/Brier on the other",
        "seed": seed,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "brier_before": before["brier"],
        "brier_after": after["brier"],
        "ece_floor": floor,
    }
    if policy is None:
        return calibration, {}
    benign_labels = resolve_benign(labels, benign)
    probs = calibrated_probabilities(z, problem_type, temperatures)
    points = choose_thresholds(probs[fit_rows], y[fit_rows], labels, problem_type, policy, benign_labels)
    thresholds = {name: p.threshold for name, p in points.items()}
    held_out = measure_thresholds(probs[report_rows], y[report_rows], labels, problem_type, thresholds)
    block = {
        "target": str(policy),
        "benign_labels": benign_labels,
        "thresholds": thresholds,
        "chosen_on": "the calibration fit half of the validation rows (calibrated scores)",
        "validation": {
            name: {
                "precision": p.precision,
                "recall": p.recall,
                "met": p.met,
                "held_out_precision": held_out[name]["precision"],
                "held_out_recall": held_out[name]["recall"],
            }
            for name, p in points.items()
        },
    }
    return calibration, block
