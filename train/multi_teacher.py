"""Several teachers label one transfer set: ``kdserve distill --teacher NEW_BERT --teacher PROD_BUNDLE``.

Why: a moderation model is replaced, not shipped once. Distilling the new student from the new
teacher *and* the model already in production (Alibaba's BERT-to-TextCNN moderation recipe, its
scheme 5) keeps what the old model catches, so the swap flips fewer rows the old model got right.

Each teacher (a checkpoint, or a bundle such as the int8 production student) labels the transfer
set once through ``kdserve.train.transfer.teacher_logits`` (cached per teacher). The targets are
then combined with normalised weights:

- ``prob`` (default): p = sum_i w_i softmax(z_i), stored as log p. A mixture of distributions is
  the natural "average opinion": a confident and an unsure teacher give a moderately confident
  target, and teachers whose logits live on different scales (a BERT and a BiLSTM) cannot swamp
  one another. Since softmax(log p) = p, the KL/CE soft losses at temperature 1 train the student
  on exactly the mixture, so ``--soft kl`` is the loss to use with combined targets. Logit MSE on
  log p also runs but weights the tiny probabilities' logs as much as the decision (log 1e-4 vs
  log 1e-6 costs as much as a flipped label), so it is logged as a warning.
- ``logit``: z = sum_i w_i z_i, the average logit (a product of experts after softmax); keeps the
  teachers' logit scale, which suits ``--soft mse``, but lets the teacher with larger logits
  dominate.

For a multi-label model (per-category sigmoids) ``prob`` averages the sigmoids and stores their
logit, so the per-category losses see the mixture the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.errors import ConfigError, DataError

log = logging.getLogger("kdserve.train")

COMBINES = ("prob", "logit")
#: probabilities are floored here before the log, so a teacher that is certain gives a finite target
PROB_FLOOR = 1e-7


def is_bundle(folder: str | Path) -> bool:
    return (Path(folder) / "manifest.json").is_file()


def teacher_label_names(folder: str | Path) -> tuple[str, ...]:
    """A teacher's labels in its output column order: a bundle's manifest, else the checkpoint's labels."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"teacher folder not found: {path}")
    if is_bundle(path):
        from kdserve.core.bundle import read_manifest

        return tuple(read_manifest(path).labels)
    from kdserve.train.checkpoint import read_labels

    return read_labels(path)


def check_teachers(teachers: Sequence[str], data_labels: Sequence[str]) -> list[tuple[str, ...]]:
    """Every teacher's label names (column order); all must hold the dataset's label set."""
    names = [teacher_label_names(t) for t in teachers]
    for teacher, labels in zip(teachers[1:], names[1:]):
        if sorted(labels) != sorted(names[0]):
            raise DataError(
                f"teachers disagree on labels: {teachers[0]} has {list(names[0])}, {teacher} has {list(labels)}"
            )
    if sorted(names[0]) != sorted(data_labels):
        raise DataError(f"teacher labels {list(names[0])} differ from the dataset's {list(data_labels)}")
    return names


def check_primary(config: Any) -> None:
    """The first teacher seeds a Transformer student (its vocabulary, its layers) and teacher word
    vectors; those need a checkpoint, not an ONNX bundle. Checked before anything slow runs."""
    primary = config.primary_teacher
    needs = config.student == "transformer" or config.teacher_embeddings or config.intermediate_weight > 0
    if primary and needs and is_bundle(primary):
        raise ConfigError(
            f"the first --teacher {primary} is a bundle, but the {config.student} student starts from the first "
            "teacher's checkpoint (vocabulary, layers or embeddings): give a checkpoint first and the bundle after it"
        )


def normalised_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights summing to 1 (equal when None); ConfigError for a wrong count or a weight <= 0."""
    if weights is None:
        return np.full(n, 1.0 / n)
    values = np.asarray(list(weights), dtype=np.float64)
    if values.shape != (n,):
        raise ConfigError(f"{len(values)} teacher weights for {n} teachers: give one weight per --teacher")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ConfigError(f"teacher weights must be positive numbers, got {list(weights)}")
    return values / values.sum()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def combine_logits(
    logits: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    mode: str = "prob",
    multi_label: bool = False,
) -> np.ndarray:
    """One [N, C] float32 target from each teacher's [N, C] logits (columns already aligned)."""
    if mode not in COMBINES:
        raise ConfigError(f"teacher_combine must be one of {', '.join(COMBINES)}, got {mode!r}")
    if not logits:
        raise ConfigError("no teacher logits to combine")
    shapes = {z.shape for z in logits}
    if len(shapes) != 1:
        raise ConfigError(f"teacher logits have different shapes {sorted(shapes)}")
    w = normalised_weights(weights, len(logits))
    stacked = np.stack([np.asarray(z, dtype=np.float64) for z in logits])  # [T, N, C]
    if mode == "logit":
        return np.tensordot(w, stacked, axes=1).astype(np.float32)
    if multi_label:
        p = np.tensordot(w, 1.0 / (1.0 + np.exp(-stacked)), axes=1)
        p = np.clip(p, PROB_FLOOR, 1.0 - PROB_FLOOR)
        return (np.log(p) - np.log1p(-p)).astype(np.float32)
    p = np.tensordot(w, np.stack([_softmax(z) for z in stacked]), axes=1)
    return np.log(np.maximum(p, PROB_FLOOR)).astype(np.float32)


def label_transfer(config: Any, texts: Sequence[str], data_labels: Sequence[str]) -> np.ndarray:
    """Targets [N, C] for ``texts`` in the dataset's label order, from ``config.teachers``.

    One teacher: exactly the single-teacher path (its logits, ``teacher_bundle`` labelling in its
    place when set). Several: each labels the texts once (cached), columns aligned by name, then
    ``combine_logits``. A bundle teacher reads texts at its own max_length, as it does in production."""
    from kdserve.core.bundle import read_manifest
    from kdserve.train.transfer import teacher_logits

    teachers = list(config.teachers)
    names = check_teachers(teachers, data_labels)
    outputs = []
    for i, (teacher, labels) in enumerate(zip(teachers, names)):
        source = config.teacher_bundle if (len(teachers) == 1 and config.teacher_bundle) else teacher
        max_length = config.max_length
        if len(teachers) > 1 and is_bundle(source):
            max_length = read_manifest(source).max_length
        desc = f"teacher {i + 1}/{len(teachers)} labelling" if len(teachers) > 1 else "teacher labelling"
        raw = teacher_logits(
            source,
            texts,
            max_length,
            config.cache_dir,
            device=config.device,
            problem_type=config.data.problem_type,
            desc=desc,
            engine=config.label_engine,
            workers=config.label_workers,
        )
        if len(teachers) > 1:
            log.info("teacher %d/%d %s labelled %d texts", i + 1, len(teachers), teacher, len(texts))
        order = [labels.index(name) for name in data_labels]  # teacher columns -> dataset order
        outputs.append(np.ascontiguousarray(raw[:, order]))
    if len(outputs) == 1:
        return outputs[0]
    if config.teacher_combine == "prob" and config.soft == "mse":
        log.warning(
            "prob-combined targets are log-probabilities; --soft kl trains on the mixture exactly, "
            "logit MSE over-weights tiny probabilities"
        )
    multi_label = config.data.problem_type == "multi_label"
    return combine_logits(outputs, config.teacher_weights, config.teacher_combine, multi_label=multi_label)
