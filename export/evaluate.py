"""``kdserve eval --bundle``: score an exported bundle with the same metric code as checkpoints.

Torch-free: ONNX Runtime and ``tokenizers`` through ``kdserve.core.bundle.BundleModel``, the
scoring through ``kdserve.train.evaluate.score_logits``/``align_labels`` (numpy only), so a bundle's
number means exactly what a checkpoint's does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import BundleModel
from kdserve.core.data import DatasetSpec, Example, load_dataset
from kdserve.core.errors import ConfigError, DataError
from kdserve.core.metrics import Metrics
from kdserve.train.evaluate import (
    EvalResult,
    align_labels,
    align_targets,
    moderation_of,
    multi_label_result,
    score_logits,
)
from kdserve.train.progress import bundle_predict


def score_bundle(
    model: BundleModel, rows: Sequence[Example], data_labels: Sequence[str], batch_size: int = 64
) -> tuple[Metrics, np.ndarray]:
    """(metrics, logits [N, C]) of ``model`` on (text, label id) rows whose ids index ``data_labels``."""
    y_true = align_labels([y for _, y in rows], data_labels, model.labels)
    start = time.perf_counter()
    logits = bundle_predict(model, [t for t, _ in rows], batch_size, f"scoring {model.manifest.name}")
    elapsed = time.perf_counter() - start
    return score_logits(logits, y_true, model.labels, len(rows) / elapsed if elapsed > 0 else None), logits


def score_multi_label(model: BundleModel, rows: Sequence[Any], data: Any, batch_size: int = 64) -> dict[str, Any]:
    """The manifest summary of a multi-label bundle: ``accuracy`` is the exact-match ratio and
    ``macro_f1`` the macro-F1, both at 0.5 on the uncalibrated sigmoid (the accuracy gate's input)."""
    targets = align_targets(rows, data.labels, model.labels) >= 0.5
    logits = bundle_predict(model, [t for t, _ in rows], batch_size, f"scoring {model.manifest.name}")
    predicted = logits >= 0.0  # sigmoid(z) >= 0.5
    tp = (predicted & targets).sum(axis=0)
    denom = predicted.sum(axis=0) + targets.sum(axis=0)
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(model.labels)), where=denom > 0)
    return {
        "accuracy": float((predicted == targets).all(axis=1).mean()),
        "macro_f1": float(f1.mean()),
        "examples": len(rows),
        "data": data.source,
        "split": "validation",
    }


def summary(metrics: Metrics, data: str, split: str) -> dict[str, Any]:
    """The compact form stored in a manifest's ``metrics``."""
    return {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "examples": metrics.examples,
        "data": data,
        "split": split,
    }


def bundle_thresholds(model: BundleModel, threshold: float | str) -> list[float]:
    """Per-label thresholds for a multi-label report: one number for every label, or "policy": the
    bundle's default-policy thresholds (0.5 for a label without one, e.g. a benign label)."""
    if threshold != "policy":
        return [float(threshold)] * len(model.labels)
    policy = model.manifest.policy.get("thresholds", {}) if isinstance(model.manifest.policy, dict) else {}
    if not policy:
        raise ConfigError(f"{model.folder} has no default policy: give --threshold a number")
    return [float(policy.get(name, 0.5)) for name in model.labels]


def evaluate_bundle(
    bundle: str | Path,
    data: DatasetSpec,
    split: str = "validation",
    batch_size: int = 128,
    threshold: float | str = 0.5,
) -> EvalResult:
    """Evaluate a bundle folder (checksums verified first) on one split of any dataset spec.

    Scores are the bundle's calibrated ones (what a served request gets). Multi-label: F1 and
    exact match at ``threshold`` (a number, or "policy" for the manifest's default policy; its
    thresholds were chosen on half of the export's validation rows, so on that split the policy's
    F1 is partly in-sample)."""
    model = BundleModel(bundle)
    dataset = load_dataset(data)
    rows = dataset.split(split)
    name = f"{bundle} ({model.manifest.precision})"
    if dataset.problem_type == "multi_label":
        if model.manifest.problem_type != "multi_label":
            raise DataError(f"{bundle} is a {model.manifest.problem_type} bundle; the data is multi_label")
        thresholds = bundle_thresholds(model, threshold)
        align_targets(rows[:1], dataset.labels, model.labels)  # label mismatch fails before the slow part
        start = time.perf_counter()
        logits = bundle_predict(model, [t for t, _ in rows], batch_size, f"scoring {model.manifest.name}")
        rate = len(rows) / max(time.perf_counter() - start, 1e-9)
        return multi_label_result(
            model.probabilities(logits),
            rows,
            dataset.labels,
            model.labels,
            thresholds,
            model=name,
            data=dataset.source,
            split=split,
            examples_per_s=rate,
        )
    if model.manifest.problem_type == "multi_label":
        raise DataError(f"{bundle} is a multi_label bundle: pass --problem-type multi_label and its label columns")
    metrics, logits = score_bundle(model, rows, dataset.labels, batch_size)
    y_true = align_labels([y for _, y in rows], dataset.labels, model.labels)
    # the bundle's calibrated scores: what a served request gets
    moderation = moderation_of(model.probabilities(logits), y_true, model.labels)
    return EvalResult(metrics=metrics, model=name, data=dataset.source, split=split, moderation=moderation)
