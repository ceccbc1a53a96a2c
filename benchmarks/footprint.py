"""``kdserve bench footprint``: what one kdserve process costs to hold a set of bundles.

Starts ``kdserve serve`` on the chosen bundles (a subprocess, torn down afterwards), times the
start-up until ``/ready`` answers 200 (every model loaded and warmed), reads the server's
resident memory (its whole process group, from /proc), then sends ``requests`` single-text
requests to each model in turn over one kept-alive connection and reads the memory again: the
figure to size a pod's memory limit with.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import time
from collections.abc import Callable
from typing import Any

from kdserve.bench.common import BenchError, machine_info, sample_texts
from kdserve.bench.compare import find_bundles
from kdserve.bench.configs import FootprintConfig as FootprintConfig
from kdserve.bench.servers import start_server
from kdserve.bench.stats import summarize


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1e6, 1)


def _classify(conn: http.client.HTTPConnection, text: str, model: str) -> tuple[int, float]:
    body = json.dumps({"text": text, "model": model})
    started = time.perf_counter()
    conn.request("POST", "/classify", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - started


def run_footprint(config: FootprintConfig, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The ``kdserve bench footprint`` result (see the module docstring)."""
    from kdserve.core.bundle import read_manifest

    folders = find_bundles(config.bundles_root, config.models or None)
    names = [f.name for f in folders]
    texts = sample_texts(config.data, config.texts, config.seed)
    server = start_server(
        "kdserve",
        log_dir=config.log_dir,
        start_timeout_s=config.start_timeout_s,
        bundles_root=config.bundles_root,
        model=",".join(names),
        extra=config.server_args,
    )
    per_model: dict[str, Any] = {}
    with server:
        ready_s = server.startup_s or 0.0
        at_ready = server.rss_bytes()
        log(f"{len(names)} model(s) ready in {ready_s:.2f} s, RSS {_mb(at_ready)} MB")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for name in names:
                statuses: dict[str, int] = {}
                latencies = []
                for i in range(config.requests):
                    status, seconds = _classify(conn, texts[i % len(texts)], name)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    latencies.append(seconds)
                per_model[name] = {"statuses": statuses, "latency_ms": summarize(latencies, scale=1e3)}
                if set(statuses) - {"200"}:
                    raise BenchError(f"model {name} answered {statuses} (see the server log {server.log_path})")
        finally:
            conn.close()
        after = server.rss_bytes()
        log(f"after {config.requests} requests per model: RSS {_mb(after)} MB")
    manifests = {f.name: read_manifest(f) for f in folders}
    return {
        "kind": "footprint",
        "machine": machine_info(),
        "config": dataclasses.asdict(config),
        "models": [
            {
                "name": n,
                "model_kind": manifests[n].model_kind,
                "precision": manifests[n].precision,
                "parameters": manifests[n].parameters,
                **per_model.get(n, {}),
            }
            for n in names
        ],
        "ready_s": round(ready_s, 2),
        "rss_mb_at_ready": _mb(at_ready),
        "rss_mb_after_requests": _mb(after),
    }
