"""Explain cost on a 64-token text, tiny BiLSTM bundle (max_length 128): in process and over HTTP.

Run from the repository root: ``PYTHONPATH=. nice -n 10 python docs/notes/longtext_bench_explain.py``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kdserve.core.bundle import BundleModel
from kdserve.core.explain import explain
from tests.bundles import build_tiny_bundle
from tests.serve.conftest import real_server


def p50(call: Callable[[], object], n: int = 300) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    root = Path(tempfile.mkdtemp())
    build_tiny_bundle(root / "tiny-bilstm", name="tiny-bilstm", kind="bilstm", seed=1, max_length=128)
    model = BundleModel(root / "tiny-bilstm", intra_op_threads=1)
    text = " ".join(" ".join(["the movie was really great ."] * 11).split()[:64])
    assert len(model.tokenizer.encode(text).ids) == 64
    alone = p50(lambda: model.run(model.encode([text])))
    explained = p50(lambda: explain(model, text, 128))
    print(f"in process: classify p50 {alone:.3f} ms; explain (65 rows) p50 {explained:.3f} ms")
    with real_server(root, warmup_batch_sizes=[1], warmup_lengths=[64]) as url, httpx.Client(base_url=url) as c:
        for flag in (False, True, False, True):
            body = {"text": text, "explain": flag}
            ms = p50(lambda body=body: c.post("/classify", json=body).raise_for_status(), 200)
            print(f"HTTP explain={flag}: p50 {ms:.3f} ms")


if __name__ == "__main__":
    main()
