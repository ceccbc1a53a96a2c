"""The output folder: job manifest, shard files committed atomically, and their manifests.

Layout of ``--output DIR``::

    _job.json                    what this job is (bundle checksum, input fingerprint, options) and its status
    _job.lock                    held (flock) by the running job: a second run on the same folder is refused
    part-00000-000000.parquet    one shard: rows [start, stop) of input file 0
    _manifests/part-....json     that shard's manifest: input, row range, rows, bundle checksum
    _tmp/                        shards being written; never read, emptied at every start

A shard becomes visible only by ``os.replace`` of a complete, fsync'd file, so a reader of
``DIR/*.parquet`` never sees a partial one; names starting with ``_`` are ignored by Arrow,
pandas, Spark and DuckDB dataset readers. A shard counts as committed when its data file and its
manifest both exist with the expected row count; one without the other (a crash between the two
renames) is simply written again, with the same content.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import IO, Any

from kdserve.core.errors import ConfigError, DataError

JOB_FILE = "_job.json"
LOCK_FILE = "_job.lock"
MANIFESTS = "_manifests"
TMP = "_tmp"
FORMAT = "kdserve-classify"
FORMAT_VERSION = 1
OUTPUT_FORMATS = ("parquet", "jsonl")
#: job fields that must match for a rerun to resume; anything else (workers, engine) may change
IDENTITY = ("bundle", "inputs", "text_column", "id_column", "shard_rows", "batch_size", "output_format")


def _write_atomic(path: Path, data: bytes, root: Path) -> None:
    """Write ``data`` to ``path`` through a temp file under ``root/_tmp`` (same file system)."""
    tmp = root / TMP / f"{path.name}.{os.getpid()}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _describe(field: str, old: Any, new: Any) -> str:
    if field == "bundle":
        before, after = str(old.get("checksum", ""))[:12], str(new.get("checksum", ""))[:12]
        return f"the bundle changed ({old.get('name')} {before} -> {new.get('name')} {after})"
    if field == "inputs":
        old_paths = {i["path"]: i for i in old}
        for item in new:
            before = old_paths.get(item["path"])
            if before is None:
                return f"the inputs changed ({item['path']} is new)"
            if before != item:
                return f"the input {item['path']} changed (size or modification time)"
        return "the inputs changed (a file was removed)"
    return f"{field} changed ({old!r} -> {new!r})"


class OutputFolder:
    """An output folder owned by one job; ``open`` checks it holds this job or nothing."""

    def __init__(self, path: str | Path, fmt: str) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        self.path = Path(path).expanduser()
        self.format = fmt
        self._lock: IO[bytes] | None = None

    def open(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create or reopen the folder for ``job``; returns the job manifest on disk (its status says
        whether a previous run completed). Refuses another job's folder and a concurrent run."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--output {self.path} is a file, not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        manifest_path = self.path / JOB_FILE
        if not manifest_path.is_file():
            strangers = [p.name for p in self.path.iterdir() if p.name not in (LOCK_FILE, TMP)]
            if strangers:
                raise ConfigError(
                    f"--output {self.path} is not empty and holds no {JOB_FILE} (not a kdserve classify output): "
                    "give a new or empty folder"
                )
        self._lock = (self.path / LOCK_FILE).open("ab")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"--output {self.path}: another kdserve classify is writing it now") from None
        if manifest_path.is_file():
            try:
                existing = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{manifest_path}: unreadable ({exc}); give a new --output folder") from None
            if existing.get("format") != FORMAT:
                raise ConfigError(f"{manifest_path}: not a kdserve classify job manifest")
            for name in IDENTITY:
                if existing.get(name) != job[name]:
                    raise ConfigError(
                        f"--output {self.path} holds another job: {_describe(name, existing.get(name), job[name])}; "
                        "rerun with the original bundle and inputs, or give a new --output folder"
                    )
        else:
            existing = {**job, "format": FORMAT, "format_version": FORMAT_VERSION, "status": "running"}
            existing["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.write_job(existing)
        # Leftovers of a killed run: never visible as data, removed so they do not accumulate.
        shutil.rmtree(self.path / TMP, ignore_errors=True)
        (self.path / TMP).mkdir(exist_ok=True)
        (self.path / MANIFESTS).mkdir(exist_ok=True)
        return existing

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def write_job(self, job: dict[str, Any]) -> None:
        _write_atomic(self.path / JOB_FILE, (json.dumps(job, indent=2) + "\n").encode(), self.path)

    def data_path(self, name: str) -> Path:
        return self.path / f"{name}.{self.format}"

    def committed(self, name: str, rows: int) -> bool:
        manifest = self.path / MANIFESTS / f"{name}.json"
        if not (self.data_path(name).is_file() and manifest.is_file()):
            return False
        try:
            return int(json.loads(manifest.read_text(encoding="utf-8")).get("rows", -1)) == rows
        except (OSError, ValueError, json.JSONDecodeError):
            return False


def commit_shard(folder: str | Path, fmt: str, name: str, table: Any, meta: dict[str, Any]) -> None:
    """Write ``table`` (a pyarrow Table) as shard ``name`` and its manifest, each atomically; runs in
    the worker (local process or Ray actor) that classified the shard."""
    folder = Path(folder)
    final = folder / f"{name}.{fmt}"
    tmp = folder / TMP / f"{final.name}.{os.getpid()}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            with tmp.open("w", encoding="utf-8") as handle:
                for row in table.to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{final}: cannot write ({exc.strerror or exc})") from None
    os.replace(tmp, final)
    _write_atomic(folder / MANIFESTS / f"{name}.json", (json.dumps(meta, indent=2) + "\n").encode(), folder)
