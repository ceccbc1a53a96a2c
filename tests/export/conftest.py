"""Fixtures for the export tests: tiny but trained teacher and students saved as real checkpoints,
and their exported bundles (built once per session; tests that damage a bundle copy it first)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_sentiment_csv

LABELS = ("negative", "positive")
MAX_LENGTH = 32
STUDENT_KINDS = ("bilstm", "textcnn", "transformer")
TINY_STUDENTS: dict[str, dict[str, Any]] = {
    "bilstm": {"embedding_dim": 16, "hidden_size": 16, "classifier_hidden": 16},
    "textcnn": {"embedding_dim": 16, "num_filters": 8},
    "transformer": {
        "num_layers": 1,
        "hidden_size": 16,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
    },
}


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Any:
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP waits dominate."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def sentiment_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A separable negative/positive CSV: 200 rows, 20 held out as validation."""
    from kdserve.core.data import DatasetSpec

    path = write_sentiment_csv(tmp_path_factory.mktemp("data") / "sentiment.csv", 200)
    return DatasetSpec(str(path))


def _fit(model: Any, batches: list[tuple[Any, ...]], steps: int = 60, lr: float = 1e-2) -> None:
    """A few Adam steps on the separable data, so the models are confident and int8 cannot flip them."""
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        *inputs, labels = batches[step % len(batches)]
        logits = model(*inputs)
        logits = getattr(logits, "logits", logits)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _batches(ids: list[list[int]], labels: list[int], pad: int, types: bool = False) -> list[tuple[Any, ...]]:
    import torch

    from kdserve.train.common import pad_batch

    out = []
    for start in range(0, len(ids), 32):
        batch = pad_batch(ids[start : start + 32], pad, types)
        inputs = [batch["input_ids"], batch["attention_mask"]] + ([batch["token_type_ids"]] if types else [])
        out.append((*inputs, torch.tensor(labels[start : start + 32])))
    return out


def _record_training(folder: Path, spec: Any, name: str) -> None:
    """What kdserve train/distill write next to a checkpoint: max_length and the data spec."""
    (folder / name).write_text(json.dumps({"max_length": MAX_LENGTH, "data": spec.__dict__}, default=list))


def make_teacher(tiny_bert: Path, spec: Any, folder: Path, pooling: str | None = None) -> Path:
    """The shared 2-layer hidden-32 BERT with a 2-label head (``pooling`` as kdserve.train.pooling),
    briefly fine-tuned on ``spec``, saved in ``folder`` as ``kdserve train teacher`` saves it."""
    import torch

    from kdserve.core.data import load_dataset
    from kdserve.train.checkpoint import load_classifier, save_classifier

    torch.manual_seed(0)
    model, tokenizer = load_classifier(str(tiny_bert), labels=LABELS, pooling=pooling)
    rows = load_dataset(spec).train
    ids = tokenizer([t for t, _ in rows], truncation=True, max_length=MAX_LENGTH)["input_ids"]
    _fit(model, _batches(ids, [y for _, y in rows], tokenizer.pad_token_id, types=True), lr=3e-3)
    save_classifier(model, tokenizer, LABELS, folder)
    _record_training(folder, spec, "training_config.json")
    return folder


@pytest.fixture(scope="session")
def tiny_teacher_dir(tiny_bert_dir: Path, sentiment_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny teacher every export test shares ([CLS] pooler)."""
    return make_teacher(tiny_bert_dir, sentiment_data, tmp_path_factory.mktemp("teacher"))


def make_student(kind: str, folder: Path, spec: Any, train: bool = True, seed: int = 0) -> Path:
    """A tiny student of ``kind`` with a word tokenizer trained on the data, saved like kdserve distill does."""
    import torch

    from kdserve.core.data import load_dataset
    from kdserve.train.student_tokenizers import (
        encode_batch,
        save_tokenizer,
        train_word_tokenizer,
    )
    from kdserve.train.students import STUDENT_KINDS as KINDS
    from kdserve.train.students import build_student, save_student

    rows = load_dataset(spec).train
    tokenizer = train_word_tokenizer([t for t, _ in rows], vocab_size=100)
    config = KINDS[kind][0].from_dict(
        {"vocab_size": tokenizer.get_vocab_size(), "num_classes": len(LABELS), **TINY_STUDENTS[kind]}
    )
    torch.manual_seed(seed)
    model = build_student(kind, config)
    if train:
        _fit(model, _batches(encode_batch(tokenizer, [t for t, _ in rows], MAX_LENGTH), [y for _, y in rows], 0))
    save_student(model.eval(), config, folder)
    save_tokenizer(tokenizer, folder)
    (folder / "labels.json").write_text(json.dumps(list(LABELS)))
    _record_training(folder, spec, "distill_config.json")
    return folder


@pytest.fixture(scope="session")
def student_dirs(sentiment_data: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {kind: make_student(kind, tmp_path_factory.mktemp(kind), sentiment_data) for kind in STUDENT_KINDS}


@pytest.fixture(scope="session")
def export_config() -> Callable[..., Any]:
    """ExportConfig with test-sized defaults (small parity and calibration sets, avx2 preset fixed)."""
    from kdserve.export.config import ExportConfig

    def make(checkpoint: Path, output: Path, **overrides: Any) -> Any:
        values = {"parity_texts": 16, "calibration_examples": 32, "quant_preset": "avx512_vnni", "batch_size": 16}
        values.update(overrides)
        return ExportConfig(checkpoint=str(checkpoint), output_dir=str(output), **values)

    return make


@pytest.fixture(scope="session")
def bundles(
    tiny_teacher_dir: Path,
    student_dirs: dict[str, Path],
    export_config: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[Path]]:
    """kind -> [fp32 bundle, int8 bundle] for the teacher and every student kind, exported once."""
    from kdserve.export.pipeline import export_checkpoint

    out = tmp_path_factory.mktemp("bundles")
    result = {"teacher": export_checkpoint(export_config(tiny_teacher_dir, out, name="teacher"))}
    for kind, folder in student_dirs.items():
        result[kind] = export_checkpoint(export_config(folder, out, name=kind))
    return result


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / bundle.name
    shutil.copytree(bundle, target)
    return target
