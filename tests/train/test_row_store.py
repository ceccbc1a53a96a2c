"""kdserve.train.row_store: a rows-alone teacher's logits kept per text, reused bit for bit."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdserve.train.row_store import STORE_FILE, digests, label_with_store


class Scorer:
    """A deterministic labeller that records what it was asked to label."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.array([[len(t), t.count("a"), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)


def test_digests_are_sha256() -> None:
    assert digests(["abc"])[0].tobytes().hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert digests([]).shape == (0, 32)


def test_only_new_texts_are_labelled_and_the_answer_is_exact(tmp_path: Path) -> None:
    scorer = Scorer()
    first, labelled, reused = label_with_store(tmp_path, ["a cat", "a dog", "a cat", "bird"], scorer)
    assert labelled == 3 and reused == 0 and scorer.seen == ["a cat", "a dog", "bird"]  # a repeated text once
    assert np.array_equal(first, Scorer()(["a cat", "a dog", "a cat", "bird"]))
    scorer.seen.clear()
    texts = ["bird", "a fish", "a cat", "a fish", "banana"]
    second, labelled, reused = label_with_store(tmp_path, texts, scorer)
    assert labelled == 2 and reused == 2 and scorer.seen == ["a fish", "banana"]
    assert np.array_equal(second, Scorer()(texts))
    scorer.seen.clear()
    third, labelled, reused = label_with_store(tmp_path, texts[::-1], scorer)  # all stored: nothing labelled
    assert labelled == 0 and reused == 5 and scorer.seen == [] and np.array_equal(third, second[::-1])
    with np.load(tmp_path / STORE_FILE, allow_pickle=False) as data:
        assert data["digests"].shape == (5, 32) and data["logits"].shape == (5, 3)


def test_an_unreadable_store_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / STORE_FILE).write_bytes(b"not a zip")
    scorer = Scorer()
    with caplog.at_level(logging.WARNING, logger="kdserve.train"):
        out, labelled, _ = label_with_store(tmp_path, ["x", "y"], scorer)
    assert labelled == 2 and np.array_equal(out, Scorer()(["x", "y"])) and "unreadable" in caplog.text
    assert label_with_store(tmp_path, ["y"], Scorer())[1] == 0  # rebuilt and used


def test_a_rows_alone_teacher_labels_each_text_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """teacher_logits with a real rows-alone bundle: the second transfer set labels only its new
    texts, and its logits equal labelling it afresh (no store) bit for bit; a batched teacher keeps
    the per-set cache only."""
    pytest.importorskip("torch")
    from kdserve.core.bundle import BundleModel, read_manifest, write_manifest
    from kdserve.train.transfer import teacher_logits
    from tests.bundles import build_tiny_bundle, sentiment_texts

    batched = build_tiny_bundle(tmp_path / "batched", name="teacher", kind="bilstm", seed=1)
    alone = shutil.copytree(batched, tmp_path / "alone")
    manifest = read_manifest(alone)
    manifest.extra["rows_alone"] = True
    write_manifest(alone, manifest)
    texts = [t for t, _ in sentiment_texts(60, seed=5)]
    first, second = texts[:40], texts[20:] + ["a text no set had before"]
    cache = tmp_path / "cache"
    teacher_logits(alone, first, 32, cache, batch_size=8)
    with caplog.at_level(logging.INFO, logger="kdserve.train"):
        got = teacher_logits(alone, second, 32, cache, batch_size=8)
    reused = sum(text in set(first) for text in second)
    assert f"{reused} of {len(second)} texts labelled before" in caplog.text
    assert f"teacher labelled {len(set(second) - set(first))} texts" in caplog.text
    fresh = teacher_logits(alone, second, 32, None, batch_size=8)
    assert np.array_equal(got, fresh)
    assert np.array_equal(got, BundleModel(alone).predict(second, batch_size=8))
    assert len(list(cache.glob("rows-*"))) == 1
    teacher_logits(batched, first, 32, tmp_path / "cache-batched", batch_size=8)
    assert not list((tmp_path / "cache-batched").glob("rows-*"))  # batched scores: no per-text reuse
