"""The teacher's pooling: the [CLS] pooler (Hugging Face's ``*ForSequenceClassification``) or the
mean of the token states under the attention mask.

all-MiniLM-L6-v2, the embedded teacher, was trained through mean pooling and never trained its
[CLS] pooler: on GoEmotions' 28 labels the [CLS] head reached 1.8% macro-F1 at half an epoch
where the same recipe with mean pooling reached 33% (docs/RESULTS.md). A mean-pooling checkpoint
is an ordinary BERT sequence-classification checkpoint (same weights, same files) whose
``config.json`` says ``"kdserve_pooling": "mean"``; ``load_classifier`` reads it back, so every
stage (training, distillation, evaluation, export parity) runs the same forward. Outside kdserve,
plain ``transformers`` would read such a checkpoint through the [CLS] pooler: the model card says so.
"""

from __future__ import annotations

import types
from typing import Any

from kdserve.core.errors import ConfigError

#: ``--pooling`` choices: "cls" is Hugging Face's forward, unchanged; "auto" is the pooling the
#: encoder was pretrained with (``pretrained_pooling``).
POOLINGS = ("auto", "cls", "mean")
#: The config.json key that marks a mean-pooling checkpoint.
CONFIG_KEY = "kdserve_pooling"
#: Model types whose forward ``mean_forward`` reproduces (an encoder under ``.bert``, then
#: ``dropout`` and a Linear ``classifier``): BERT, MiniLM, TinyBERT.
MEAN_MODEL_TYPES = ("bert",)


def pretrained_pooling(source: str, model: Any) -> str:
    """What "auto" means for ``model`` loaded from ``source``: the pooling a kdserve checkpoint
    records; else "mean" where a sentence-transformers folder (or hub repo) says its encoder was
    trained through mean pooling (``1_Pooling/config.json``) and ``mean_forward`` fits the model;
    else "cls"."""
    import json
    from pathlib import Path

    from transformers.utils import cached_file

    recorded = getattr(model.config, CONFIG_KEY, None)
    if recorded:
        return str(recorded)
    if getattr(model.config, "model_type", None) not in MEAN_MODEL_TYPES:
        return "cls"
    try:
        path = cached_file(source, "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False)
        settings = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):  # offline hub id, unreadable or malformed file: no evidence of mean
        return "cls"
    return "mean" if isinstance(settings, dict) and settings.get("pooling_mode_mean_tokens") else "cls"


def pooling_of(model: Any) -> str:
    """The pooling a loaded model's config records ("cls" when it records none)."""
    return str(getattr(model.config, CONFIG_KEY, None) or "cls")


def mean_forward(
    self: Any,
    input_ids: Any = None,
    attention_mask: Any = None,
    token_type_ids: Any = None,
    labels: Any = None,
    **_: Any,
) -> Any:
    """``BertForSequenceClassification.forward`` with the [CLS] pooler replaced by the masked mean
    of the last hidden states. Integer ``labels`` give cross-entropy, float ones binary cross-entropy."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    states = self.bert(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
    ).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    # clamp: an all-padding row (never produced by the tokenizers) divides by 1, not 0
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    logits = self.classifier(self.dropout(pooled))
    loss = None
    if labels is not None:
        functional = torch.nn.functional
        if labels.is_floating_point():
            loss = functional.binary_cross_entropy_with_logits(logits.float(), labels)
        else:
            loss = functional.cross_entropy(logits.float(), labels)
    return SequenceClassifierOutput(loss=loss, logits=logits)


def apply_pooling(model: Any, pooling: str) -> Any:
    """Give ``model`` the forward of ``pooling`` and record it in its config (saved with it).
    The unused [CLS] pooler is frozen, so no optimizer group holds it."""
    if pooling not in POOLINGS or pooling == "auto":
        raise ConfigError(f"pooling must be cls or mean, got {pooling!r}")
    if pooling == "cls":
        if hasattr(model.config, CONFIG_KEY):  # a mean checkpoint fine-tuned again with --pooling cls
            delattr(model.config, CONFIG_KEY)
        return model
    model_type = getattr(model.config, "model_type", None)
    if model_type not in MEAN_MODEL_TYPES or not hasattr(model, "classifier") or not hasattr(model, "bert"):
        raise ConfigError(
            f"pooling 'mean' supports BERT-family teachers ({', '.join(MEAN_MODEL_TYPES)}), got {model_type!r}"
        )
    setattr(model.config, CONFIG_KEY, pooling)
    pooler = getattr(model.bert, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)
    model.forward = types.MethodType(mean_forward, model)
    return model
