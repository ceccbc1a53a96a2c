"""Shared pieces of the harness: its error type, machine facts, real-text sampling, result files.

Only the standard library at module level: ``kdserve bench --help`` must stay cheap, and the
load generator must not pay for numpy or onnxruntime imports it never uses.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdserve.core.errors import KdserveError

#: Environment variables that change how many threads a numeric library uses.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM")


class BenchError(KdserveError):
    """A benchmark cannot run: unreachable target, server that never became ready, bad result file."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, ``platform`` elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a number: CPU, cores, load, library versions, thread env, date."""
    info: dict[str, Any] = {
        "date": utc_now(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
    }
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        info["load_average_1m"] = None
    versions: dict[str, str | None] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in (
        "kdserve",
        "onnxruntime",
        "tokenizers",
        "numpy",
        "torch",
        "uvloop",
        "fastapi",
        "uvicorn",
        "litserve",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    return info


def sample_texts(
    spec_source: str, n: int, seed: int, split: str = "validation", label_names: Sequence[str] | None = None
) -> list[str]:
    """``n`` real texts from a dataset spec, drawn with a fixed seed (with replacement only when the
    split is smaller than ``n``), so two runs of a benchmark see the same inputs in the same order."""
    return [text for text, _ in sample_examples(spec_source, n, seed, split, label_names)[0]]


def sample_examples(
    spec_source: str,
    n: int | None,
    seed: int,
    split: str = "validation",
    label_names: Sequence[str] | None = None,
    replace: bool = True,
) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(text, label id) pairs and the label names; ``n=None`` (or ``n`` >= the split's size with
    ``replace=False``) keeps the whole split in file order.
    A source without that split falls back to validation, then to training rows."""
    from kdserve.core.data import DatasetSpec, load_dataset
    from kdserve.core.errors import DataError

    spec = DatasetSpec(source=spec_source, label_names=tuple(label_names) if label_names else None)
    data = load_dataset(spec)
    try:
        rows = data.split(split)
    except DataError:  # no test split: the validation rows are the held-out ones
        rows = data.validation
    if not rows:
        rows = data.train
    if not rows:
        raise BenchError(f"{spec_source}: no examples in the {split} split")
    if n is None or (not replace and n >= len(rows)):
        return list(rows), data.labels
    rng = random.Random(seed)
    picked = rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
    return picked, data.labels


def parse_int_list(value: str, what: str, low: int = 1) -> list[int]:
    """ "1,8,32" -> [1, 8, 32], each at least ``low``; a ConfigError names the flag otherwise."""
    from kdserve.core.errors import ConfigError

    try:
        items = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {value!r}") from None
    if not items or any(item < low for item in items):
        raise ConfigError(f"{what} must be integers >= {low}, got {value!r}")
    return items


def parse_float_list(value: str, what: str) -> list[float]:
    from kdserve.core.errors import ConfigError

    try:
        items = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {value!r}") from None
    if not items or any(not item > 0 for item in items):
        raise ConfigError(f"{what} must be positive numbers, got {value!r}")
    return items


def parse_shell_words(value: str, what: str) -> list[str]:
    """ "--port 9 --x 'a b'" -> ["--port", "9", "--x", "a b"]; an unbalanced quote is a ConfigError."""
    import shlex

    from kdserve.core.errors import ConfigError

    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc} in {value!r}") from None


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"result file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") not in ("model", "http", "compare", "ab"):
        raise BenchError(f"{path}: not a kdserve bench result (no kind model/http/compare/ab)")
    return data


def bundle_size(folder: str | Path) -> int:
    """Bytes of every file in a bundle folder (what a deployment ships)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
