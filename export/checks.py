"""The export's self-checks and their typed errors: PyTorch-vs-ONNX parity and the int8 accuracy gate.

Numpy only at module level: the reference side (a PyTorch model and its training tokenizer)
is passed in as a callable, so this module runs wherever a bundle does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.errors import KdserveError

#: (texts) -> (token ids per text, logits [N, C]) of the model as it was trained.
Reference = Callable[[Sequence[str]], tuple[list[list[int]], np.ndarray]]


class ExportError(KdserveError):
    """An export cannot be produced or fails one of its checks."""


class CheckpointKindError(ExportError):
    """The folder is not a checkpoint kdserve can export."""


class ParityError(ExportError):
    """The ONNX graph or the serving tokenizer disagrees with the PyTorch checkpoint."""


class AccuracyGateError(ExportError):
    """The quantized model loses more accuracy than allowed. ``written``: the bundles the export
    did write (the fp32 one) before refusing, for callers that go on with them."""

    def __init__(self, message: str, written: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.written = list(written)


class OutputExistsError(ExportError):
    """A bundle folder to be written already exists (pass --overwrite)."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    texts: int
    truncated: int
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "texts": self.texts,
            "truncated": self.truncated,
            "tolerance": self.tolerance,
        }


def parity_texts(texts: Sequence[str], n: int) -> list[str]:
    """``n`` non-empty texts spread over the length distribution (shortest to longest), then
    interleaved so every batch mixes short and long texts and padding is exercised."""
    pool = sorted({t for t in texts if t.strip()}, key=lambda t: (len(t), t))
    if not pool:
        raise ExportError("the parity check found no non-empty text in the validation split")
    if len(pool) > n:
        picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
        pool = [pool[i] for i in picks]
    # short, long, short, long ...: one batch of 16 then holds lengths from both ends.
    half = (len(pool) + 1) // 2
    short, long = pool[:half], pool[half:][::-1]
    mixed = [t for pair in zip(short, long) for t in pair]
    return mixed + short[len(long) :]


def check_parity(
    reference: Reference, bundle: Any, texts: Sequence[str], tolerance: float, batch_size: int = 16
) -> ParityReport:
    """Compare the bundle with the checkpoint on the same texts, in the same padded batches.

    Two things must hold: the bundle's tokenizer gives exactly the training tokenizer's ids
    (else the model is served different inputs than it learned on), and the ONNX logits match
    PyTorch's to ``tolerance``. ``bundle`` is an ``kdserve.core.bundle.BundleModel``. Raises
    ParityError naming the first disagreement.
    """
    worst = 0.0
    truncated = 0
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        expected_ids, expected = reference(chunk)
        encoded = bundle.encode(chunk)
        truncated += sum(encoded.truncated)
        for row, ids in enumerate(expected_ids):
            served = encoded.input_ids[row, : encoded.lengths[row]].tolist()
            if served != list(ids):
                raise ParityError(
                    f"{bundle.folder}: the bundle tokenizer gives different ids than training for text "
                    f"{chunk[row][:60]!r}: {served[:12]}... vs {list(ids)[:12]}..."
                )
        logits = bundle.run(encoded)
        if logits.shape != expected.shape:
            raise ParityError(f"{bundle.folder}: ONNX logits have shape {logits.shape}, PyTorch {expected.shape}")
        if not np.isfinite(logits).all():
            raise ParityError(f"{bundle.folder}: ONNX logits contain NaN or inf")
        worst = max(worst, float(np.abs(logits - expected).max()))
    if worst > tolerance:
        raise ParityError(
            f"{bundle.folder}: ONNX logits differ from PyTorch by up to {worst:.3g} on {len(texts)} validation "
            f"texts (tolerance {tolerance:g}); the exported graph is not the checkpoint's model"
        )
    return ParityReport(max_abs_diff=worst, texts=len(texts), truncated=truncated, tolerance=tolerance)


def accuracy_drop(fp32: dict[str, Any], quantized: dict[str, Any]) -> float:
    """fp32 minus quantized accuracy, in points (percentage points)."""
    return (float(fp32["accuracy"]) - float(quantized["accuracy"])) * 100.0


def accuracy_gate(
    fp32: dict[str, Any], quantized: dict[str, Any], max_drop: float, force: bool, precision: str = "int8"
) -> tuple[float, bool]:
    """(drop in points, whether the gate was overridden). Raises AccuracyGateError when the
    quantized model loses more than ``max_drop`` points and ``force`` is not set."""
    drop = accuracy_drop(fp32, quantized)
    if drop <= max_drop:
        return drop, False
    if force:
        return drop, True
    raise AccuracyGateError(
        f"the {precision} model loses {drop:.2f} accuracy points (fp32 {fp32['accuracy'] * 100:.2f}% -> "
        f"{precision} {quantized['accuracy'] * 100:.2f}% on {quantized['examples']} {quantized['data']} "
        f"{quantized['split']} examples), more than --max-accuracy-drop {max_drop:g}; it was not written "
        f"(pass --force to keep it anyway)"
    )


def auc_drops(
    fp32_logits: np.ndarray, logits: np.ndarray, targets: np.ndarray, labels: Sequence[str], problem_type: str
) -> dict[str, float]:
    """Per label, fp32 minus quantized ROC-AUC in points: on each label's logit for multi-label
    bundles, one-vs-rest on the softmax for single-label ones (``targets`` class ids there, an
    [N, C] matrix here). Labels whose rows are all one class have no AUC and are left out."""
    from kdserve.core.bundle import softmax
    from kdserve.core.moderation import as_indicator, roc_auc

    truth = as_indicator(targets, problem_type, len(labels))  # as moderation_metrics reads them
    if problem_type == "multi_label":
        before, after = fp32_logits, logits
    else:
        before, after = softmax(fp32_logits), softmax(logits)
    drops = {}
    for c, name in enumerate(labels):
        a, b = roc_auc(truth[:, c], before[:, c]), roc_auc(truth[:, c], after[:, c])
        if a == a and b == b:  # not NaN
            drops[name] = (a - b) * 100.0
    return drops


def worst_auc_drop(drops: dict[str, float]) -> tuple[str | None, float]:
    """(label, points) of the largest ROC-AUC drop in ``drops``; (None, 0.0) when there is none."""
    if not drops:
        return None, 0.0
    worst = max(drops, key=lambda name: drops[name])
    return worst, drops[worst]


def auc_gate(drops: dict[str, float], max_drop: float, force: bool, precision: str = "int8") -> tuple[float, bool]:
    """(the largest per-label ROC-AUC drop in points, whether the gate was overridden). Raises
    AccuracyGateError when a label's ranking loses more than ``max_drop`` points: a policy
    threshold sits on that ranking, so a label can degrade while accuracy does not move."""
    worst, drop = worst_auc_drop(drops)
    if drop <= max_drop:
        return drop, False
    if force:
        return drop, True
    raise AccuracyGateError(
        f"the {precision} model loses {drop:.2f} ROC-AUC points on label {worst!r}, more than "
        f"--max-auc-drop {max_drop:g}; it was not written (pass --force to keep it anyway)"
    )


def refused_attempts(extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The quantization attempts a manifest's ``extra`` records as refused by the accuracy gate
    (neither passed nor kept with --force), in the order they were tried."""
    return [a for a in extra.get("quantization_attempts") or [] if not (a.get("passed") or a.get("forced"))]
