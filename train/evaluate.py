"""``kdserve eval``: score a model on any labelled dataset spec.

Scoring goes through ``kdserve.core.metrics`` whatever produced the logits, so a checkpoint, an
ONNX bundle and a server are compared on equal terms. Torch is imported only for
checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.data import DatasetSpec, load_dataset
from kdserve.core.errors import DataError
from kdserve.core.metrics import Metrics, compute_metrics, format_report
from kdserve.core.moderation import POSITIVE_AT, ModerationMetrics, format_moderation, moderation_metrics

#: ``metric_for_best`` choices: accuracy and macro-F1 (any problem type) and the moderation ones.
#: micro_f1 / macro_f1 of a multi-label model are measured at ``dev_threshold``; macro_auc and
#: macro_ap (mean per-category ROC-AUC / average precision) need no threshold at all, which is why
#: a moderation run whose policy threshold is chosen later, at export, should select on them.
MODERATION_METRICS = ("micro_f1", "macro_auc", "macro_ap")
METRICS_FOR_BEST = ("accuracy", "macro_f1", *MODERATION_METRICS)
#: Help of the ``metric_for_best`` flag, shared by the teacher and distill commands.
METRIC_FOR_BEST_HELP = (
    "validation metric that picks the saved weights: accuracy, macro_f1 (imbalanced classes), micro_f1, "
    "macro_auc or macro_ap (moderation: threshold-free ranking quality; default {default})"
)
#: Help of ``dev_threshold``, shared by the teacher and distill commands.
DEV_THRESHOLD_HELP = (
    "multi-label: the fixed per-category score threshold of the validation F1 and exact match (never tuned on "
    "the rows scored; the GoEmotions paper uses 0.3; default {default})"
)


@dataclass(frozen=True)
class DevScores:
    """One dev pass scored for moderation: what the training loop reads (``accuracy``,
    ``macro_f1`` and the ``metric_for_best`` field) plus the full per-category metrics.

    Multi-label: ``accuracy`` is the exact-match ratio (every category right) and the F1s are at
    the fixed ``threshold``; single-label: accuracy and F1 of the argmax, as ``Metrics`` has them."""

    problem_type: str
    accuracy: float
    macro_f1: float
    micro_f1: float
    macro_auc: float
    macro_ap: float
    ece: float
    brier: float
    threshold: float | None
    examples: int
    examples_per_s: float | None
    moderation: dict[str, Any]
    #: single-label: the usual ``Metrics`` (per-class scores, confusion matrix) as a dict
    classification: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def multi_label_probabilities(logits: np.ndarray) -> np.ndarray:
    """Per-category sigmoids of [N, C] logits (uncalibrated: calibration is fitted at export)."""
    from kdserve.core.calibration import sigmoid

    return sigmoid(np.asarray(logits, dtype=np.float64))


def softmax_probabilities(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def exact_match(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    """Share of rows whose every category is right at ``threshold`` (targets >= 0.5 are positives)."""
    hard = np.asarray(targets, dtype=np.float64) >= POSITIVE_AT
    return float(((np.asarray(probabilities) >= threshold) == hard).all(axis=1).mean())


def score_dev(
    logits: np.ndarray,
    targets: Sequence[Any],
    labels: Sequence[str],
    problem_type: str = "single_label",
    *,
    metric_for_best: str = "accuracy",
    threshold: float = 0.5,
    examples_per_s: float | None = None,
) -> Metrics | DevScores:
    """Score a dev pass. Single-label with accuracy/macro_f1 as the selection metric: exactly
    ``score_logits`` (so every single-label figure is computed as before); otherwise a
    ``DevScores`` with the moderation metrics (``kdserve.core.moderation``)."""
    if problem_type == "single_label":
        metrics = score_logits(logits, targets, labels, examples_per_s)
        if metric_for_best not in MODERATION_METRICS:
            return metrics
        moderation = moderation_of(softmax_probabilities(logits), targets, labels)
        return DevScores(
            problem_type=problem_type,
            accuracy=metrics.accuracy,
            macro_f1=metrics.macro_f1,
            micro_f1=moderation.micro_f1,
            macro_auc=moderation.macro("roc_auc"),
            macro_ap=moderation.macro("average_precision"),
            ece=moderation.ece,
            brier=moderation.brier,
            threshold=None,
            examples=metrics.examples,
            examples_per_s=examples_per_s,
            moderation=moderation.to_dict(),
            classification=metrics.to_dict(),
        )
    matrix = np.asarray(targets, dtype=np.float64).reshape(len(targets), len(labels))
    probabilities = multi_label_probabilities(logits)
    moderation = moderation_metrics(probabilities, matrix, labels, "multi_label", thresholds=[threshold] * len(labels))
    return DevScores(
        problem_type=problem_type,
        accuracy=exact_match(probabilities, matrix, threshold),
        macro_f1=moderation.macro_f1,
        micro_f1=moderation.micro_f1,
        macro_auc=moderation.macro("roc_auc"),
        macro_ap=moderation.macro("average_precision"),
        ece=moderation.ece,
        brier=moderation.brier,
        threshold=threshold,
        examples=int(matrix.shape[0]),
        examples_per_s=examples_per_s,
        moderation=moderation.to_dict(),
    )


def score_logits(
    logits: np.ndarray, y_true: Sequence[int], labels: Sequence[str], examples_per_s: float | None = None
) -> Metrics:
    """Metrics of argmax predictions; ``logits`` is [N, C] in the order of ``y_true``."""
    return compute_metrics(y_true, np.asarray(logits).argmax(axis=-1), labels, examples_per_s)


def predict_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int, device: Any = "cpu"
) -> tuple[np.ndarray, float]:
    """Logits [N, C] of a Hugging Face classifier in input order, and examples/s (tokenization included)."""
    import torch

    from kdserve.train.batching import sorted_batches
    from kdserve.train.common import pad_batch

    start = time.perf_counter()
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    with_types = "token_type_ids" in tokenizer.model_input_names
    was_training = model.training
    model.eval()
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for batch_idx in sorted_batches([len(s) for s in ids], batch_size):
            batch = pad_batch([ids[i] for i in batch_idx], tokenizer.pad_token_id, with_types)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[batch_idx] = logits.float().cpu().numpy()
    model.train(was_training)
    elapsed = time.perf_counter() - start
    return out, len(ids) / elapsed if elapsed > 0 else float("inf")


def align_labels(y_true: Sequence[int], data_labels: Sequence[str], model_labels: Sequence[str]) -> list[int]:
    """Re-index dataset label ids into the model's label order, matching by name."""
    position = {name: i for i, name in enumerate(model_labels)}
    missing = [name for name in data_labels if name not in position]
    if missing:
        raise DataError(
            f"dataset label(s) {', '.join(map(repr, missing))} not among the model's labels ({', '.join(model_labels)})"
        )
    return [position[data_labels[y]] for y in y_true]


