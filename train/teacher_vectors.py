"""Word vectors for a word-level student taken from the teacher's own input embeddings.

GloVe in this project is 50-d (the only size that ships in a package), and Kim (2014) found that
the CNN gains most from good pretrained vectors of a few hundred dimensions. The teacher carries
such a table already: its WordPiece input embeddings (384-d for MiniLM), trained with the rest of
the model. A word of the student's vocabulary gets the mean of the vectors of its WordPiece
pieces, so every word the teacher can spell without ``[UNK]`` has a pretrained vector.

Weights are read from ``*.safetensors`` only (no pickle), one tensor, without loading the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdserve.core.errors import KdserveError
from kdserve.train.student_tokenizers import MASK_TOKEN, PAD_TOKEN, UNK_TOKEN, teacher_wordpiece

_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def teacher_embedding_table(teacher_folder: str | Path) -> np.ndarray:
    """The teacher's WordPiece input-embedding matrix float32 [teacher vocab, H]."""
    from safetensors import safe_open

    from kdserve.train.checkpoint import resolve_model_source

    folder = Path(resolve_model_source(str(teacher_folder)))
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            names = [k for k in handle.keys() if k == _WORD_EMBEDDINGS or k.endswith("." + _WORD_EMBEDDINGS)]
            if names:
                return np.asarray(handle.get_tensor(names[0]), dtype=np.float32)
    raise KdserveError(f"{folder}: no *.safetensors file holds {_WORD_EMBEDDINGS!r}; is it a BERT-family checkpoint?")


def teacher_word_vectors(teacher_folder: str | Path, vocab: Sequence[str], seed: int = 0) -> tuple[np.ndarray, int]:
    """Embedding matrix for ``vocab`` (token id i -> ``vocab[i]``) from the teacher's embeddings.

    Returns (matrix float32 [V, H], hits). Row i is the mean of the teacher vectors of
    ``vocab[i]``'s WordPiece pieces; a word the teacher reads only as ``[UNK]`` gets a normal
    vector with the table's own standard deviation (seeded, drawn for every row up front as
    ``load_glove`` does). ``[PAD]`` is all zeros (the students' ``padding_idx``); ``[UNK]`` and
    ``[MASK]`` take the teacher's vectors of the same tokens. Specials never count as hits.
    """
    table = teacher_embedding_table(teacher_folder)
    tokenizer = teacher_wordpiece(teacher_folder)
    unk_id = tokenizer.token_to_id(UNK_TOKEN)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(table.std()), size=(len(vocab), table.shape[1])).astype(np.float32)
    words = [(i, w) for i, w in enumerate(vocab) if w not in (PAD_TOKEN, UNK_TOKEN, MASK_TOKEN)]
    hits = 0
    for (i, _), encoding in zip(words, tokenizer.encode_batch([w for _, w in words], add_special_tokens=False)):
        pieces = [t for t in encoding.ids if t != unk_id]
        if pieces:
            matrix[i] = table[pieces].mean(axis=0)
            hits += 1
    for i, word in enumerate(vocab):
        if word == PAD_TOKEN:
            matrix[i] = 0.0
        elif word in (UNK_TOKEN, MASK_TOKEN) and tokenizer.token_to_id(word) is not None:
            matrix[i] = table[tokenizer.token_to_id(word)]
    return matrix, hits
