"""kdserve.core.windows: exact rows for each long_text mode, the window cap, and aggregation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing

from kdserve.core.windows import TooManyWindows, Windower, WindowError, aggregate, special_counts, window_starts

WORDS = [f"w{i}" for i in range(12)]


def bert_like() -> Tokenizer:
    """A word-level tokenizer with BERT's [CLS] $A [SEP] template: ids [CLS]=2, [SEP]=3, w{i}=4+i."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_truncation(max_length=6)  # as a bundle's tokenizer is configured: the Windower must not care
    return tok


def words(n: int) -> str:
    return " ".join(WORDS[:n])


def ids(*indices: int) -> list[int]:
    return [2, *(4 + i for i in indices), 3]


def rows(windows: Windower, text: str, mode: str) -> tuple[list[list[int]], bool]:
    (cut,) = windows.encode([text], mode)
    return [r.tolist() for r in cut.rows], cut.truncated


def test_special_counts() -> None:
    assert special_counts(bert_like()) == (1, 1)
    plain = bert_like()
    plain.post_processor = None
    assert special_counts(plain) == (0, 0)


def test_window_starts_cover_the_body_with_the_last_window_at_the_end() -> None:
    assert window_starts(4, 4, 3) == [0]
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(5, 4, 4) == [0, 1]


def test_modes_on_a_bert_template() -> None:
    # max_length 6: 4 text tokens beside [CLS]/[SEP]; overlap 0.25 of 4 = 1 token, so a step of 3
    tok = bert_like()
    windows = Windower(tok, 6, overlap=0.25, max_windows=8)
    assert (windows.before, windows.after, windows.budget, windows.step, windows.head) == (1, 1, 4, 3, 1)
    # a text that fits: one row, whole, in every mode
    for mode in ("truncate", "head_tail", "chunk"):
        assert rows(windows, words(4), mode) == ([ids(0, 1, 2, 3)], False)
    # ten words: truncate keeps the start, as the bundle's truncating tokenizer does
    assert rows(windows, words(10), "truncate") == ([ids(0, 1, 2, 3)], True)
    assert rows(windows, words(10), "truncate")[0][0] == tok.encode(words(10)).ids
    # head_tail: 1/4 of the budget from the start, 3/4 from the end, specials at both ends
    assert rows(windows, words(10), "head_tail") == ([ids(0, 7, 8, 9)], True)
    # chunk: every token read, windows overlapping by one, the last aligned to the end
    assert rows(windows, words(10), "chunk") == ([ids(0, 1, 2, 3), ids(3, 4, 5, 6), ids(6, 7, 8, 9)], False)
    assert rows(windows, words(11), "chunk")[0] == [ids(0, 1, 2, 3), ids(3, 4, 5, 6), ids(6, 7, 8, 9), ids(7, 8, 9, 10)]
    assert windows.windows_needed(12) == 3  # 10 words + 2 specials
    # the bundle's own tokenizer keeps its truncation: the Windower works on a copy
    assert tok.truncation is not None and tok.truncation["max_length"] == 6


def test_no_overlap_and_the_window_cap() -> None:
    windows = Windower(bert_like(), 6, overlap=0.0, max_windows=2)
    assert rows(windows, words(8), "chunk")[0] == [ids(0, 1, 2, 3), ids(4, 5, 6, 7)]
    with pytest.raises(TooManyWindows) as caught:
        windows.encode(["w0", words(9)], "chunk")
    assert (caught.value.index, caught.value.windows, caught.value.limit) == (1, 3, 2)
    assert "texts[1] needs 3 windows" in str(caught.value)
    # the cap concerns chunk only: the other modes still give one row
    assert len(rows(windows, words(9), "head_tail")[0]) == 1


def test_bad_parameters() -> None:
    with pytest.raises(WindowError, match="no room"):
        Windower(bert_like(), 2)
    with pytest.raises(WindowError, match="overlap"):
        Windower(bert_like(), 6, overlap=1.0)
    with pytest.raises(WindowError, match="long_text mode"):
        Windower(bert_like(), 6).split(list(range(10)), "middle")


def test_a_tiny_bundles_word_tokenizer(tiny_bundles: Path) -> None:
    from kdserve.core.bundle import BundleModel

    model = BundleModel(tiny_bundles / "tiny-bilstm")  # word-level: no special tokens, max_length 32
    windows = Windower(model.tokenizer, model.manifest.max_length, overlap=0.25)
    assert (windows.before, windows.after, windows.budget, windows.step) == (0, 0, 32, 24)
    text = " ".join(["the movie was great ."] * 10)  # 50 tokens
    full = model.tokenizer.encode(text)
    assert len(full.ids) == 32 and full.overflowing  # the bundle's tokenizer still truncates
    (cut,) = windows.encode([text], "chunk")
    whole = Windower(model.tokenizer, 1000).encode([text], "chunk")[0].rows[0]
    assert len(whole) == cut.tokens == 50 and not cut.truncated
    assert [r.tolist() for r in cut.rows] == [whole[:32].tolist(), whole[18:].tolist()]
    (head_tail,) = windows.encode([text], "head_tail")
    assert head_tail.rows[0].tolist() == whole[:8].tolist() + whole[26:].tolist() and head_tail.truncated
    (truncated,) = windows.encode([text], "truncate")
    assert truncated.rows[0].tolist() == full.ids and truncated.truncated
    # an empty encoding runs as one pad token, as BundleModel.encode feeds it
    assert [r.tolist() for r in windows.encode([""], "chunk")[0].rows] == [[0]]


def test_aggregate_exact() -> None:
    ln3 = math.log(3)
    logits = np.array([[0.0, ln3], [0.0, 0.0]], dtype=np.float32)  # softmax: [.25, .75] and [.5, .5]
    combined_logits, probabilities = aggregate(logits, how="mean")
    assert probabilities == pytest.approx([0.375, 0.625], abs=1e-6)
    assert combined_logits == pytest.approx([math.log(0.375), math.log(0.625)], abs=1e-6)
    _, probabilities = aggregate(logits, how="max")
    assert probabilities == pytest.approx([0.4, 0.6], abs=1e-6)  # [.5, .75] / 1.25
    # one window: its own logits, untouched
    single, probabilities = aggregate(logits[:1])
    assert single.tolist() == logits[0].tolist() and probabilities == pytest.approx([0.25, 0.75], abs=1e-6)
    # multi-label: each category's highest logit, and its sigmoid
    flags, probabilities = aggregate(np.array([[0.0, 2.0], [1.0, -1.0]]), multi_label=True)
    assert flags.tolist() == [1.0, 2.0]
    assert probabilities == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2))], abs=1e-6)
    with pytest.raises(WindowError, match="aggregation"):
        aggregate(logits, how="median")
