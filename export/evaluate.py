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
from kdserve.core.metrics import Metrics
from kdserve.train.evaluate import EvalResult, align_labels, score_logits


def score_bundle(
    model: BundleModel, rows: Sequence[Example], data_labels: Sequence[str], batch_size: int = 64
) -> tuple[Metrics, np.ndarray]:
    """(metrics, logits [N, C]) of ``model`` on (text, label id) rows whose ids index ``data_labels``."""
    y_true = align_labels([y for _, y in rows], data_labels, model.labels)
    start = time.perf_counter()
    logits = model.predict([t for t, _ in rows], batch_size=batch_size)
    elapsed = time.perf_counter() - start
    return score_logits(logits, y_true, model.labels, len(rows) / elapsed if elapsed > 0 else None), logits


def summary(metrics: Metrics, data: str, split: str) -> dict[str, Any]:
    """The compact form stored in a manifest's ``metrics``."""
    return {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "examples": metrics.examples,
        "data": data,
        "split": split,
    }


def evaluate_bundle(
    bundle: str | Path, data: DatasetSpec, split: str = "validation", batch_size: int = 128
) -> EvalResult:
    """Evaluate a bundle folder (checksums verified first) on one split of any dataset spec."""
    model = BundleModel(bundle)
    dataset = load_dataset(data)
    metrics, _ = score_bundle(model, dataset.split(split), dataset.labels, batch_size)
    return EvalResult(metrics=metrics, model=f"{bundle} ({model.manifest.precision})", data=dataset.source, split=split)
