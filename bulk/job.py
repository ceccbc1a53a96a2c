"""``run_job``: plan, check the output folder, classify the shards not yet committed, summarise."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdserve.bulk.engines import run_local, run_ray
from kdserve.bulk.inputs import fingerprint, plan, resolve_inputs
from kdserve.bulk.output import OutputFolder
from kdserve.core.bundle import verify_bundle
from kdserve.core.errors import ConfigError

ENGINES = ("local", "ray")


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


@dataclass
class ClassifyJob:
    bundle: str
    inputs: list[str]
    output: str
    text_column: str | None = None
    id_column: str | None = None
    output_format: str = "parquet"
    engine: str = "local"
    workers: int = 0  # 0: one per core (local), or per available core on the Ray instance
    threads: int = 0  # intra-op threads a worker; 0: cores // workers
    batch_size: int = 64
    shard_rows: int = 10_000
    progress: bool | None = None  # None: only when stderr is a terminal

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name, low in (("workers", 0), ("threads", 0), ("batch_size", 1), ("shard_rows", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        cores = available_cores()
        if self.workers == 0:
            self.workers = max(cores // max(self.threads, 1), 1)
        if self.threads == 0:
            self.threads = max(cores // self.workers, 1)


def run_job(job: ClassifyJob) -> dict[str, Any]:
    """Run (or resume) ``job``; returns the summary also written into ``_job.json``."""
    started = time.perf_counter()
    manifest = verify_bundle(job.bundle)  # fail before planning a million rows, with the bundle's own message
    paths = resolve_inputs(job.inputs)
    identity = {
        "bundle": {
            "name": manifest.name,
            "checksum": manifest.checksum,
            "manifest_sha256": manifest.manifest_sha256,
        },
        "inputs": fingerprint(paths),
        "text_column": job.text_column,
        "id_column": job.id_column,
        "shard_rows": job.shard_rows,
        "batch_size": job.batch_size,
        "output_format": job.output_format,
    }
    folder = OutputFolder(job.output, job.output_format)
    # Plan before touching the output folder: a bad input must not leave a job manifest behind.
    files = plan(paths, job.shard_rows, job.text_column, job.id_column)
    record = folder.open(identity)
    try:
        total = sum(f.rows for f in files)
        pending = [(f.to_task(), s) for f in files for s in f.shards if not folder.committed(s.name, s.rows)]
        todo_rows = sum(s.rows for _, s in pending)
        engine = run_ray if job.engine == "ray" else run_local
        from tqdm import tqdm

        show = sys.stderr.isatty() if job.progress is None else job.progress
        bar = tqdm(
            total=total, initial=total - todo_rows, unit=" texts", unit_scale=True, disable=not show, dynamic_ncols=True
        )
        worker_rss = 0
        run_start = time.perf_counter()
        with bar:
            for result in engine(
                pending,
                str(Path(job.bundle).resolve()),
                str(folder.path.resolve()),
                job.output_format,
                job.workers,
                job.threads,
                job.batch_size,
            ):
                bar.update(result["rows"])
                worker_rss = max(worker_rss, result["max_rss_kib"])
        seconds = time.perf_counter() - run_start
        summary = {
            "rows": total,
            "shards": sum(len(f.shards) for f in files),
            "classified_now": todo_rows,
            "skipped_committed": total - todo_rows,
            "engine": job.engine,
            "workers": job.workers,
            "threads_per_worker": job.threads,
            "classify_seconds": round(seconds, 3),
            "texts_per_s": round(todo_rows / seconds, 1) if todo_rows and seconds > 0 else None,
            "wall_seconds": round(time.perf_counter() - started, 3),
            "parent_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_max_rss_mib": round(worker_rss / 1024, 1) if worker_rss else None,
        }
        record.update(status="complete", summary=summary)
        folder.write_job(record)
        return summary
    finally:
        folder.close()
