"""Teacher labelling of a list of texts on local worker processes or Ray Data, logits identical to in-process.

``BundleModel.predict`` (the in-process labelling path for a bundle teacher) sorts the texts by
length and runs fixed batches in one process; on a CPU much of its time is tokenization and small
ops that one session does not spread over the cores. ``label_texts`` (worker processes) and
``label_texts_ray`` (Ray Data actors, on a local instance or a cluster) form exactly the same
batches (the same order, the same boundaries) and hand whole batches to workers, each with its own
verified session, so every batch is computed the same way and the logits match the in-process ones
bit for bit: a teacher-logit cache is valid whichever engine filled it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import BundleError, BundleModel, verify_bundle
from kdserve.core.errors import ConfigError, KdserveError

#: a task holds at most this many batches (fewer on a small input, so every worker gets several)
MAX_BATCHES_PER_TASK = 8
#: tasks a worker should get at least, so the last (longest) tasks do not leave a worker idle
TASKS_PER_WORKER = 4

Progress = Callable[[int], None]

_model: BundleModel | None = None  # the session of this worker process, built on its first task


def _open(bundle: str, threads: int) -> BundleModel:
    # The tokenizer's own thread pool would fight the other workers for the same cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return BundleModel(bundle, intra_op_threads=threads, verify=True)


def _run_batches(model: BundleModel, texts: list[str], batch_size: int) -> np.ndarray:
    """Logits of ``texts`` (already in predict's order) in consecutive batches of ``batch_size``."""
    out = [model.run(model.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


def _label_chunk(bundle: str, threads: int, batch_size: int, texts: list[str]) -> np.ndarray:
    global _model
    if _model is None:
        _model = _open(bundle, threads)
    return _run_batches(_model, texts, batch_size)


def plan_chunks(texts: Sequence[str], batch_size: int, workers: int, batches_per_task: int = 0) -> list[list[int]]:
    """Row indices of each task, longest texts first.

    Rows are in ``BundleModel.predict``'s order (character length, stable sort) and a task is a
    whole number of its batches, so every batch holds exactly the rows it holds in ``predict``.
    ``batches_per_task`` 0 picks enough tasks for ``TASKS_PER_WORKER`` a worker (at most
    ``MAX_BATCHES_PER_TASK`` batches each); the longest tasks go first, so the cheap short ones
    fill the gaps at the end instead of one long task running alone on one core."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # BundleModel.predict's order
    batches = -(-len(order) // batch_size)
    if batches_per_task == 0:
        batches_per_task = max(1, min(MAX_BATCHES_PER_TASK, batches // (TASKS_PER_WORKER * max(workers, 1))))
    step = batch_size * batches_per_task  # a multiple of batch_size: the batches stay predict's batches
    return [order[start : start + step] for start in range(0, len(order), step)][::-1]


def _check(batch_size: int, workers: int, threads: int, batches_per_task: int) -> None:
    if batch_size < 1 or workers < 0 or threads < 1 or batches_per_task < 0:
        raise ConfigError("labelling: batch_size and threads must be >= 1, workers and batches_per_task >= 0")


def label_texts(
    bundle: str | Path,
    texts: Sequence[str],
    batch_size: int = 256,
    workers: int = 0,
    threads: int = 1,
    batches_per_task: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Logits [N, C] of ``texts`` in input order, as ``BundleModel(bundle).predict(texts, batch_size)``
    gives them, computed by ``workers`` spawned processes (0: one a core) of ``threads`` threads
    each; ``progress(n)`` is called as each task's ``n`` texts come back."""
    _check(batch_size, workers, threads, batches_per_task)
    manifest = verify_bundle(bundle)
    if workers == 0:
        from kdserve.bulk.job import available_cores

        workers = max(available_cores() // threads, 1)
    chunks = plan_chunks(texts, batch_size, workers, batches_per_task)
    out = np.zeros((len(texts), len(manifest.labels)), dtype=np.float32)
    # spawn, not fork: no ONNX Runtime or tokenizer state (nor the caller's torch threads) is copied
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, max(len(chunks), 1)), mp_context=context) as pool:
        futures: list[Any] = [
            pool.submit(_label_chunk, str(bundle), threads, batch_size, [texts[i] for i in chunk]) for chunk in chunks
        ]
        try:
            for chunk, future in zip(chunks, futures):
                out[chunk] = future.result()
                if progress is not None:
                    progress(len(chunk))
        except BrokenProcessPool:
            raise KdserveError("a labelling worker died (killed or out of memory)") from None
    return out


class _RayLabelActor:
    """A Ray Data actor: one verified BundleModel, one task (a JSON list of texts) per row."""

    def __init__(self, bundle: str, threads: int, batch_size: int, checksum: str) -> None:
        self.model = _open(bundle, threads)
        # On a cluster each node reads its own copy of the bundle: one that differs from the copy
        # the driver checked would label with other weights, under the same cache key.
        if self.model.manifest.checksum != checksum:
            raise BundleError(
                f"{bundle} on this Ray node differs from the driver's copy (checksum "
                f"{self.model.manifest.checksum[:12]} != {checksum[:12]}): put one copy on shared storage"
            )
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        results: dict[str, list[Any]] = {"task": [], "logits": []}
        for task, texts_json in zip(batch["task"], batch["texts"]):
            logits = _run_batches(self.model, json.loads(texts_json), self.batch_size)
            results["task"].append(int(task))
            results["logits"].append(logits.tobytes())  # the float32 bits, exactly
        return results


def label_texts_ray(
    bundle: str | Path,
    texts: Sequence[str],
    batch_size: int = 256,
    workers: int = 0,
    threads: int = 1,
    batches_per_task: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """``label_texts`` on Ray Data: the same tasks as rows of a dataset, ``map_batches`` over
    ``workers`` actors (0: one a CPU of the instance) of ``threads`` threads, results put back in
    input order by task number (Ray may return them in any order). Joins ``RAY_ADDRESS`` when set,
    else starts a local instance; on a cluster the bundle must be at the same path on every node."""
    from kdserve.bulk.engines import import_ray, ray_failure, ray_instance

    _check(batch_size, workers, threads, batches_per_task)
    ray = import_ray("--label-engine")
    manifest = verify_bundle(bundle)
    if not texts:
        return np.zeros((0, len(manifest.labels)), dtype=np.float32)
    if workers == 0 and not os.environ.get("RAY_ADDRESS"):
        from kdserve.bulk.job import available_cores

        workers = max(available_cores() // threads, 1)
    with ray_instance(ray, max(workers, 1) * threads):
        if workers == 0:  # a cluster: one actor per `threads` of its CPUs
            workers = max(int(ray.cluster_resources().get("CPU", threads)) // threads, 1)
        chunks = plan_chunks(texts, batch_size, workers, batches_per_task)
        items = [{"task": n, "texts": json.dumps([texts[i] for i in chunk])} for n, chunk in enumerate(chunks)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayLabelActor,
            fn_constructor_kwargs={
                "bundle": str(Path(bundle).resolve()),
                "threads": threads,
                "batch_size": batch_size,
                "checksum": manifest.checksum,
            },
            batch_size=1,
            concurrency=min(workers, len(items)),
            num_cpus=threads,
        )
        out = np.zeros((len(texts), len(manifest.labels)), dtype=np.float32)
        try:
            for row in dataset.iter_rows():
                chunk = chunks[int(row["task"])]
                out[chunk] = np.frombuffer(row["logits"], dtype=np.float32).reshape(len(chunk), -1)
                if progress is not None:
                    progress(len(chunk))
        except Exception as exc:  # noqa: BLE001 - Ray wraps an actor's error in its own types
            raise ray_failure(exc) from None
    return out