def align_targets(rows: Sequence[Any], data_labels: Sequence[str], model_labels: Sequence[str]) -> np.ndarray:
    """[N, C] multi-label targets, columns re-ordered into the model's labels by name."""
    position = {name: i for i, name in enumerate(data_labels)}
    missing = [name for name in model_labels if name not in position]
    if missing or len(data_labels) != len(model_labels):
        raise DataError(
            f"dataset labels ({', '.join(data_labels)}) differ from the model's ({', '.join(model_labels)})"
        )
    matrix = np.asarray([target for _, target in rows], dtype=np.float64).reshape(len(rows), len(data_labels))
    return matrix[:, [position[name] for name in model_labels]]


@dataclass
class EvalResult:
    #: single-label: accuracy, per-class scores, confusion matrix; None for a multi-label model
    metrics: Metrics | None
    model: str
    data: str
    split: str
    # per-class ROC-AUC, AP, recall at precision 0.90, ECE and Brier (kdserve.core.moderation)
    moderation: ModerationMetrics | None = None
    #: multi-label: the share of rows with every category right at the thresholds
    exact_match: float | None = None
    examples_per_s: float | None = None


def moderation_of(probabilities: np.ndarray, y_true: Sequence[int], labels: Sequence[str]) -> ModerationMetrics:
    """Single-label moderation metrics of [N, C] class probabilities (softmax, calibrated or not)."""
    return moderation_metrics(probabilities, np.asarray(y_true, dtype=np.int64), labels, "single_label")


