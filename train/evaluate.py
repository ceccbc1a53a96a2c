"""``kdserve eval``: score a model on any labelled dataset spec.

Scoring goes through ``kdserve.core.metrics`` whatever produced the logits, so a checkpoint, an
ONNX bundle and a server are compared on equal terms. Torch is imported only for
checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.data import DatasetSpec, load_dataset
from kdserve.core.errors import DataError
from kdserve.core.metrics import Metrics, compute_metrics, format_report
from kdserve.core.moderation import ModerationMetrics, format_moderation, moderation_metrics


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


@dataclass
class EvalResult:
    metrics: Metrics
    model: str
    data: str
    split: str
    # per-class ROC-AUC, AP, recall at precision 0.90, ECE and Brier (kdserve.core.moderation)
    moderation: ModerationMetrics | None = None


def moderation_of(probabilities: np.ndarray, y_true: Sequence[int], labels: Sequence[str]) -> ModerationMetrics:
    """Single-label moderation metrics of [N, C] class probabilities (softmax, calibrated or not)."""
    return moderation_metrics(probabilities, np.asarray(y_true, dtype=np.int64), labels, "single_label")


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: DatasetSpec,
    split: str = "validation",
    batch_size: int = 128,
    max_length: int = 128,
    device: str = "auto",
) -> EvalResult:
    """Evaluate a Hugging Face classifier folder (a teacher checkpoint) on one split."""
    from kdserve.train.checkpoint import load_classifier, read_labels
    from kdserve.train.common import resolve_device

    dataset = load_dataset(data)
    rows = dataset.split(split)
    model_labels = read_labels(checkpoint)
    y_true = align_labels([y for _, y in rows], dataset.labels, model_labels)
    model, tokenizer = load_classifier(str(checkpoint))
    torch_device = resolve_device(device)
    model.to(torch_device)
    logits, rate = predict_logits(model, tokenizer, [t for t, _ in rows], max_length, batch_size, torch_device)
    metrics = score_logits(logits, y_true, model_labels, rate)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    moderation = moderation_of(shifted / shifted.sum(axis=1, keepdims=True), y_true, model_labels)
    return EvalResult(metrics=metrics, model=str(checkpoint), data=dataset.source, split=split, moderation=moderation)


def report(result: EvalResult, output: str | Path | None = None) -> str:
    """The printed table; with ``output`` also the JSON (metrics plus what was evaluated on what)."""
    text = format_report(result.metrics, title=f"{result.model} on {result.data} [{result.split}]")
    extra: dict[str, Any] = {"model": result.model, "data": result.data, "split": result.split}
    if result.moderation is not None:
        text += "\n" + format_moderation(result.moderation)
        extra["moderation"] = result.moderation.to_dict()
    if output is not None:
        from dataclasses import replace

        tagged = replace(result.metrics, extra=extra)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        tagged.write_json(output)
    return text
