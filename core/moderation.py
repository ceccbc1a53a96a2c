"""Moderation metrics: ranking (ROC-AUC, average precision), operating-point (recall at a
precision, precision at a recall, F1 at thresholds) and calibration (ECE, Brier) scores.

Numpy only, like ``kdserve.core.metrics``: a checkpoint, a bundle and a server are scored by
the same code. A moderation model is judged per category on how well it ranks the harmful
rows above the rest (AUC, AP), how many it catches at a precision the policy team can live
with (recall at P=0.90), and whether a score of 0.8 means 80% (ECE, Brier) - accuracy on an
imbalanced set says none of this.

Conventions, each chosen to match a published reference so numbers compare across tools:

* ROC-AUC is the Mann-Whitney statistic: the chance that a random positive outranks a random
  negative, a tie counting one half (average ranks). NaN when a category has no positive or
  no negative row: there is nothing to rank.
* Average precision is scikit-learn's step sum ``sum_n (R_n - R_{n-1}) P_n`` over the
  distinct score thresholds, highest first; no interpolation.
* A row is predicted positive when ``score >= threshold``.
* Soft targets (annotator vote fractions) count as positive for the ranking and F1 metrics when
  ``>= 0.5`` (the majority of annotators); ECE and Brier use the soft value itself.
* ECE uses 15 equal-width bins (lower, upper], a score of exactly 0 in the first bin (Guo et al.
  2017); multi-label: over every (row, category) score against its target, single-label: the
  top-label confidence against whether the top label is right.
* Brier: multi-label, the mean over (row, category) of ``(p - y)^2``; single-label, the mean over
  rows of ``sum_c (p_c - onehot_c)^2`` (Brier 1950's multi-class form, range [0, 2]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kdserve.core.defaults import PROBLEM_TYPES

ECE_BINS = 15
#: draws of ``ece_floor``: on 662 rows its median moves by under 1e-3 between seeds at 500 draws
ECE_FLOOR_DRAWS = 500
#: The target vote share at which a soft target counts as a positive for ranking and F1.
POSITIVE_AT = 0.5


def _binary(
    y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"targets and scores must be 1-d of equal length, got {y.shape} and {s.shape}")
    if y.size == 0:
        raise ValueError("cannot score an empty split")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return (y >= POSITIVE_AT).astype(np.int64), s


def roc_auc(y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney U statistic over average ranks (ties count one half)."""
    y, s = _binary(y_true, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average rank (1-based) of each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def precision_recall_curve(
    y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first;
    predictions are ``score >= threshold``. Recall is 0 everywhere when there is no positive."""
    y, s = _binary(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: a threshold admits the whole run
    last = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [s.size - 1]))
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    positives = float(y.sum())
    precision = tp / predicted
    recall = tp / positives if positives > 0 else np.zeros_like(tp)
    return precision, recall, s_sorted[last]


def average_precision(y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """scikit-learn's average precision: ``sum_n (R_n - R_{n-1}) P_n``; NaN without positives."""
    y, _ = _binary(y_true, scores)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold and what it gave on the rows it was measured on. ``met`` is False when no
    threshold reaches the target: then the threshold is the best available (highest precision
    for a precision target, highest recall for a recall target) and the caller must say so."""

    threshold: float
    precision: float
    recall: float
    f1: float
    met: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)


def operating_point(
    y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, target: str, value: float | None = None
) -> OperatingPoint:
    """The threshold for ``target``: "precision" (the highest recall whose precision >= value),
    "recall" (the highest precision whose recall >= value) or "f1" (the highest F1). Ties go to
    the higher threshold (fewer flags for the same quality)."""
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    f1 = _f1(precision, recall)
    met = True
    if target == "f1":
        index = int(np.argmax(f1))  # argmax takes the first: the highest threshold among ties
    elif target in ("precision", "recall"):
        if value is None or not 0 < value <= 1:
            raise ValueError(f"a {target} target needs a value in (0, 1], got {value!r}")
        reached, other = (precision, recall) if target == "precision" else (recall, precision)
        ok = np.flatnonzero(reached >= value - 1e-12)
        if ok.size:
            index = int(ok[np.argmax(other[ok])])
        else:
            met = False
            index = int(np.argmax(reached))
    else:
        raise ValueError(f"unknown operating-point target {target!r}: expected precision, recall or f1")
    return OperatingPoint(
        float(thresholds[index]), float(precision[index]), float(recall[index]), float(f1[index]), met
    )


def recall_at_precision(
    y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, precision: float = 0.90
) -> float:
    """The highest recall of any threshold whose precision is >= ``precision``; 0 when none is."""
    point = operating_point(y_true, scores, "precision", precision)
    return point.recall if point.met else 0.0


def precision_at_recall(
    y_true: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, recall: float = 0.90
) -> float:
    """The highest precision of any threshold whose recall is >= ``recall``; 0 when none is."""
    point = operating_point(y_true, scores, "recall", recall)
    return point.precision if point.met else 0.0


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray, outcome: Sequence[float] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: ``sum_b |B_b|/n * |mean(outcome in b) - mean(confidence in b)|`` over equal-width bins
    (lower, upper]; ``outcome`` is 0/1 correctness or a soft target."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    out = np.asarray(outcome, dtype=np.float64).ravel()
    if conf.shape != out.shape or conf.size == 0:
        raise ValueError(f"confidence and outcome must be non-empty and equal in size, got {conf.size}, {out.size}")
    if (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidences must lie in [0, 1]")
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    out_sum = np.bincount(index, weights=out, minlength=bins)
    used = count > 0
    gap = np.abs(out_sum[used] / count[used] - conf_sum[used] / count[used])
    return float(np.sum(count[used] / conf.size * gap))


def brier_score(probabilities: np.ndarray, targets: np.ndarray, problem_type: str) -> float:
    """Multi-label: mean of ``(p - y)^2`` over every (row, category); single-label: ``targets``
    are class ids and the score is the mean over rows of the squared distance to the one-hot."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if problem_type == "multi_label":
        y = np.asarray(targets, dtype=np.float64)
        if y.shape != probs.shape:
            raise ValueError(f"targets {y.shape} and probabilities {probs.shape} differ in shape")
        return float(np.mean((probs - y) ** 2))
    ids = np.asarray(targets, dtype=np.int64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(ids.size), ids] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_confidence(probabilities: np.ndarray, problem_type: str) -> np.ndarray:
    """What ECE bins: every category's score (multi-label), or the top class's (single-label)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    return probs.ravel() if problem_type == "multi_label" else probs.max(axis=1)


def ece_floor(confidence: Sequence[float] | np.ndarray, draws: int = ECE_FLOOR_DRAWS, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these confidences would show on this many rows:
    the median, over ``draws``, of the ECE against outcomes drawn as Bernoulli(confidence).

    ECE is biased upwards on few rows (with the OLID teacher's scores on 662 rows the median is
    0.033), so an ECE target has to be read against this floor, not against zero."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(conf, rng.random(conf.size) < conf) for _ in range(draws)]
    return float(np.median(values))


def calibration_scores(probabilities: np.ndarray, targets: np.ndarray, problem_type: str) -> dict[str, float]:
    """{"ece", "brier"} with the conventions in the module docstring."""
    probs = np.asarray(probabilities, dtype=np.float64)
    confidence = calibration_confidence(probs, problem_type)
    if problem_type == "multi_label":
        ece = expected_calibration_error(confidence, np.asarray(targets, dtype=np.float64))
    else:
        correct = (probs.argmax(axis=1) == np.asarray(targets, dtype=np.int64)).astype(np.float64)
        ece = expected_calibration_error(confidence, correct)
    return {"ece": ece, "brier": brier_score(probs, targets, problem_type)}


def as_indicator(targets: np.ndarray, problem_type: str, n_labels: int) -> np.ndarray:
    """[N, C] targets: the soft/0-1 matrix as given (multi-label) or one-hot of class ids."""
    if problem_type == "multi_label":
        y = np.asarray(targets, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != n_labels:
            raise ValueError(f"multi-label targets must be [N, {n_labels}], got {y.shape}")
        return y
    ids = np.asarray(targets, dtype=np.int64)
    onehot = np.zeros((ids.size, n_labels), dtype=np.float64)
    onehot[np.arange(ids.size), ids] = 1.0
    return onehot


@dataclass(frozen=True)
class CategoryScores:
    roc_auc: float
    average_precision: float
    recall_at_precision: float
    precision_at_recall: float
    threshold: float
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ModerationMetrics:
    """Per-category ranking and threshold scores plus calibration, for one model on one split.

    ``thresholds`` are what F1 was measured at: the given per-category thresholds (multi-label;
    0.5 when none were given), and, for single-label, the argmax decision (threshold recorded as
    NaN: micro-F1 equals accuracy there)."""

    problem_type: str
    labels: tuple[str, ...]
    examples: int
    per_category: dict[str, CategoryScores]
    micro_f1: float
    macro_f1: float
    ece: float
    brier: float
    target_precision: float
    target_recall: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def macro(self, name: str) -> float:
        """Mean of a per-category field over the categories where it is defined."""
        values = [getattr(c, name) for c in self.per_category.values()]
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")


def moderation_metrics(
    probabilities: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    problem_type: str = "single_label",
    thresholds: Sequence[float] | None = None,
    target_precision: float = 0.90,
    target_recall: float = 0.90,
) -> ModerationMetrics:
    """Score [N, C] ``probabilities`` (softmax rows or per-category sigmoids) against ``targets``
    (class ids [N] for single-label, a 0/1 or soft [N, C] matrix for multi-label)."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    probs = np.asarray(probabilities, dtype=np.float64)
    n_labels = len(labels)
    if probs.ndim != 2 or probs.shape[1] != n_labels or probs.shape[0] == 0:
        raise ValueError(f"probabilities must be [N >= 1, {n_labels}], got {probs.shape}")
    indicator = as_indicator(targets, problem_type, n_labels)
    if indicator.shape[0] != probs.shape[0]:
        raise ValueError(f"{indicator.shape[0]} targets for {probs.shape[0]} rows")
    hard = indicator >= POSITIVE_AT
    if problem_type == "multi_label":
        cut = np.full(n_labels, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        if cut.shape != (n_labels,):
            raise ValueError(f"need {n_labels} thresholds, got {cut.shape}")
        predicted = probs >= cut
    else:
        cut = np.full(n_labels, np.nan)
        predicted = np.zeros_like(hard)
        predicted[np.arange(probs.shape[0]), probs.argmax(axis=1)] = True
    tp = (predicted & hard).sum(axis=0).astype(np.float64)
    n_pred = predicted.sum(axis=0).astype(np.float64)
    n_true = hard.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = _f1(precision, recall)
    per_category = {}
    for c, name in enumerate(labels):
        column = indicator[:, c]
        per_category[name] = CategoryScores(
            roc_auc=roc_auc(column, probs[:, c]),
            average_precision=average_precision(column, probs[:, c]),
            recall_at_precision=recall_at_precision(column, probs[:, c], target_precision),
            precision_at_recall=precision_at_recall(column, probs[:, c], target_recall) if n_true[c] else 0.0,
            threshold=float(cut[c]),
            precision=float(precision[c]),
            recall=float(recall[c]),
            f1=float(f1[c]),
            support=int(n_true[c]),
        )
    micro_p = tp.sum() / n_pred.sum() if n_pred.sum() else 0.0
    micro_r = tp.sum() / n_true.sum() if n_true.sum() else 0.0
    micro = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    calib = calibration_scores(probs, targets, problem_type)
    return ModerationMetrics(
        problem_type=problem_type,
        labels=tuple(labels),
        examples=int(probs.shape[0]),
        per_category=per_category,
        micro_f1=float(micro),
        macro_f1=float(f1.mean()),
        ece=calib["ece"],
        brier=calib["brier"],
        target_precision=target_precision,
        target_recall=target_recall,
    )


def format_moderation(metrics: ModerationMetrics, title: str = "") -> str:
    """A terminal table: one row per category, then the averages and calibration."""
    width = max(12, *(len(name) for name in metrics.labels))
    p, r = metrics.target_precision, metrics.target_recall
    lines = [title] if title else []
    lines.append(
        f"{metrics.problem_type}: micro-F1 {metrics.micro_f1 * 100:.2f}%  macro-F1 {metrics.macro_f1 * 100:.2f}%  "
        f"ECE {metrics.ece:.4f}  Brier {metrics.brier:.4f}  examples {metrics.examples}"
    )
    head = f"{'category':<{width}} {'ROC-AUC':>8} {'AP':>8} {f'R@P{p:g}':>8} {f'P@R{r:g}':>8} {'thresh':>7}"
    lines.append(head + f" {'prec':>7} {'recall':>7} {'f1':>7} {'support':>8}")
    for name, c in metrics.per_category.items():
        lines.append(
            f"{name:<{width}} {c.roc_auc:>8.4f} {c.average_precision:>8.4f} {c.recall_at_precision:>8.4f} "
            f"{c.precision_at_recall:>8.4f} {c.threshold:>7.3f} {c.precision * 100:>6.2f}% {c.recall * 100:>6.2f}% "
            f"{c.f1 * 100:>6.2f}% {c.support:>8d}"
        )
    lines.append(
        f"{'macro':<{width}} {metrics.macro('roc_auc'):>8.4f} {metrics.macro('average_precision'):>8.4f} "
        f"{metrics.macro('recall_at_precision'):>8.4f} {metrics.macro('precision_at_recall'):>8.4f}"
    )
    return "\n".join(lines)