def multi_label_result(
    probabilities: np.ndarray,
    rows: Sequence[Any],
    data_labels: Sequence[str],
    model_labels: Sequence[str],
    thresholds: Sequence[float],
    **fields: Any,
) -> EvalResult:
    """An ``EvalResult`` of a multi-label model: moderation metrics at ``thresholds`` (one per
    model label) and the exact-match ratio at them."""
    targets = align_targets(rows, data_labels, model_labels)
    moderation = moderation_metrics(probabilities, targets, model_labels, "multi_label", thresholds=thresholds)
    hard = targets >= POSITIVE_AT
    exact = float(((probabilities >= np.asarray(thresholds)) == hard).all(axis=1).mean())
    return EvalResult(metrics=None, moderation=moderation, exact_match=exact, **fields)


def is_student_folder(folder: str | Path) -> bool:
    """A distilled student (``kdserve distill`` output) rather than a Hugging Face classifier."""
    return (Path(folder) / "student_config.json").is_file()


def _student_logits(folder: str | Path, texts: Sequence[str], max_length: int, batch_size: int, device: Any) -> Any:
    from kdserve.train.distill import predict_student
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer
    from kdserve.train.students import load_student

    start = time.perf_counter()
    model, _ = load_student(folder, device)
    logits = predict_student(model, encode_batch(load_tokenizer(folder), texts, max_length), batch_size, device)
    return logits, len(texts) / max(time.perf_counter() - start, 1e-9)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: DatasetSpec,
    split: str = "validation",
    batch_size: int = 128,
    max_length: int = 128,
    device: str = "auto",
    threshold: float = 0.5,
) -> EvalResult:
    """Evaluate a checkpoint folder (a teacher, or a distilled student) on one split.

    Multi-label data: per-category sigmoids scored with the moderation metrics, F1 and exact
    match at the fixed ``threshold`` (uncalibrated: a checkpoint has no fitted temperature yet)."""
    from kdserve.train.checkpoint import read_labels
    from kdserve.train.common import resolve_device

    dataset = load_dataset(data)
    rows = dataset.split(split)
    model_labels = read_labels(checkpoint)
    multi = dataset.problem_type == "multi_label"
    y_true = None if multi else align_labels([y for _, y in rows], dataset.labels, model_labels)
    if multi:
        align_targets(rows[:1], dataset.labels, model_labels)  # label mismatch fails before the slow part
    torch_device = resolve_device(device)
    texts = [t for t, _ in rows]
    if is_student_folder(checkpoint):
        logits, rate = _student_logits(checkpoint, texts, max_length, batch_size, torch_device)
    else:
        from kdserve.train.checkpoint import load_classifier

        model, tokenizer = load_classifier(str(checkpoint))
        model.to(torch_device)
        logits, rate = predict_logits(model, tokenizer, texts, max_length, batch_size, torch_device)
    if logits.shape[1] != len(model_labels):
        raise DataError(f"{checkpoint}: {logits.shape[1]} outputs for {len(model_labels)} labels")
    where = {"model": str(checkpoint), "data": dataset.source, "split": split, "examples_per_s": rate}
    if multi:
        probabilities = multi_label_probabilities(logits)
        return multi_label_result(
            probabilities, rows, dataset.labels, model_labels, [threshold] * len(model_labels), **where
        )
    assert y_true is not None
    metrics = score_logits(logits, y_true, model_labels, rate)
    moderation = moderation_of(softmax_probabilities(logits), y_true, model_labels)
    return EvalResult(metrics=metrics, moderation=moderation, **where)


def report(result: EvalResult, output: str | Path | None = None) -> str:
    """The printed table; with ``output`` also the JSON (metrics plus what was evaluated on what)."""
    title = f"{result.model} on {result.data} [{result.split}]"
    extra: dict[str, Any] = {"model": result.model, "data": result.data, "split": result.split}
    if result.metrics is not None:
        text = format_report(result.metrics, title=title)
    else:
        text = title
        if result.exact_match is not None:
            text += f"\nexact match (every category right at its threshold): {result.exact_match * 100:.2f}%"
    if result.moderation is not None:
        text += "\n" + format_moderation(result.moderation)
        extra["moderation"] = result.moderation.to_dict()
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        if result.metrics is not None:
            from dataclasses import replace

            replace(result.metrics, extra=extra).write_json(output)
        else:
            payload = {**extra, "exact_match": result.exact_match, "examples_per_s": result.examples_per_s}
            Path(output).write_text(json.dumps(payload, indent=2) + "\n")
    return text
