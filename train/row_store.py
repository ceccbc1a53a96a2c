"""Teacher logits kept per text, for teachers whose logits do not depend on the batch.

The transfer-set cache (``kdserve.train.transfer``) is keyed by the exact texts in order, which is
what makes it exact for any teacher: the same texts give the same batches, so the same bits. But
the next distillation rarely labels the same set: another seed draws other training rows, or a
week of shadow-logged production texts is added (``--transfer-data``), and the whole set, most of
it labelled before, is labelled again (43,807 texts, 654 s, for 20,000 new tweets:
docs/RESULTS.md).

A bundle that runs rows alone (dynamic int8, ``extra.rows_alone``) computes each text in its own
call, so a text's logits are the same whatever else is labelled with it. For such a teacher every
text's logits are also kept in one store per (teacher, max length, problem type): a text labelled
once is never labelled again, and a set read back from the store is bit-identical to labelling it
afresh. Teachers that run batches (a checkpoint, fp32 or static int8 bundles) keep the exact
per-set cache only: reusing a row scored beside other batchmates would be close, not identical.

The store is one ``.npz`` (sha256 digests [M, 32] uint8, logits [M, C]; read without pickles),
replaced atomically; a run merges what is on disk at write time with what it labelled, so two
runs sharing a store lose nothing but, at worst, each other's last rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("kdserve.train")

STORE_FILE = "rows.npz"


def digests(texts: Sequence[str]) -> np.ndarray:
    """uint8 [N, 32]: each text's sha256."""
    out = np.zeros((len(texts), 32), dtype=np.uint8)
    for row, text in enumerate(texts):
        out[row] = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), dtype=np.uint8)
    return out


def _read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The store's (digests, logits), or None when it is missing or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, logits = data["digests"], data["logits"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("teacher row store %s is unreadable (%s); labelling without it", path, exc)
        return None
    if keys.ndim != 2 or keys.shape[1] != 32 or logits.ndim != 2 or len(keys) != len(logits):
        log.warning("teacher row store %s has inconsistent arrays; labelling without it", path)
        return None
    return keys, logits


def _write(path: Path, keys: np.ndarray, logits: np.ndarray) -> None:
    """Merge with what is on disk now, then replace the file atomically."""
    on_disk = _read(path)
    if on_disk is not None and on_disk[1].shape[1] == logits.shape[1]:
        keys, logits = np.concatenate([on_disk[0], keys]), np.concatenate([on_disk[1], logits])
    _, first = np.unique(keys, axis=0, return_index=True)
    first.sort()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, digests=keys[first], logits=logits[first])
    tmp.replace(path)


def label_with_store(
    folder: Path, texts: Sequence[str], label: Callable[[list[str]], np.ndarray]
) -> tuple[np.ndarray, int, int]:
    """Logits [N, C] for ``texts``: rows the store in ``folder`` holds, ``label`` for the rest (each
    distinct missing text once); the store then holds them all. Returns (logits, distinct texts
    labelled, rows of ``texts`` read from the store)."""
    path = folder / STORE_FILE
    wanted = digests(texts)
    stored = _read(path)
    table = stored[1] if stored is not None else np.zeros((0, 0), dtype=np.float32)
    index = {key.tobytes(): row for row, key in enumerate(stored[0])} if stored is not None else {}
    raws = [key.tobytes() for key in wanted]
    missing: dict[bytes, int] = {}  # digest -> its first position among texts
    reused = 0
    for position, raw in enumerate(raws):
        if raw in index:
            reused += 1
        else:
            missing.setdefault(raw, position)
    if missing:
        rows = list(missing.values())
        fresh = label([texts[i] for i in rows])
        _write(path, wanted[rows], fresh)
        index.update({raw: len(table) + i for i, raw in enumerate(missing)})
        table = np.concatenate([table, fresh]) if len(table) else fresh
    return table[[index[raw] for raw in raws]], len(missing), reused
