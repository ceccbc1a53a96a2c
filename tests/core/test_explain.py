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
    """A real bundle that counts its model calls."""

    def __init__(self, model: BundleModel) -> None:
        self.model, self.tokenizer, self.manifest, self.calls = model, model.tokenizer, model.manifest, 0

    def run(self, encoded: Encoded) -> np.ndarray:
        self.calls += 1
        return self.model.run(encoded)


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
