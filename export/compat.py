"""Compatibility of a new bundle with the one in production: what will NEW get wrong that PROD gets right?

A moderation team replaces a model, it does not ship one. Aggregate accuracy can rise while the
new model drops cases the old one caught (a slur it used to flag, a spam pattern it knew), and
those regressions are what users and reviewers notice. So before a swap both bundles score the
same labelled rows and this module reports:

- agreement: the share of rows where both predict the same label;
- negative flips: rows PROD gets right and NEW gets wrong (the regressions), as a rate;
- positive flips: rows PROD gets wrong and NEW gets right;
- per-class F1 of both and its change in points;
- the worst negative flips (largest fall in the probability of the true label), as texts only
  when asked (``log_texts``), else as sha256 hashes, like the shadow log.

The gate refuses NEW when the negative-flip rate or any class's F1 drop exceeds its threshold and
names the figure. Torch-free: ONNX Runtime through ``BundleModel`` and numpy metrics, so the same
check runs in CI, at export time, or next to the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import BundleModel, softmax
from kdserve.core.metrics import Metrics, compute_metrics
from kdserve.export.checks import ExportError
from kdserve.export.config import DEFAULT_MAX_CLASS_F1_DROP, DEFAULT_MAX_NEGATIVE_FLIPS

#: Worst negative flips listed in the report.
DEFAULT_WORST = 20


class CompatError(ExportError):
    """Two bundles cannot be compared (different labels, no rows)."""


class CompatGateError(ExportError):
    """NEW regresses against the production bundle beyond a threshold. ``report``: the full report."""

    def __init__(self, message: str, report: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.report = dict(report)


@dataclass(frozen=True)
class GateThresholds:
    """Both in points: negative flips as a percent of the rows, a class's F1 drop in F1 points."""

    max_negative_flips: float = DEFAULT_MAX_NEGATIVE_FLIPS
    max_class_f1_drop: float = DEFAULT_MAX_CLASS_F1_DROP

    def __post_init__(self) -> None:
        from kdserve.core.errors import ConfigError

        if not 0 <= self.max_negative_flips <= 100:
            raise ConfigError(f"max_negative_flips must be in [0, 100] points, got {self.max_negative_flips}")
        if not 0 <= self.max_class_f1_drop <= 100:
            raise ConfigError(f"max_class_f1_drop must be in [0, 100] points, got {self.max_class_f1_drop}")


def check_same_labels(new_labels: Sequence[str], prod_labels: Sequence[str], new: str, prod: str) -> None:
    """Both bundles must answer with the same label set (order may differ: columns are matched by name)."""
    if sorted(new_labels) != sorted(prod_labels):
        raise CompatError(
            f"{new} has labels {list(new_labels)} but the baseline {prod} has {list(prod_labels)}: "
            "a compatibility report needs the same label set"
        )


def text_sha256(text: str) -> str:
    """The hash the shadow log writes for a text (serve/shadow.py), so reports and logs can be joined."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def class_f1_changes(
    baseline: Mapping[str, float], new: Mapping[str, float], support: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per class (or, for a multi-label model, per category) F1 of both and the change in points.

    Takes plain name -> F1 maps so a multi-label report can pass per-category F1 computed its own way."""
    return {
        name: {
            "baseline_f1": float(baseline[name]),
            "new_f1": float(new[name]),
            "f1_change_points": round((float(new[name]) - float(baseline[name])) * 100.0, 6),
            "support": int(support.get(name, 0)),
        }
        for name in baseline
    }


