"""Classification metrics, independent of the model that produced the predictions.

Only numpy: the same code scores a PyTorch checkpoint, an ONNX bundle or a running server,
so a number in one report means the same thing as in another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Scores of one model on one labelled split."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted label
    labels: tuple[str, ...]
    examples: int
    examples_per_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    examples_per_s: float | None = None,
) -> Metrics:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    A class with no predictions has precision 0 and one with no true examples has recall 0
    (scikit-learn's ``zero_division=0``); macro-F1 averages over every label, present or not,
    so a model that ignores a rare class is penalised for it.
    """
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of equal length, got {true.shape} and {pred.shape}")
    n_labels = len(labels)
    if true.size == 0:
        raise ValueError("cannot score an empty split")
    if true.min() < 0 or pred.min() < 0 or max(true.max(), pred.max()) >= n_labels:
        raise ValueError(f"label ids must lie in [0, {n_labels})")
    confusion = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    per_class = {
        name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(actual[i]))
        for i, name in enumerate(labels)
    }
    return Metrics(
        accuracy=float(tp.sum() / true.size),
        macro_f1=float(f1.mean()),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        labels=tuple(labels),
        examples=int(true.size),
        examples_per_s=examples_per_s,
    )


def format_report(metrics: Metrics, title: str = "") -> str:
    """A plain-text table a person reads in a terminal or pastes into a results file."""
    width = max(12, *(len(name) for name in metrics.labels))
    lines = [title] if title else []
    lines.append(
        f"accuracy {metrics.accuracy * 100:.2f}%  macro-F1 {metrics.macro_f1 * 100:.2f}%  "
        f"examples {metrics.examples}"
        + (f"  {metrics.examples_per_s:.1f} examples/s" if metrics.examples_per_s else "")
    )
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, scores in metrics.per_class.items():
        lines.append(
            f"{name:<{width}} {scores.precision * 100:>8.2f}% {scores.recall * 100:>8.2f}% "
            f"{scores.f1 * 100:>8.2f}% {scores.support:>8d}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted)")
    cell = max(6, *(len(str(v)) for row in metrics.confusion_matrix for v in row))
    lines.append(" " * (width + 1) + " ".join(f"{name[:cell]:>{cell}}" for name in metrics.labels))
    for name, row in zip(metrics.labels, metrics.confusion_matrix):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
