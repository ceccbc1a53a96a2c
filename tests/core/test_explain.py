"""kdserve.core.explain: word units, the occlusion batch, and attributions from one model call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.processors import TemplateProcessing

from kdserve.core.bundle import BundleModel, Encoded, softmax
from kdserve.core.explain import Unit, explain, occlusion_batch, word_units


def wordpiece() -> Tokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "great": 5, "##ly": 6, "film": 7}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def test_word_units_group_pieces_and_skip_specials() -> None:
    text = "the greatly film"
    encoding = wordpiece().encode(text)
    assert encoding.ids == [2, 4, 5, 6, 7, 3]
    units = word_units(encoding)
    assert units == [Unit((1,), 0, 3), Unit((2, 3), 4, 11), Unit((4,), 12, 16)]
    assert [text[u.start : u.end] for u in units] == ["the", "greatly", "film"]


def test_occlusion_batch_rows() -> None:
    ids = np.array([2, 4, 5, 6, 7, 3])
    batch = occlusion_batch(ids, [Unit((1,), 0, 3), Unit((2, 3), 4, 11)], pad_id=0)
    assert batch.input_ids.tolist() == [[2, 4, 5, 6, 7, 3], [2, 5, 6, 7, 3, 0], [2, 4, 7, 3, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1] * 5 + [0], [1] * 4 + [0, 0]]
    assert batch.lengths == [6, 5, 4]
    # deleting the only token leaves one pad token, unmasked
    single = occlusion_batch(np.array([9]), [Unit((0,), 0, 1)], pad_id=0)
    assert single.input_ids.tolist() == [[9], [0]] and single.attention_mask.tolist() == [[1], [1]]


class Counting:
    """A real bundle that counts its model calls (and the calls' rows alone, when it runs them so)."""

    def __init__(self, model: BundleModel) -> None:
        self.model, self.tokenizer, self.manifest, self.calls = model, model.tokenizer, model.manifest, 0
        self.probabilities = model.probabilities

    def run(self, encoded: Encoded, rows_alone: bool | None = None) -> np.ndarray:
        alone = self.model.rows_alone if rows_alone is None else rows_alone
        self.calls += len(encoded.lengths) if alone else 1
        return self.model.run(encoded, rows_alone=rows_alone)


def test_explain_a_tiny_bilstm(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    counting = Counting(model)
    text = "the movie was really great ."
    explained = explain(counting, text, max_units=64)
    assert counting.calls == 1  # the original and all six variants in one batch
    assert [text[u.start : u.end] for u in explained.units] == ["the", "movie", "was", "really", "great", "."]
    assert explained.complete and explained.occluded.shape == (6, 2)
    # the base is the text's own answer; each variant's row is that variant run alone
    assert explained.base == pytest.approx(softmax(model.predict([text]))[0], abs=1e-5)
    words = text.split()
    for u in range(6):
        alone = softmax(model.predict([" ".join(words[:u] + words[u + 1 :])]))[0]
        assert explained.occluded[u] == pytest.approx(alone, abs=1e-5)
    positive = explained.attribution(1)
    assert positive == pytest.approx(explained.base[1] - explained.occluded[:, 1], abs=1e-7)
    assert int(np.argmax(positive)) == 4  # "great" carries the positive answer
    assert explained.attribution(0) == pytest.approx(-positive, abs=1e-5)  # two classes: mirror images


def test_explain_is_bounded(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    explained = explain(model, "the movie was really great .", max_units=2)
    assert len(explained.units) == 2 and explained.occluded.shape == (2, 2) and not explained.complete
    # past the token limit (32): the first 32 words, marked incomplete
    explained = explain(model, " ".join(["great"] * 40), max_units=100)
    assert len(explained.units) == 32 and not explained.complete


def test_explain_reads_the_bundles_calibrated_scores(tiny_bundles: Path, tmp_path: Path) -> None:
    """Attributions are drops of the served score: softmax(z / T) single-label, each category's own
    sigmoid(z / T_c) multi-label (never a softmax that makes categories share one unit of mass)."""
    from tests.serve.moderation_bundles import MULTI, SINGLE, build_moderation_bundles

    root = build_moderation_bundles(tiny_bundles, tmp_path / "mod")
    text = "the film was awful ."
    for name in (SINGLE, MULTI):
        model = BundleModel(root / name)
        explained = explain(model, text, max_units=64)
        served = model.probabilities(model.predict([text]))[0]
        assert explained.base == pytest.approx(served, abs=1e-6)
        variant = model.probabilities(model.predict(["the film was ."]))[0]  # "awful" deleted
        assert explained.occluded[3] == pytest.approx(variant, abs=1e-6)
    multi = explain(BundleModel(root / MULTI), text, max_units=64)
    assert multi.base.sum() != pytest.approx(1.0, abs=1e-3)  # two sigmoids, not a softmax
    z = BundleModel(root / MULTI).predict([text])[0]
    assert multi.base == pytest.approx(1 / (1 + np.exp(-z / np.array([1.5, 0.5]))), abs=1e-6)
    assert int(np.argmax(multi.attribution(0))) == 3  # "awful" carries the harmful category


def test_explain_runs_one_batch_on_a_rows_alone_bundle(tiny_bundles: Path, tmp_path: Path) -> None:
    """A bundle served rows alone still explains in ONE call: the batch is the text and its own
    variants, so the attributions depend on the text alone (the same answer every time)."""
    import shutil

    from kdserve.core.bundle import read_manifest, write_manifest
    from tests.bundles import write_batch_dependent_graph

    folder = shutil.copytree(tiny_bundles / "tiny-bilstm", tmp_path / "dependent")
    write_batch_dependent_graph(folder)
    write_manifest(folder, read_manifest(folder))
    model = BundleModel(folder, rows_alone=True)
    counting = Counting(model)
    text = "the movie was really great ."
    first = explain(counting, text, max_units=64)
    assert counting.calls == 1
    again = explain(BundleModel(folder, rows_alone=True), text, max_units=64)
    assert np.array_equal(first.base, again.base) and np.array_equal(first.occluded, again.occluded)
    batch = occlusion_batch(np.asarray(model.tokenizer.encode(text).ids), first.units)
    assert first.occluded == pytest.approx(softmax(model.run(batch, rows_alone=False))[1:], abs=1e-6)