def _summary(metrics: Metrics) -> dict[str, Any]:
    return {"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1}


def compare_predictions(
    gold: Sequence[int] | np.ndarray,
    new_probs: np.ndarray,
    prod_probs: np.ndarray,
    labels: Sequence[str],
    texts: Sequence[str],
    log_texts: bool = False,
    worst: int = DEFAULT_WORST,
) -> dict[str, Any]:
    """The report for single-label predictions. ``gold`` holds label ids in ``labels`` order;
    ``new_probs`` and ``prod_probs`` are [N, C] probabilities in the same column order."""
    y = np.asarray(gold, dtype=np.int64)
    n = int(y.size)
    if n == 0:
        raise CompatError("no rows to compare the bundles on")
    if new_probs.shape != (n, len(labels)) or prod_probs.shape != (n, len(labels)):
        raise CompatError(f"predictions {new_probs.shape} / {prod_probs.shape} do not match {n} rows x {len(labels)}")
    new_pred, prod_pred = new_probs.argmax(axis=1), prod_probs.argmax(axis=1)
    new_right, prod_right = new_pred == y, prod_pred == y
    negative = prod_right & ~new_right
    positive = ~prod_right & new_right
    new_metrics = compute_metrics(y, new_pred, labels)
    prod_metrics = compute_metrics(y, prod_pred, labels)
    rows = np.arange(n)
    # "worst" = the largest fall in the probability of the true label: the regressions NEW is most
    # sure of are the ones a threshold or a reviewer will not catch
    fall = prod_probs[rows, y] - new_probs[rows, y]
    flipped = np.flatnonzero(negative)
    ranked = flipped[np.argsort(-fall[flipped], kind="stable")][:worst]
    examples = []
    for i in ranked:
        entry: dict[str, Any] = {
            "text_sha256": text_sha256(texts[i]),
            "label": labels[y[i]],
            "baseline_label": labels[prod_pred[i]],
            "new_label": labels[new_pred[i]],
            "baseline_true_score": round(float(prod_probs[i, y[i]]), 6),
            "new_true_score": round(float(new_probs[i, y[i]]), 6),
        }
        if log_texts:
            entry["text"] = texts[i]
        examples.append(entry)
    per_class = class_f1_changes(
        {name: s.f1 for name, s in prod_metrics.per_class.items()},
        {name: s.f1 for name, s in new_metrics.per_class.items()},
        {name: s.support for name, s in prod_metrics.per_class.items()},
    )
    return {
        "examples": n,
        "agreement": float((new_pred == prod_pred).mean()),
        "negative_flips": float(negative.mean()),
        "negative_flip_count": int(negative.sum()),
        "positive_flips": float(positive.mean()),
        "positive_flip_count": int(positive.sum()),
        "new_metrics": _summary(new_metrics),
        "baseline_metrics": _summary(prod_metrics),
        "per_class": per_class,
        "worst_negative_flips": examples,
        "texts_logged": bool(log_texts),
    }


def apply_gate(report: dict[str, Any], thresholds: GateThresholds) -> list[str]:
    """Record the verdict in ``report["gate"]``; returns the failing figures (empty when it passes)."""
    failures = []
    flips = report["negative_flips"] * 100.0
    if flips > thresholds.max_negative_flips:
        failures.append(
            f"negative flips {flips:.2f}% ({report['negative_flip_count']} of {report['examples']} rows the "
            f"baseline gets right) > --max-negative-flips {thresholds.max_negative_flips:g}"
        )
    for name, entry in report["per_class"].items():
        drop = -entry["f1_change_points"]
        if drop > thresholds.max_class_f1_drop:
            failures.append(
                f"class {name!r} F1 drop {drop:.2f} points ({entry['baseline_f1'] * 100:.2f}% -> "
                f"{entry['new_f1'] * 100:.2f}%, {entry['support']} rows) > --max-class-f1-drop "
                f"{thresholds.max_class_f1_drop:g}"
            )
    report["gate"] = {
        "max_negative_flips": thresholds.max_negative_flips,
        "max_class_f1_drop": thresholds.max_class_f1_drop,
        "passed": not failures,
        "failures": failures,
    }
    return failures


def compare_models(
    new: BundleModel,
    prod: BundleModel,
    rows: Sequence[tuple[str, int]],
    data_labels: Sequence[str],
    source: str,
    split: str,
    log_texts: bool = False,
    worst: int = DEFAULT_WORST,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score both loaded bundles on ``rows`` (label ids index ``data_labels``) and build the report;
    columns are matched by label name, NEW's order is the report's."""
    from kdserve.train.evaluate import align_labels

    check_same_labels(new.labels, prod.labels, str(new.folder), str(prod.folder))
    if not rows:
        raise CompatError(f"{source} [{split}] has no rows to compare the bundles on")
    labels = list(new.labels)
    gold = align_labels([y for _, y in rows], data_labels, labels)
    texts = [t for t, _ in rows]
    new_probs = softmax(new.predict(texts, batch_size))
    order = [prod.labels.index(name) for name in labels]
    prod_probs = softmax(prod.predict(texts, batch_size))[:, order]
    report = compare_predictions(gold, new_probs, prod_probs, labels, texts, log_texts, worst)
    identity = {
        "new": {"name": new.name, "precision": new.manifest.precision, "model_sha256": new.manifest.checksum},
        "baseline": {
            "name": prod.name,
            "folder": str(prod.folder),
            "precision": prod.manifest.precision,
            "model_sha256": prod.manifest.checksum,
        },
        "data": source,
        "split": split,
    }
    return {**identity, **report}


def compare_bundles(
    new_dir: str | Path,
    prod_dir: str | Path,
    spec: Any,
    split: str = "validation",
    log_texts: bool = False,
    worst: int = DEFAULT_WORST,
    batch_size: int = 64,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Load and verify both bundle folders, then ``compare_models`` on one split of ``spec``."""
    from kdserve.core.data import load_dataset

    new, prod = BundleModel(new_dir), BundleModel(prod_dir)
    check_same_labels(new.labels, prod.labels, str(new_dir), str(prod_dir))  # before reading any data
    data = load_dataset(spec)
    rows = data.split(split)
    if max_examples:
        rows = rows[:max_examples]
    return compare_models(new, prod, rows, data.labels, data.source, split, log_texts, worst, batch_size)


def format_report(report: Mapping[str, Any]) -> str:
    """A few lines for a terminal: the headline rates, per-class F1 and the verdict."""
    lines = [
        f"{report['new']['name']} vs baseline {report['baseline']['name']} on {report['examples']} "
        f"{report['data']} [{report['split']}] rows: agreement {report['agreement'] * 100:.2f}%, "
        f"negative flips {report['negative_flips'] * 100:.2f}% ({report['negative_flip_count']}), "
        f"positive flips {report['positive_flips'] * 100:.2f}% ({report['positive_flip_count']})",
        f"accuracy {report['baseline_metrics']['accuracy'] * 100:.2f}% -> "
        f"{report['new_metrics']['accuracy'] * 100:.2f}%, "
        f"macro-F1 {report['baseline_metrics']['macro_f1'] * 100:.2f}% -> "
        f"{report['new_metrics']['macro_f1'] * 100:.2f}%",
    ]
    for name, entry in report["per_class"].items():
        lines.append(
            f"  {name}: F1 {entry['baseline_f1'] * 100:.2f}% -> {entry['new_f1'] * 100:.2f}% "
            f"({entry['f1_change_points']:+.2f} points, {entry['support']} rows)"
        )
    gate = report.get("gate")
    if gate:
        lines.append("gate: passed" if gate["passed"] else "gate: REFUSED: " + "; ".join(gate["failures"]))
    return "\n".join(lines)


def card_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines for the model card's "Compatibility with the production bundle" section."""
    gate = report.get("gate") or {}
    verdict = "passed" if gate.get("passed") else "refused: " + "; ".join(gate.get("failures", []))
    lines = [
        "## Compatibility with the production bundle",
        "",
        f"Compared with `{report['baseline']['name']}` ({report['baseline']['precision']}, model sha256 "
        f"{str(report['baseline']['model_sha256'])[:12]}) on {report['examples']} {report['data']} "
        f"[{report['split']}] rows.",
        "",
        "| agreement | negative flips | positive flips | accuracy (baseline -> this) | macro-F1 (baseline -> this) |",
        "|---|---|---|---|---|",
        f"| {report['agreement'] * 100:.2f}% | {report['negative_flips'] * 100:.2f}% "
        f"({report['negative_flip_count']}) | {report['positive_flips'] * 100:.2f}% "
        f"({report['positive_flip_count']}) | {report['baseline_metrics']['accuracy'] * 100:.2f}% -> "
        f"{report['new_metrics']['accuracy'] * 100:.2f}% | {report['baseline_metrics']['macro_f1'] * 100:.2f}% -> "
        f"{report['new_metrics']['macro_f1'] * 100:.2f}% |",
        "",
        "| class | baseline F1 | this F1 | change (points) | rows |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["per_class"].items():
        lines.append(
            f"| `{name}` | {entry['baseline_f1'] * 100:.2f}% | {entry['new_f1'] * 100:.2f}% | "
            f"{entry['f1_change_points']:+.2f} | {entry['support']} |"
        )
    lines += [
        "",
        f"Negative flips: rows the baseline gets right and this bundle gets wrong. Gate (at most "
        f"{gate.get('max_negative_flips')}% negative flips, at most {gate.get('max_class_f1_drop')} F1 points lost "
        f"on any class): {verdict}.",
    ]
    return lines
