"""Word vectors from the teacher's input embeddings, on the tiny BERT (exact values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdserve.core.errors import KdserveError
from kdserve.train.teacher_vectors import teacher_embedding_table, teacher_word_vectors

pytest.importorskip("torch")


def test_each_word_gets_the_mean_of_its_pieces(tiny_bert_dir: Path) -> None:
    from transformers import BertModel

    table = teacher_embedding_table(tiny_bert_dir)
    expected = BertModel.from_pretrained(tiny_bert_dir).embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(table, expected)
    ids = {w: i for i, w in enumerate((tiny_bert_dir / "vocab.txt").read_text().split())}
    vocab = ["[PAD]", "[UNK]", "[MASK]", "movie", "Great", "zzzz", "movie,"]
    matrix, hits = teacher_word_vectors(tiny_bert_dir, vocab, seed=5)
    assert matrix.shape == (7, 32) and matrix.dtype == np.float32
    assert not matrix[0].any()  # [PAD]: the padding row
    np.testing.assert_array_equal(matrix[1], table[ids["[UNK]"]])
    np.testing.assert_array_equal(matrix[2], table[ids["[MASK]"]])
    np.testing.assert_array_equal(matrix[3], table[ids["movie"]])
    np.testing.assert_array_equal(matrix[4], table[ids["great"]])  # the teacher's tokenizer lower-cases
    np.testing.assert_allclose(matrix[6], (table[ids["movie"]] + table[ids[","]]) / 2, rtol=1e-6)
    # a word spelled only with [UNK] gets a seeded random vector of the table's scale
    assert hits == 3
    again, _ = teacher_word_vectors(tiny_bert_dir, vocab, seed=5)
    other, _ = teacher_word_vectors(tiny_bert_dir, vocab, seed=6)
    np.testing.assert_array_equal(matrix, again)
    assert not np.array_equal(matrix[5], other[5]) and np.array_equal(matrix[3], other[3])


def test_a_folder_without_safetensors_embeddings_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KdserveError, match="no .*safetensors file holds"):
        teacher_embedding_table(tmp_path)
