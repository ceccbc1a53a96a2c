"""Progress bars on the long waits: drawn on a terminal, absent otherwise, and never changing a result."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from kdserve.train.progress import bar, bundle_predict
from tests.bundles import sentiment_texts


class _Terminal(io.StringIO):
    """A stderr that says it is a TTY, so the bars draw into it."""

    def isatty(self) -> bool:
        return True


def _stderr(monkeypatch: pytest.MonkeyPatch, tty: bool) -> io.StringIO:
    """Replace stderr inside the test body (pytest's capture re-installs its own after fixture setup)."""
    stream = _Terminal() if tty else io.StringIO()  # a plain StringIO: CI, nohup, a pipe
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_a_bar_draws_rate_and_eta_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _stderr(monkeypatch, tty=True)
    assert list(bar(range(5), "labelling", "text", total=5)) == [0, 1, 2, 3, 4]
    drawn = terminal.getvalue()
    assert "labelling" in drawn and "5/5" in drawn and "text/s" in drawn


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _stderr(monkeypatch, tty=False)
    assert list(bar(iter("abc"), "labelling", "text", total=3)) == ["a", "b", "c"]
    assert pipe.getvalue() == ""


def test_bundle_scoring_with_a_bar_gives_the_exact_logits_of_predict(
    tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdserve.core.bundle import BundleModel

    terminal = _stderr(monkeypatch, tty=True)
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    texts = [t for t, _ in sentiment_texts(37, seed=3)] + ["", "great"]
    expected = model.predict(texts, 8)
    shown = bundle_predict(model, texts, 8, "scoring")
    assert shown.dtype == expected.dtype and np.array_equal(shown, expected)
    assert "scoring" in terminal.getvalue() and "39/39" in terminal.getvalue()


def test_export_scoring_is_unchanged_and_silent_off_a_terminal(
    tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = _stderr(monkeypatch, tty=False)
    from kdserve.core.bundle import BundleModel
    from kdserve.export.evaluate import score_bundle

    model = BundleModel(tiny_bundles / "tiny-textcnn")
    rows = sentiment_texts(30, seed=4)
    metrics, logits = score_bundle(model, rows, ["negative", "positive"], 8)
    assert np.array_equal(logits, model.predict([t for t, _ in rows], 8))
    assert metrics.examples == 30 and pipe.getvalue() == ""


def test_teacher_labelling_in_chunks_gives_the_logits_of_one_call(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar's chunks are whole batches of predict_logits' own longest-first order, so each batch
    holds the same texts as in one call: identical logits, not merely close ones."""
    pytest.importorskip("torch")
    terminal = _stderr(monkeypatch, tty=True)
    from kdserve.train.checkpoint import load_classifier
    from kdserve.train.evaluate import predict_logits
    from kdserve.train.transfer import CHUNK_BATCHES, checkpoint_predict

    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=("negative", "positive"))
    texts = [t for t, _ in sentiment_texts(50, seed=5)] + ["great", "the plot was very boring and dull ."]
    batch = 3  # 52 texts: 18 batches, so several chunks of CHUNK_BATCHES batches and a short last one
    assert len(texts) > batch * CHUNK_BATCHES * 3
    expected, _ = predict_logits(model, tokenizer, texts, 16, batch, "cpu")
    shown, rate = checkpoint_predict(model, tokenizer, texts, 16, batch, "cpu", "teacher labelling")
    assert np.array_equal(shown, expected) and rate > 0
    assert "teacher labelling" in terminal.getvalue() and "52/52" in terminal.getvalue()


def test_augmentation_output_is_the_same_with_and_without_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdserve.train.augment import AugmentConfig, Augmenter, whitespace_tagger

    rows = sentiment_texts(20, seed=6)
    plain = Augmenter(AugmentConfig(n_iter=4), whitespace_tagger).transfer_set(rows)
    screen = _stderr(monkeypatch, tty=True)
    shown = Augmenter(AugmentConfig(n_iter=4), whitespace_tagger).transfer_set(rows)
    assert shown == plain and len(plain) > len(rows)
    assert "augmenting" in screen.getvalue() and "20/20" in screen.getvalue()
