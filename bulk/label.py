"""Teacher labelling of a list of texts on local worker processes, logits identical to in-process.

``BundleModel.predict`` (today's labelling path for a bundle teacher) sorts the texts by length and
runs fixed batches in one process; on a CPU much of its time is tokenization and small ops that one
session does not spread over the cores. ``label_texts`` forms exactly the same batches (the same
order, the same boundaries) and hands whole batches to worker processes, each with its own session,
so every batch is computed the same way and the logits match the in-process ones.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import BundleModel, verify_bundle
from kdserve.core.errors import ConfigError, KdserveError

_model: BundleModel | None = None


def _label_chunk(bundle: str, threads: int, batch_size: int, texts: list[str]) -> np.ndarray:
    global _model
    if _model is None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _model = BundleModel(bundle, intra_op_threads=threads)
    out = [_model.run(_model.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(_model.labels)), np.float32)


def label_texts(
    bundle: str | Path,
    texts: Sequence[str],
    batch_size: int = 256,
    workers: int = 0,
    threads: int = 1,
    batches_per_task: int = 8,
) -> np.ndarray:
    """Logits [N, C] of ``texts`` in input order, as ``BundleModel(bundle).predict(texts, batch_size)``
    gives them, computed by ``workers`` processes (0: one a core) of ``threads`` threads each."""
    if batch_size < 1 or workers < 0 or threads < 1 or batches_per_task < 1:
        raise ConfigError("label_texts: batch_size, threads and batches_per_task must be >= 1, workers >= 0")
    manifest = verify_bundle(bundle)
    if workers == 0:
        from kdserve.bulk.job import available_cores

        workers = max(available_cores() // threads, 1)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # BundleModel.predict's order
    step = batch_size * batches_per_task  # a multiple of batch_size: the batches stay predict's batches
    chunks = [order[start : start + step] for start in range(0, len(order), step)]
    out = np.zeros((len(texts), len(manifest.labels)), dtype=np.float32)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures: list[Any] = [
            pool.submit(_label_chunk, str(bundle), threads, batch_size, [texts[i] for i in chunk]) for chunk in chunks
        ]
        try:
            for chunk, future in zip(chunks, futures):
                out[chunk] = future.result()
        except BrokenProcessPool:
            raise KdserveError("a labelling worker died (killed or out of memory)") from None
    return out
