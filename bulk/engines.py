"""The two engines: local worker processes, or Ray Data actors on a local instance or a cluster.

Both run the same ``ShardWorker.run_shard`` on each pending shard and yield its result as it
commits; the parent only plans, counts and reports, so it never holds texts. Work in flight is
bounded (local: 2 shards a worker; Ray: Ray Data's own backpressure), so memory does not grow
with the input.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Any

from kdserve.bulk.inputs import Shard
from kdserve.core.errors import ConfigError, KdserveError

Pending = Sequence[tuple[dict[str, Any], Shard]]

# ---------------------------------------------------------------- local processes

_worker: Any = None  # the ShardWorker of this worker process, built on its first shard


def _run_local(bundle: str, threads: int, batch_size: int, output: str, fmt: str, task: dict, shard: Shard) -> dict:
    global _worker
    if _worker is None:
        from kdserve.bulk.classify import ShardWorker

        _worker = ShardWorker(bundle, threads, batch_size)
    return _worker.run_shard(output, fmt, task, shard)


def run_local(
    pending: Pending, bundle: str, output: str, fmt: str, workers: int, threads: int, batch_size: int
) -> Iterator[dict[str, Any]]:
    """Spawned worker processes (no forked ONNX Runtime or tokenizer state); a worker that dies
    (killed, out of memory) fails the run with a message instead of hanging it."""
    context = multiprocessing.get_context("spawn")
    todo = iter(pending)
    running: set[Future[dict[str, Any]]] = set()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            while True:
                while len(running) < 2 * workers:
                    item = next(todo, None)
                    if item is None:
                        break
                    task, shard = item
                    running.add(pool.submit(_run_local, bundle, threads, batch_size, output, fmt, task, shard))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool:
            raise KdserveError(
                "a classify worker died (killed or out of memory); committed shards are kept: rerun the same "
                "command to finish the rest"
            ) from None
        finally:
            for future in running:
                future.cancel()


# ---------------------------------------------------------------- Ray Data


class _RayShardActor:
    """A Ray Data actor: one verified BundleModel, one shard per call."""

    def __init__(self, bundle: str, threads: int, batch_size: int, output: str, fmt: str) -> None:
        from kdserve.bulk.classify import ShardWorker

        self.worker = ShardWorker(bundle, threads, batch_size)
        self.output, self.format = output, fmt

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import json

        results: dict[str, list[Any]] = {"result": []}
        for task_json, shard_json in zip(batch["task"], batch["shard"]):
            task, shard = json.loads(task_json), Shard(**json.loads(shard_json))
            results["result"].append(json.dumps(self.worker.run_shard(self.output, self.format, task, shard)))
        return results


def _kdserve_cause(exc: BaseException) -> BaseException | None:
    """The KdserveError an actor raised, through Ray's wrappers (``cause``, ``__cause__``)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if isinstance(current, KdserveError) and not isinstance(inner, BaseException):
            return current
        stack += [inner if isinstance(inner, BaseException) else None, current.__cause__, current.__context__]
    return None


def import_ray(flag: str) -> Any:
    """The ``ray`` module with Ray Data, or a one-line ConfigError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is what the engines use
    except ImportError:
        raise ConfigError(f"{flag} ray needs Ray: pip install 'kdserve[scale]'") from None
    return ray


@contextlib.contextmanager
def ray_instance(ray: Any, cpus: int) -> Iterator[None]:
    """Ray, initialised: joins ``RAY_ADDRESS`` when set (a cluster), else starts a local instance of
    ``cpus`` CPUs; an instance already running (a caller's) is used as it is. Only an instance
    started here is shut down on exit."""
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if not address:
            options["num_cpus"] = cpus
        ray.init(address=address or None, **options)
        started = True
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
    finally:
        if started:
            ray.shutdown()


def ray_failure(exc: BaseException) -> KdserveError:
    """One line for a failed Ray job: an actor's own KdserveError (a bad bundle on a node) when Ray
    wrapped one, else Ray's message, whitespace folded and cut."""
    cause = _kdserve_cause(exc)
    if cause is not None:
        return KdserveError(str(cause).splitlines()[0])
    return KdserveError(f"the Ray job failed: {' '.join(str(exc).split())[:300]}")


def run_ray(
    pending: Pending, bundle: str, output: str, fmt: str, workers: int, threads: int, batch_size: int
) -> Iterator[dict[str, Any]]:
    """read (the shard plan) -> ``map_batches`` over an actor pool of ``workers`` actors -> each actor
    commits its shards to ``output``. Connects to ``RAY_ADDRESS`` when set, else starts a local
    instance; on a cluster the bundle, the inputs and ``output`` must be on storage every node mounts."""
    ray = import_ray("--engine")
    import json

    if not pending:
        return
    with ray_instance(ray, workers * threads):
        items = [{"task": json.dumps(task), "shard": json.dumps(asdict(shard))} for task, shard in pending]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayShardActor,
            fn_constructor_kwargs={
                "bundle": bundle,
                "threads": threads,
                "batch_size": batch_size,
                "output": output,
                "fmt": fmt,
            },
            batch_size=1,
            concurrency=workers,
            num_cpus=threads,
        )
        try:
            for row in dataset.iter_rows():
                yield json.loads(row["result"])
        except Exception as exc:  # noqa: BLE001 - Ray wraps an actor's error in its own types
            raise ray_failure(exc) from None
