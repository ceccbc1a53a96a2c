"""Fine-tune a BERT-family teacher: ``kdserve train teacher``.

Recipe (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification"): AdamW, linear
warm-up then linear decay, layer-wise learning-rate decay lr_i = lr * decay^(L - i),
gradient clipping, evaluation after every epoch keeping the best checkpoint. Dynamic padding
over length-bucketed batches makes short-text training several times faster on a CPU.

This module is the recipe (config, optimizer groups, schedule, loss step, evaluation); the epochs,
clipping, dev passes and best-checkpoint bookkeeping are the shared loop's (``kdserve.train.loop``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError
from kdserve.core.options import option
from kdserve.train.checkpoint import DEFAULT_TEACHER
from kdserve.train.evaluate import DEV_THRESHOLD_HELP, METRIC_FOR_BEST_HELP, METRICS_FOR_BEST
from kdserve.train.pooling import POOLINGS

log = logging.getLogger("kdserve.train")

#: Named presets. ``quick`` fits in a few minutes on 2 CPU cores; ``full`` is the recipe that
#: RESULTS.md reports. Freezing the 30k x H word-embedding matrix skips its dense gradient and
#: Adam update, about 1.7x faster per step on a CPU, at a negligible cost in accuracy. ``full``
#: scores the dev set four times an epoch: on SST-2 its best weights lay mid-epoch (RESULTS.md).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "epochs": 2,
        "lr": 1e-4,
        "max_length": 64,
        "max_train_examples": 10_000,
        "batch_size": 32,
        "freeze_word_embeddings": True,
    },
    "full": {
        "epochs": 4,
        "lr": 1e-4,
        "max_length": 128,
        "max_train_examples": None,
        "batch_size": 32,
        "freeze_word_embeddings": True,
        "evals_per_epoch": 4,
    },
}

#: The --evals-per-epoch help, shared with the distill command.
EVALS_PER_EPOCH_HELP = (
    "validation passes per epoch, evenly spaced, the last at its end; the best pass's weights are kept "
    "(default {default})"
)


@dataclass
class TeacherConfig:
    """Everything that defines a teacher run; written next to the checkpoint."""

    # Fields declared with option() are the `kdserve train teacher` flags (kdserve.core.options);
    # plain fields are settable from Python only.
    data: DatasetSpec = option(title="data")
    output_dir: str = option(flag="--output", help="checkpoint folder to write")
    model: str = option(DEFAULT_TEACHER, help="local folder or hub id (default: embedded all-MiniLM-L6-v2)")
    preset: str | None = option(None, choices=tuple(PRESETS), cli_default="quick")
    epochs: int = option(3)
    lr: float = option(6e-5)
    #: The classifier (and a [CLS] pooler) start untrained, and one sigmoid a rare category learns
    #: slowly at an encoder's rate: a separate rate for them. On GoEmotions it took the [CLS] head
    #: from 1.8% to 5.3% macro-F1 on 10k rows; mean pooling (below) is what made that teacher learn.
    head_lr: float | None = option(
        None, metavar="LR", help="learning rate of the pooler and classifier head (default: --lr)"
    )
    #: "auto" pools as the encoder was pretrained: mean for all-MiniLM-L6-v2 and other sentence-
    #: transformers folders that say so, else Hugging Face's [CLS] pooler (kdserve.train.pooling).
    pooling: str = option(
        "auto",
        choices=POOLINGS,
        help="sentence pooling under the classifier: auto (default: as the encoder was pretrained, "
        "mean for the embedded MiniLM), cls ([CLS] pooler) or mean",
    )
    batch_size: int = option(32)
    eval_batch_size: int = 128
    max_length: int = option(128)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    layer_decay: float = 0.95
    grad_clip: float = 1.0
    freeze_word_embeddings: bool = option(
        False, help="skip updating the word-embedding matrix (the presets do; faster on CPU)"
    )
    max_train_examples: int | None = option(None)
    seed: int = option(13)
    device: str = option("auto", help="auto (default), cpu or cuda")
    metric_for_best: Literal["accuracy", "macro_f1", "micro_f1", "macro_auc", "macro_ap"] = option(
        "accuracy", help=METRIC_FOR_BEST_HELP
    )
    #: multi-label: the fixed threshold of the dev F1 (never tuned on the rows it scores)
    dev_threshold: float = option(0.5, help=DEV_THRESHOLD_HELP)
    pool_batches: int = 50
    #: validation passes per epoch (the last at its end); the best of all of them is kept. More
    #: than one suits long epochs, whose best weights often lie between two epoch ends.
    evals_per_epoch: int = option(1, metavar="N", help=EVALS_PER_EPOCH_HELP)
    threads: int | None = option(None, help="torch intra-op threads (default: all cores)")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.head_lr is None or 0 < self.head_lr < 1, f"head_lr must be in (0, 1), got {self.head_lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (8 <= self.max_length <= 512, f"max_length must be in [8, 512], got {self.max_length}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1], got {self.layer_decay}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (
                self.max_train_examples is None or self.max_train_examples >= 1,
                f"max_train_examples must be >= 1, got {self.max_train_examples}",
            ),
            (self.metric_for_best in METRICS_FOR_BEST, f"unknown metric {self.metric_for_best!r}"),
            (0 < self.dev_threshold < 1, f"dev_threshold must be in (0, 1), got {self.dev_threshold}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"),
            (self.evals_per_epoch >= 1, f"evals_per_epoch must be >= 1, got {self.evals_per_epoch}"),
            (bool(self.output_dir), "output_dir must be set"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> TeacherConfig:
        """A preset's values, then every override that is not None."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layerwise_param_groups(
    model: Any, lr: float, decay: float, weight_decay: float, head_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Encoder layer i (1-based, of L) gets lr * decay^(L - i); the embeddings, below layer 1,
    get lr * decay^L; the pooler and classifier head get ``head_lr`` (default lr). Biases and
    LayerNorm weights get no weight decay. Works for any model whose layers are named
    ``...layer.<i>...``.
    """
    num_layers = int(model.config.num_hidden_layers)
    layer_re = re.compile(r"\.layers?\.(\d+)\.")
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        match = layer_re.search(name)
        if match:
            group_lr = lr * decay ** (num_layers - int(match.group(1)) - 1)
        elif "embeddings" in name:
            group_lr = lr * decay**num_layers
        else:  # above the encoder: the pooler and the classifier head
            group_lr = head_lr or lr
        no_decay = name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
        key = (group_lr, 0.0 if no_decay else weight_decay)
        groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), params in sorted(groups.items())]


def train_teacher(config: TeacherConfig) -> dict[str, Any]:
    """Run the recipe; returns the metrics that are also written to ``metrics.json``."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from kdserve.core.data import load_dataset
    from kdserve.train.batching import bucketed_batches
    from kdserve.train.checkpoint import load_classifier, save_classifier
    from kdserve.train.common import pad_batch, resolve_device, set_seed, write_json
    from kdserve.train.evaluate import predict_logits, score_dev
    from kdserve.train.loop import LoopConfig, run_training
    from kdserve.train.pooling import pooling_of

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    device = resolve_device(config.device)
    data = load_dataset(config.data)
    train_rows = list(data.train)
    if config.max_train_examples and len(train_rows) > config.max_train_examples:
        train_rows = random.Random(config.seed).sample(train_rows, config.max_train_examples)
    log.info("data: %s; training on %d examples", data.summary(), len(train_rows))

    multi = data.problem_type == "multi_label"
    # single-label checkpoints stay byte-for-byte as before: only a multi-label one records its type
    model, tokenizer = load_classifier(
        config.model, labels=data.labels, problem_type="multi_label" if multi else None, pooling=config.pooling
    )
    if config.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)
    with_types = "token_type_ids" in tokenizer.model_input_names
    train_ids = tokenizer([t for t, _ in train_rows], truncation=True, max_length=config.max_length)["input_ids"]
    train_lengths = [len(s) for s in train_ids]
    train_labels = [y for _, y in train_rows]
    val_texts = [t for t, _ in data.validation]
    val_labels = [y for _, y in data.validation]

    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        layerwise_param_groups(model, config.lr, config.layer_decay, config.weight_decay, config.head_lr),
        lr=config.lr,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def step(batch_idx: Sequence[int], epoch: int) -> Any:
        """The teacher's loss step: cross-entropy on the gold labels; multi-label, binary
        cross-entropy per category against the targets, which may be soft (annotator vote shares)."""
        batch = pad_batch([train_ids[i] for i in batch_idx], tokenizer.pad_token_id, with_types)
        batch = {k: v.to(device) for k, v in batch.items()}
        if multi:
            targets = torch.tensor([train_labels[i] for i in batch_idx], dtype=torch.float32, device=device)
            logits = model(**batch).logits
            return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
        labels = torch.tensor([train_labels[i] for i in batch_idx], device=device)
        return model(**batch, labels=labels).loss

    def evaluate() -> tuple[Any, None]:
        logits, eval_rate = predict_logits(
            model, tokenizer, val_texts, config.max_length, config.eval_batch_size, device
        )
        scores = score_dev(
            logits,
            val_labels,
            data.labels,
            data.problem_type,
            metric_for_best=config.metric_for_best,
            threshold=config.dev_threshold,
            examples_per_s=eval_rate,
        )
        return scores, None

    trained = run_training(
        model,
        optimizer,
        scheduler,
        lambda epoch: bucketed_batches(train_lengths, config.batch_size, rng, config.pool_batches),
        step,
        evaluate,
        lambda: save_classifier(model, tokenizer, data.labels, out),
        LoopConfig(
            epochs=config.epochs,
            max_grad_norm=config.grad_clip,
            evals_per_epoch=config.evals_per_epoch,
            metric_for_best=config.metric_for_best,
            name="teacher",
        ),
    )

    best = trained.best
    result = {
        "model": config.model,
        "data": data.source,
        "labels": list(data.labels),
        "problem_type": data.problem_type,
        "dev_threshold": config.dev_threshold if multi else None,
        "pooling": pooling_of(model),
        "train_examples": len(train_rows),
        "validation_examples": len(val_texts),
        "best_epoch": best["epoch"],
        "best_at": best["at"],
        "metric_for_best": config.metric_for_best,
        "validation": best["metrics"],
        "history": trained.history,
        "evaluations": trained.evaluations,
        "train_seconds": trained.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json(out / "metrics.json", result)
    write_json(out / "training_config.json", config.to_dict())
    return result
