"""Distil a teacher into a student: ``kdserve distill``.

Tang et al. 2019: enlarge the training set into a transfer set (masking, POS-guided
replacement, n-gram sampling), let the teacher label it once (logits cached on disk), and
train the student on alpha * hard + (1 - alpha) * soft, with alpha constant or scheduled per
epoch. ``no_teacher`` trains the same student on the gold labels alone: the baseline every
distillation paper reports. The Transformer student can add TinyBERT/PKD layer losses.

This module is the recipe (transfer set, student, loss step, evaluation); the epochs, clipping,
dev passes, best weights and the EMA / fixed-column hooks run in the shared ``kdserve.train.loop``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError
from kdserve.core.options import option
from kdserve.train.evaluate import DEV_THRESHOLD_HELP, METRIC_FOR_BEST_HELP, METRICS_FOR_BEST
from kdserve.train.teacher import EVALS_PER_EPOCH_HELP

log = logging.getLogger("kdserve.train")

STUDENTS = ("bilstm", "transformer", "textcnn")
#: The soft losses each problem type allows: softmax KL/CE only make sense over exclusive
#: classes; per-category sigmoids take logit MSE or BCE against the teacher's sigmoid at T.
SOFT_LOSSES = {"single_label": ("mse", "kl", "ce"), "multi_label": ("mse", "bce")}
#: Augmentation ablation levels (Tang et al. table 3 style): which operations are on.
AUGMENT_LEVELS: dict[str, tuple[float, float, float]] = {  # (p_mask, p_pos, p_ng)
    "none": (0.0, 0.0, 0.0),
    "mask": (0.1, 0.0, 0.0),
    "mask+ngram": (0.1, 0.0, 0.25),
    "all": (0.1, 0.1, 0.25),
}
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 3, "max_train_examples": 5_000, "n_iter": 4, "max_length": 64},
    # an n_iter-10 SST-2 transfer set is 510k texts: four dev passes an epoch, not one
    "full": {"epochs": 6, "max_train_examples": None, "n_iter": 10, "max_length": 128, "evals_per_epoch": 4},
}
#: Per-student defaults that a preset does not override: the learning rates each model likes.
STUDENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "bilstm": {"lr": 1e-3, "batch_size": 64},
    "textcnn": {"lr": 1e-3, "batch_size": 64},
    "transformer": {"lr": 1e-4, "batch_size": 32},
}
#: A preset's best measured recipe for one student, over the preset and the student's defaults.
#: full + BiLSTM: the 89.56% SST-2 dev run (docs/RESULTS.md, "The BiLSTM at 89.56%"; a second
#: training seed gave 88.53%): a fixed GloVe channel, GloVe's 100k words, a weight average and a
#: linear decay over 3 epochs. The quick preset keeps its plain recipe: on 24k transfer texts the
#: same flags cost 3 points (RESULTS, "Quick preset: student recipes tried").
PRESET_STUDENT_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("full", "bilstm"): {
        "epochs": 3,
        "lr_schedule": "linear",
        "ema_decay": 0.9995,
        "static_channel": True,
        "vector_vocab": 100_000,
    },
}


@dataclass
class DistillConfig:
    """Everything that defines a distillation run; written next to the student."""

    # Fields declared with option() are the `kdserve distill` flags (kdserve.core.options): a new
    # flag is one such field with its help text. Plain fields are settable from Python only.
    #: a teacher checkpoint or bundle folder, or several (multi-teacher distillation,
    #: ``kdserve.train.multi_teacher``); one teacher is kept as a plain string
    teacher: str | list[str] | None = option(
        required=False,
        repeat=True,
        parse=lambda values, flag: values[0] if len(values) == 1 else values,
        help="teacher checkpoint or bundle folder (from `kdserve train teacher` / `kdserve export`); "
        "repeat for multi-teacher distillation",
    )
    data: DatasetSpec = option(title="data")
    output_dir: str = option(flag="--output", help="student checkpoint folder to write")
    student: Literal["bilstm", "transformer", "textcnn"] = option("bilstm", required=True)
    preset: str | None = option(None, choices=tuple(PRESETS), cli_default="quick")
    no_teacher: bool = option(False, switch=True, help="hard labels only: the no-distillation baseline")
    epochs: int = option(3)
    lr: float = option(1e-3)
    #: "constant", or "linear": decay to 0 over all training steps (steadier last epochs)
    lr_schedule: Literal["constant", "linear"] = option(
        "constant", help="learning rate: constant, or linear decay to 0"
    )
    #: which validation metric picks the saved epoch: macro_f1 for imbalanced data, macro_auc or
    #: macro_ap for moderation (threshold-free: the policy threshold is chosen at export)
    metric_for_best: Literal["accuracy", "macro_f1", "micro_f1", "macro_auc", "macro_ap"] = option(
        "accuracy", help=METRIC_FOR_BEST_HELP
    )
    #: multi-label: the fixed threshold of the dev F1 (never tuned on the rows it scores)
    dev_threshold: float = option(0.5, help=DEV_THRESHOLD_HELP)
    batch_size: int = option(64)
    max_length: int = option(128)
    max_train_examples: int | None = option(None)
    alpha: str = option(
        "constant:0.0", help="constant:A | easy-to-hard | linear:START:END:EPOCHS (weight of the hard loss)"
    )
    soft: Literal["mse", "kl", "ce", "bce"] = option(
        "mse",
        help="soft loss: logit MSE, or KL / CE at --temperature (single-label), or per-category BCE against "
        "the teacher's sigmoid at --temperature (multi-label)",
    )
    temperature: float = option(1.0)
    augment: str = option("all", choices=tuple(AUGMENT_LEVELS), help="transfer-set augmentation")
    n_iter: int = option(10, help="augmented copies per example")
    glove: bool = option(True, help="GloVe-50d word vectors")
    #: BiLSTM/TextCNN: word vectors from the teacher's input embeddings (``kdserve.train.teacher_vectors``;
    #: 384-d for MiniLM) instead of GloVe-50d
    teacher_embeddings: bool = option(
        False,
        switch=True,
        help="BiLSTM/TextCNN: word vectors from the teacher's input embeddings (384-d for MiniLM) instead of GloVe",
    )
    vocab_size: int = option(
        30_000, help="BiLSTM/TextCNN: word vocabulary size, the training texts' most frequent words (default {default})"
    )
    #: BiLSTM/TextCNN: also give the word vocabulary GloVe's N most frequent words that the training
    #: texts lack, so a word first met at serving time keeps a pretrained vector instead of [UNK]
    vector_vocab: int = option(
        0,
        metavar="N",
        help="BiLSTM/TextCNN: add GloVe's N most frequent words the training texts lack to the "
        "vocabulary, so words unseen in training keep a pretrained vector (default {default})",
    )
    #: BiLSTM/TextCNN: Kim (2014)'s multichannel input, the word vectors twice over with the second
    #: copy held fixed, so a word the training texts lack (``vector_vocab``) still sits where the
    #: tuned words' fixed half does. Doubles embedding_dim; the saved student is an ordinary one.
    static_channel: bool = option(
        False,
        help="BiLSTM/TextCNN: the word vectors twice, one copy tuned and one held fixed (Kim 2014's "
        "multichannel input), so words added by --vector-vocab stay comparable to the tuned ones",
    )
    student_layers: int = option(2, help="transformer student layers (1-4)")
    init_from_teacher: bool = True
    #: Fields of the student's config dataclass to override (e.g. ``{"hidden_size": 150}`` for a
    #: faster BiLSTM, ``{"num_filters": 200}`` for a wider TextCNN); not for a teacher-initialised
    #: Transformer, whose shape is the teacher's.
    student_options: dict[str, Any] = option(
        default_factory=dict,
        flag="--student-option",
        help="override a field of the student's config, e.g. hidden_size=150 or num_filters=200 "
        "(repeatable; VALUE is read as JSON, else as a string)",
    )
    intermediate_weight: float = option(0.0, help="weight of hidden-state/attention losses")
    cache_dir: str | None = option("runs/cache", help="teacher-logit cache (default {default})")
    #: An exported bundle of the teacher to label the transfer set with (ONNX Runtime; faster on a
    #: CPU); None labels with the PyTorch checkpoint.
    teacher_bundle: str | None = option(
        None,
        help="label the transfer set with this exported teacher bundle (ONNX "
        "Runtime, faster on a CPU) instead of the PyTorch checkpoint",
    )
    #: who runs the teacher over the transfer set (``kdserve.train.transfer.LABEL_ENGINES``): this
    #: process, local worker processes or Ray Data. All give identical logits (one cache entry);
    #: local and ray run bundles (a bundle teacher, or ``teacher_bundle`` for a checkpoint).
    label_engine: Literal["inline", "local", "ray"] = option(
        "inline",
        help="who labels the transfer set: inline (this process; a checkpoint in PyTorch, a bundle in ONNX "
        "Runtime), local (a bundle on worker processes, one a core) or ray (a bundle on Ray Data actors: a "
        "local instance, or the cluster at RAY_ADDRESS); the same logits and cache either way. local and ray "
        "need a bundle teacher or --teacher-bundle (default {default})",
    )
    label_workers: int = option(
        0,
        metavar="N",
        help="--label-engine local or ray: worker processes or Ray actors (default 0: one a core)",
    )
    #: several teachers: one weight each (normalised to sum 1; default equal)
    teacher_weights: list[float] | None = option(
        None, metavar="W1,W2", help="several teachers: one weight each, e.g. 0.7,0.3 (default: equal)"
    )
    #: several teachers: "prob" averages their probabilities (stored as log-probabilities: use
    #: --soft kl), "logit" averages their logits
    teacher_combine: Literal["prob", "logit"] = option(
        "prob", help="several teachers: average probabilities (prob; use --soft kl) or logits (logit)"
    )
    #: files of unlabelled texts (production traffic, the shadow log) added to the transfer set,
    #: deduplicated against the labelled data and labelled by the teacher(s)
    transfer_data: list[str] = option(
        default_factory=list,
        repeat=True,
        metavar="FILE",
        help="unlabelled texts (a shadow-route JSONL kept with --log-texts, or a txt/csv/tsv/jsonl file) "
        "added to the transfer set, deduplicated and labelled by the teacher(s); repeatable",
    )
    seed: int = option(13)
    #: seed of the augmentation alone (default: ``seed``): vary ``seed`` with this fixed to rerun the
    #: training's randomness (init, order, dropout) on the same, already-labelled transfer set
    augment_seed: int | None = option(
        None,
        metavar="N",
        help="seed of the augmentation alone (default: --seed); fix it to vary --seed on the same, "
        "already-labelled transfer set",
    )
    #: > 0: evaluate and save an exponential moving average of the weights (e.g. 0.9995) instead of
    #: the last weights; each dev pass also records the raw weights' accuracy, for comparison
    ema_decay: float = option(
        0.0, metavar="D", help="evaluate and save a moving average of the weights (e.g. 0.9995; default 0: off)"
    )
    device: str = option("auto")
    threads: int | None = option(None)
    #: validation passes per epoch (the last at its end); the best of all of them is kept. More
    #: than one suits a large transfer set, whose long epochs overshoot the best weights.
    evals_per_epoch: int = option(1, metavar="N", help=EVALS_PER_EPOCH_HELP)
    weight_decay: float = option(
        0.01, help="AdamW decoupled weight decay of the student and any layer-loss projections (default {default})"
    )
    grad_clip: float = option(
        5.0, help="gradients are clipped to this global L2 norm before each optimizer step (default {default})"
    )
    eval_batch_size: int = option(256, help="batch size of the validation passes: speed only (default {default})")
    pool_batches: int = option(
        50, help="length-bucketing pool, in batches: texts of similar length share a batch (default {default})"
    )

    def __post_init__(self) -> None:
        from kdserve.train.losses import make_alpha_schedule

        self._check_teachers()
        if self.student not in STUDENTS:
            raise ConfigError(f"unknown student {self.student!r}; choose one of {', '.join(STUDENTS)}")
        if self.augment not in AUGMENT_LEVELS:
            raise ConfigError(f"unknown augment level {self.augment!r}; choose one of {', '.join(AUGMENT_LEVELS)}")
        if not self.no_teacher and not self.teacher:
            raise ConfigError("a teacher checkpoint is required unless no_teacher is set")
        # vector_vocab and static_channel act on pretrained word vectors of a word-level student
        word_vectors = self.student != "transformer" and (self.glove or self.teacher_embeddings)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.pool_batches >= 1, f"pool_batches must be >= 1, got {self.pool_batches}"),
            (self.evals_per_epoch >= 1, f"evals_per_epoch must be >= 1, got {self.evals_per_epoch}"),
            (0 < self.lr < 10, f"lr must be in (0, 10), got {self.lr}"),
            (
                self.lr_schedule in ("constant", "linear"),
                f"lr_schedule must be constant or linear, got {self.lr_schedule!r}",
            ),
            (self.metric_for_best in METRICS_FOR_BEST, f"unknown metric {self.metric_for_best!r}"),
            (0 < self.dev_threshold < 1, f"dev_threshold must be in (0, 1), got {self.dev_threshold}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (4 <= self.max_length <= 512, f"max_length must be in [4, 512], got {self.max_length}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (
                self.soft in SOFT_LOSSES[self.data.problem_type],
                f"a {self.data.problem_type} student's soft loss must be one of "
                f"{', '.join(SOFT_LOSSES[self.data.problem_type])}, got {self.soft!r}",
            ),
            (self.n_iter >= 0, f"n_iter must be >= 0, got {self.n_iter}"),
            (self.vocab_size >= 10, f"vocab_size must be >= 10, got {self.vocab_size}"),
            (self.vector_vocab >= 0, f"vector_vocab must be >= 0, got {self.vector_vocab}"),
            (
                not self.vector_vocab or word_vectors,
                "vector_vocab needs a word-level student with pretrained vectors (GloVe or teacher embeddings)",
            ),
            (
                not self.static_channel or word_vectors,
                "static_channel needs a word-level student with pretrained vectors (GloVe or teacher embeddings)",
            ),
            (1 <= self.student_layers <= 4, f"student_layers must be in [1, 4], got {self.student_layers}"),
            (self.intermediate_weight >= 0, f"intermediate_weight must be >= 0, got {self.intermediate_weight}"),
            (
                self.intermediate_weight == 0 or (self.student == "transformer" and not self.no_teacher),
                "intermediate-layer distillation needs the transformer student and a teacher",
            ),
            (
                not (self.teacher_embeddings and self.glove),
                "teacher_embeddings replaces GloVe: drop glove (--no-glove)",
            ),
            (
                not self.teacher_embeddings or self.student != "transformer",
                "teacher_embeddings is for the BiLSTM and TextCNN (a Transformer from the teacher has its embeddings)",
            ),
            (
                self.max_train_examples is None or self.max_train_examples >= 1,
                f"max_train_examples must be >= 1, got {self.max_train_examples}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            make_alpha_schedule(self.alpha)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.student_options:
            self._check_student_options()

    @property
    def teachers(self) -> list[str]:
        """The teacher folders, in order (empty without a teacher)."""
        if not self.teacher:
            return []
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

    @property
    def primary_teacher(self) -> str | None:
        """The first teacher: the one whose weights, vocabulary or layers a student may start from."""
        return self.teachers[0] if self.teachers else None

    def _check_teachers(self) -> None:
        if isinstance(self.teacher, (list, tuple)):
            teachers = [str(t) for t in self.teacher]
            if len(set(teachers)) != len(teachers):
                raise ConfigError(f"a teacher is given twice: {teachers}")
            # one teacher stays a plain string, so a single --teacher runs and records exactly as before
            self.teacher = teachers[0] if len(teachers) == 1 else (teachers or None)
        self.transfer_data = [str(p) for p in self.transfer_data or []]
        if self.teacher_combine not in ("prob", "logit"):
            raise ConfigError(f"teacher_combine must be prob or logit, got {self.teacher_combine!r}")
        n = len(self.teachers)
        if self.teacher_weights is not None:
            from kdserve.train.multi_teacher import normalised_weights

            self.teacher_weights = [float(w) for w in self.teacher_weights]
            normalised_weights(self.teacher_weights, max(n, 1))
        if n > 1 and self.teacher_bundle:
            raise ConfigError("teacher_bundle applies to a single teacher; pass each bundle as a --teacher instead")
        if self.no_teacher and (self.transfer_data or n > 1):
            raise ConfigError("transfer data and several teachers need a teacher to label them; drop --no-teacher")
        self._check_label_engine()

    def _check_label_engine(self) -> None:
        """local and ray run bundles: a checkpoint teacher needs its export (``teacher_bundle``).
        Checked here, before augmentation, so a wrong combination fails in a second."""
        import importlib.util

        from kdserve.train.multi_teacher import is_bundle
        from kdserve.train.transfer import LABEL_ENGINES, needs_bundle_message

        engine = self.label_engine
        if engine not in LABEL_ENGINES:
            raise ConfigError(f"label_engine must be one of {', '.join(LABEL_ENGINES)}, got {engine!r}")
        if isinstance(self.label_workers, bool) or not isinstance(self.label_workers, int) or self.label_workers < 0:
            raise ConfigError(f"label_workers must be an integer >= 0 (0: one a core), got {self.label_workers!r}")
        if engine == "inline" or self.no_teacher:
            return
        # a folder that does not exist is left to check_teachers, which names it
        labelled_by = [self.teacher_bundle] if self.teacher_bundle else self.teachers
        for folder in labelled_by:
            if Path(folder).is_dir() and not is_bundle(folder):
                raise ConfigError(needs_bundle_message(engine, folder, several=len(self.teachers) > 1))
        if engine == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("--label-engine ray needs Ray: pip install 'kdserve[scale]'")

    def _check_student_options(self) -> None:
        """Fail before any data is read: unknown keys, values the student config refuses."""
        from kdserve.train.student_configs import BiLSTMConfig, TextCNNConfig, TransformerStudentConfig

        if self.student == "transformer" and self.init_from_teacher:
            raise ConfigError(
                "student options do not apply to a Transformer initialised from the teacher "
                "(its shape is the teacher's)"
            )
        if self.glove and self.student_options.get("embedding_dim", 50) != 50:
            raise ConfigError("GloVe vectors are 50-d: embedding_dim must be 50 with --glove (or use --no-glove)")
        cls: Any = {"bilstm": BiLSTMConfig, "textcnn": TextCNNConfig, "transformer": TransformerStudentConfig}[
            self.student
        ]
        allowed = {f.name for f in dataclasses.fields(cls)} - {"vocab_size", "num_classes"}
        unknown = sorted(set(self.student_options) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown {self.student} student option(s) {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(allowed))}"
            )
        try:
            cls(vocab_size=10, num_classes=2, **self.student_options)
        except TypeError as exc:
            raise ConfigError(f"bad {self.student} student option: {exc}") from None

    @classmethod
    def from_preset(cls, preset: str, student: str, **overrides: Any) -> DistillConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if student not in STUDENTS:
            raise ConfigError(f"unknown student {student!r}; choose one of {', '.join(STUDENTS)}")
        # teacher=None is meaningful (the --no-teacher baseline), so it is not dropped with the unset overrides.
        values: dict[str, Any] = {
            "teacher": None,
            **PRESETS[preset],
            **STUDENT_DEFAULTS[student],
            **PRESET_STUDENT_DEFAULTS.get((preset, student), {}),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("teacher_embeddings") and overrides.get("glove") is None:
            values["glove"] = False  # the teacher's vectors replace the preset's GloVe
        if not values.get("glove", True):
            # the preset's GloVe input recipe has no GloVe to act on: dropped unless asked for
            for name, off in (("vector_vocab", 0), ("static_channel", False)):
                if overrides.get(name) is None:
                    values[name] = off
        return cls(preset=preset, student=student, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def predict_student(model: Any, ids: list[list[int]], batch_size: int, device: Any) -> Any:
    """Student logits [N, C] in input order."""
    import numpy as np
    import torch

    from kdserve.train.batching import sorted_batches
    from kdserve.train.common import pad_batch

    model.eval()
    out: np.ndarray | None = None
    with torch.inference_mode():
        for batch_idx in sorted_batches([len(s) for s in ids], batch_size):
            batch = pad_batch([ids[i] or [0] for i in batch_idx], 0, with_token_types=False)
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
            out[batch_idx] = logits
    model.train()
    assert out is not None
    return out


def _transfer_set(config: DistillConfig, rows: list[tuple[str, int]]) -> list[tuple[str, int | None]]:
    p_mask, p_pos, p_ng = AUGMENT_LEVELS[config.augment]
    if config.no_teacher or config.augment == "none" or config.n_iter == 0:
        return list(rows)  # augmented copies carry no gold label: only a teacher can label them
    from kdserve.train.augment import AugmentConfig, Augmenter, spacy_tagger, whitespace_tagger

    augment_config = AugmentConfig(
        p_mask=p_mask,
        p_pos=p_pos,
        p_ng=p_ng,
        n_iter=config.n_iter,
        seed=config.seed if config.augment_seed is None else config.augment_seed,
    )
    tagger = spacy_tagger() if p_pos > 0 else whitespace_tagger
    start = time.perf_counter()
    transfer = Augmenter(augment_config, tagger).transfer_set(rows)
    log.info("transfer set: %d originals -> %d texts (%.0f s)", len(rows), len(transfer), time.perf_counter() - start)
    return transfer


def distill(config: DistillConfig) -> dict[str, Any]:
    """Run the recipe; returns the metrics also written to ``metrics.json``."""
    import numpy as np
    import torch

    from kdserve.core.data import load_dataset
    from kdserve.train.batching import bucketed_batches
    from kdserve.train.common import WeightAverage, pad_batch, resolve_device, set_seed, write_json
    from kdserve.train.distill_setup import (
        FixedColumns,
        build_student_for,
        build_tokenizer,
        check_teacher_problem_type,
        intermediate_layer_loss,
    )
    from kdserve.train.evaluate import score_dev
    from kdserve.train.loop import LoopConfig, run_training
    from kdserve.train.losses import distillation_loss, make_alpha_schedule
    from kdserve.train.multi_teacher import check_primary, check_teachers, label_transfer
    from kdserve.train.student_tokenizers import encode_batch, save_tokenizer
    from kdserve.train.students import count_parameters, save_student
    from kdserve.train.transfer_data import load_transfer_texts

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    device = resolve_device(config.device)
    data = load_dataset(config.data)
    rows = list(data.train)
    if config.max_train_examples and len(rows) > config.max_train_examples:
        rows = random.Random(config.seed).sample(rows, config.max_train_examples)
    extra = None
    if not config.no_teacher:
        check_teachers(config.teachers, data.labels)
        check_teacher_problem_type(
            config.teachers + [config.teacher_bundle] * bool(config.teacher_bundle), data.problem_type
        )
        check_primary(config)
        # read and check every transfer file before the slow part: a bad file fails in seconds
        known = [t for t, _ in data.train] + [t for t, _ in data.validation]
        extra = load_transfer_texts(config.transfer_data, known) if config.transfer_data else None

    transfer = _transfer_set(config, rows)
    if extra is not None:
        transfer += [(text, None) for text in extra.texts]  # no gold label: the teachers' targets only
    texts = [t for t, _ in transfer]
    targets = None
    if not config.no_teacher:
        targets = torch.from_numpy(np.ascontiguousarray(label_transfer(config, texts, data.labels)))
    # production texts' words join the student's vocabulary: those are the words it will be served
    tokenizer = build_tokenizer(config, [t for t, _ in rows] + (extra.texts if extra is not None else []))
    ids = encode_batch(tokenizer, texts, config.max_length)
    val_ids = encode_batch(tokenizer, [t for t, _ in data.validation], config.max_length)
    val_labels = [y for _, y in data.validation]
    multi = data.problem_type == "multi_label"
    if multi:
        # [N, C] float targets (soft where the data has vote shares); augmented copies have none
        blank = (0.0,) * len(data.labels)
        gold = torch.tensor([blank if y is None else y for _, y in transfer], dtype=torch.float32)
        has_gold = torch.tensor([y is not None for _, y in transfer])
    else:
        gold = torch.tensor([-1 if y is None else y for _, y in transfer])
        has_gold = gold >= 0

    model, student_config = build_student_for(config, tokenizer, len(data.labels))
    model.to(device)
    fixed = FixedColumns(model.embedding, student_config.embedding_dim // 2) if config.static_channel else None
    layer_loss = intermediate_layer_loss(config, model, device) if config.intermediate_weight > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    if layer_loss is not None:
        params += list(layer_loss.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(ids) // config.batch_size)  # bucketed batches hold at most batch_size rows
    total_steps = max(1, steps_per_epoch * config.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        (lambda step: max(0.0, 1.0 - step / total_steps)) if config.lr_schedule == "linear" else (lambda step: 1.0),
    )
    schedule = make_alpha_schedule("constant:1.0" if config.no_teacher else config.alpha)
    rng = random.Random(config.seed)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    kept = average.model if average is not None else model  # the weights evaluated and saved
    lengths = [len(s) for s in ids]

    def save() -> None:
        save_student(kept, student_config, out)
        save_tokenizer(tokenizer, out)
        write_json(out / "labels.json", list(data.labels))

    def step(batch_idx: Sequence[int], epoch: int) -> Any:
        """The distillation loss step: alpha * hard + (1 - alpha) * soft, plus any layer losses."""
        alpha = schedule(epoch)
        batch = pad_batch([ids[i] or [0] for i in batch_idx], 0, with_token_types=False)
        input_ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        labels = gold[batch_idx].to(device)
        has_label = has_gold[batch_idx].to(device)
        if layer_loss is None:
            logits = model(input_ids, mask)
        else:
            logits, states, attentions = model.forward_with_states(input_ids, mask)
        loss = distillation_loss(
            logits,
            None if targets is None else targets[batch_idx].to(device),
            (labels if multi else labels.clamp(min=0)) if alpha > 0 else None,
            alpha,
            config.temperature,
            config.soft,
            has_label=has_label if alpha > 0 else None,
            multi_label=multi,
        )
        if layer_loss is not None:
            loss = loss + config.intermediate_weight * layer_loss(input_ids, mask, states, attentions)
        return loss

    def score(logits: Any, rate: float) -> Any:
        return score_dev(
            logits,
            val_labels,
            data.labels,
            data.problem_type,
            metric_for_best=config.metric_for_best,
            threshold=config.dev_threshold,
            examples_per_s=rate,
        )

    def evaluate() -> tuple[Any, dict[str, float] | None]:
        eval_start = time.perf_counter()
        val_logits = predict_student(kept, val_ids, config.eval_batch_size, device)
        metrics = score(val_logits, len(val_ids) / (time.perf_counter() - eval_start))
        extra = None
        if average is not None:  # the raw weights' scores beside the average's, for comparison
            raw = score(predict_student(model, val_ids, config.eval_batch_size, device), 0.0)
            extra = {"raw_validation_accuracy": raw.accuracy, "raw_validation_macro_f1": raw.macro_f1}
        return metrics, extra

    # hook order matters: the average must see the fixed columns already restored
    hooks: list[Callable[[], None]] = []
    if fixed is not None:
        hooks.append(fixed.restore)
    if average is not None:
        hooks.append(lambda: average.update(model))

    trained = run_training(
        model,
        optimizer,
        scheduler,
        lambda epoch: bucketed_batches(lengths, config.batch_size, rng, config.pool_batches),
        step,
        evaluate,
        save,
        LoopConfig(
            epochs=config.epochs,
            max_grad_norm=config.grad_clip,
            evals_per_epoch=config.evals_per_epoch,
            metric_for_best=config.metric_for_best,
            name=config.student,
        ),
        clip_params=params,
        after_optimizer_step=hooks,
        epoch_fields=lambda epoch: {"alpha": schedule(epoch)},
    )

    best = trained.best
    result = {
        "student": config.student,
        "teacher": None if config.no_teacher else config.teacher,
        "data": data.source,
        "labels": list(data.labels),
        "problem_type": data.problem_type,
        "dev_threshold": config.dev_threshold if multi else None,
        "train_examples": len(rows),
        "transfer_examples": len(transfer),
        "transfer_data": None if extra is None else extra.summary(),
        "best_epoch": best["epoch"],
        "best_at": best["at"],
        "metric_for_best": config.metric_for_best,
        "validation": best["metrics"],
        "history": trained.history,
        "evaluations": trained.evaluations,
        "parameters": count_parameters(model),
        "checkpoint_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file()),
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(out / "metrics.json", result)
    write_json(out / "distill_config.json", config.to_dict())
    return result
