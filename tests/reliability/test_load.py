"""Load, soak and overload against the real ``kdserve serve`` (a subprocess on loopback), driven by
the benchmark harness's load generator. Slow group only.

Each test first measures capacity on this machine (a closed loop, ``KDSERVE_CAPACITY_SECONDS``,
default 10), so the rates follow the machine:

The server runs with request_timeout_s 2 s and every other setting at its default.

* soak: an open loop at 70% of capacity for ``KDSERVE_SOAK_SECONDS`` (default 300); every request
  must succeed, and the server's RSS may grow at most 5% after warm-up (the first 20% of the run,
  at most 30 s).
* overload: an open loop at 3x capacity for ``KDSERVE_OVERLOAD_SECONDS`` (default 60) over 1,024
  connections from a separate process (tests/reliability/overload_client.py), after a 2 s ramp
  while the server accepts those connections (reported apart); a light probe on its own
  connections (enough that none of its requests waits for a free one) runs from 5 s before to
  10 s after. Every answer must be 200, 429 or 503; 429/503
  answers sampled on a kept-alive connection carry Retry-After; the accepted requests' p99 (from
  sending to the answer, as the client sees it) must stay within the server's request_timeout_s
  (2 s here); the server must live on; the probe's p50 must be back to its pre-overload baseline
  (within 2x or +5 ms, the shared machine's noise) within 2 s of the overload ending.

``KDSERVE_RELIABILITY_OUT=folder`` writes each test's figures there as JSON (docs/RELIABILITY.md
quotes them).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kdserve.bench.common import machine_info
from kdserve.bench.http_bench import render_bodies, summarize_run
from kdserve.bench.loadgen import NOT_SENT, TIMEOUT, Record, Target, closed_loop, open_loop, run_async
from kdserve.bench.servers import ServerProcess, start_server
from kdserve.bench.stats import percentile, summarize
from tests.bundles import sentiment_texts
from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc"),
]

SOAK_S = float(os.environ.get("KDSERVE_SOAK_SECONDS", "300"))
OVERLOAD_S = float(os.environ.get("KDSERVE_OVERLOAD_SECONDS", "60"))
CAPACITY_S = float(os.environ.get("KDSERVE_CAPACITY_SECONDS", "10"))
REQUEST_TIMEOUT_S = 2.0  # the server's request_timeout_s in these tests
RSS_GROWTH_LIMIT = 0.05
RECOVERY_LIMIT_S = 2.0
# enough connections that the generator, not the server's pace, sets the offered rate; the first
# RAMP_S seconds (the server accepting them all) are reported apart from the steady overload
RAMP_S = 2.0
OVERLOAD_CONNECTIONS = int(os.environ.get("KDSERVE_OVERLOAD_CONNECTIONS", "1024"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class RssSampler(threading.Thread):
    """(monotonic seconds, RSS bytes) of one process every ``every_s``, until stopped."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            self._halt.wait(self.every_s)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


@pytest.fixture(scope="module")
def server(tiny_bundles: Path) -> Iterator[ServerProcess]:
    extra = ["--request-timeout-s", str(REQUEST_TIMEOUT_S)]  # every other setting at its default
    with start_server("kdserve", bundles_root=tiny_bundles, model="tiny-textcnn", extra=extra) as process:
        yield process


@pytest.fixture(scope="module")
def requests(server: ServerProcess) -> list[bytes]:
    """2,000 distinct request bodies, one to four sentences each (varied lengths, so varied shapes)."""
    rows = [t for t, _ in sentiment_texts(5000, seed=11)]
    texts = [" ".join(rows[i : i + 1 + i % 4]) for i in range(2000)]
    target = Target.parse(server.url, "/classify")
    return [target.request(body) for body in render_bodies(texts)]


def measure_capacity(server: ServerProcess, requests: list[bytes]) -> dict[str, Any]:
    target = Target.parse(server.url, "/classify")
    run = run_async(lambda: closed_loop(target, requests, concurrency=32, duration_s=CAPACITY_S, warmup_s=1.0))
    summary = summarize_run(run)
    assert not summary["errors"], summary["errors"]
    return {
        "throughput_rps": summary["throughput_rps"],
        "latency_ms": summary["latency_ms"],
        "concurrency": 32,
        "seconds": CAPACITY_S,
    }


def record(name: str, result: dict[str, Any]) -> None:
    result = {"test": name, "machine": machine_info(), **result}
    out = os.environ.get("KDSERVE_RELIABILITY_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(result)}")


def test_soak_at_70_percent_of_capacity(server: ServerProcess, requests: list[bytes]) -> None:
    assert server.process is not None
    pid = server.process.pid
    rss_start = rss_bytes(pid)
    capacity = measure_capacity(server, requests)
    rate = 0.7 * capacity["throughput_rps"]
    sampler = RssSampler(pid)
    sampler.start()
    began = time.monotonic()
    target = Target.parse(server.url, "/classify")
    try:
        run = run_async(lambda: open_loop(target, requests, rate, SOAK_S, connections=64, timeout_s=10, drain_s=10))
    finally:
        samples = sampler.stop()
    summary = summarize_run(run)
    statuses = Counter(r.status for r in run.records)
    failures = sum(n for status, n in statuses.items() if status != 200)
    warm_s = min(30.0, 0.2 * SOAK_S)
    rss_warm = next(rss for t, rss in samples if t - began >= warm_s)
    rss_end = samples[-1][1]
    growth = (rss_end - rss_warm) / rss_warm
    record(
        "soak",
        {
            "soak_seconds": SOAK_S,
            "capacity": capacity,
            "rate_rps": round(rate, 1),
            "requests": len(run.records),
            "failed_requests": failures,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "achieved_rps": summary["throughput_rps"],
            "latency_ms": summary["latency_ms"],
            "rss_mb": {
                "start": round(rss_start / 2**20, 1),
                "after_warmup": round(rss_warm / 2**20, 1),
                "end": round(rss_end / 2**20, 1),
                "max": round(max(r for _, r in samples) / 2**20, 1),
            },
            "warmup_seconds": warm_s,
            "rss_growth_after_warmup_percent": round(100 * growth, 2),
        },
    )
    assert failures == 0, statuses
    assert growth <= RSS_GROWTH_LIMIT, f"RSS grew {growth:.1%} after warm-up ({rss_warm} -> {rss_end} bytes)"


class RetryAfterSampler(threading.Thread):
    """One request every 0.1 s on one kept-alive connection until stopped, keeping (monotonic ns, status,
    Retry-After). Connected before the overload: a new connection would wait in the server's
    accept backlog, which measures the kernel, not the answers."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, int, str | None]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=15) as client:
            while not self._halt.is_set():
                sent = time.perf_counter_ns()  # the load generator's clock
                try:
                    r = client.post(self.url + "/classify", json={"text": "the movie was great ."})
                    self.answers.append((sent, r.status_code, r.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    self.answers.append((sent, -1, type(exc).__name__))
                self._halt.wait(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def during(self, start_ns: int, end_ns: int) -> list[tuple[int, str | None]]:
        return [(status, header) for sent, status, header in self.answers if start_ns <= sent < end_ns]


def windows_p50(
    records: list[Any], start_ns: int, window_s: float, count: int, from_send: bool = False
) -> list[float | None]:
    """p50 latency (ms, from the intended send time, or from the actual send with ``from_send``) of
    the 200s intended in each window from ``start_ns``."""
    out: list[float | None] = []
    for k in range(count):
        lo, hi = start_ns + int(k * window_s * 1e9), start_ns + int((k + 1) * window_s * 1e9)
        values = sorted(
            (r.done - (r.sent if from_send else r.intended)) / 1e6
            for r in records
            if lo <= r.intended < hi and r.status == 200
        )
        out.append(round(percentile(values, 50), 3) if values else None)
    return out


def test_overload_at_3x_capacity_then_recovery(server: ServerProcess, requests: list[bytes], tmp_path: Path) -> None:
    capacity = measure_capacity(server, requests)
    rate = 3 * capacity["throughput_rps"]
    probe_rate = max(20.0, min(100.0, 0.05 * capacity["throughput_rps"]))
    pre_s, post_s, window_s = 5.0, 10.0, 0.5
    target = Target.parse(server.url, "/classify")
    out = tmp_path / "overload.json"
    child: list[subprocess.Popen[bytes]] = []

    def overload() -> None:
        time.sleep(pre_s - 1.0)  # the child needs about a second to import and connect
        child.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reliability.overload_client",
                    server.url,
                    str(rate),
                    str(OVERLOAD_S),
                    str(OVERLOAD_CONNECTIONS),
                    str(RAMP_S),
                    str(out),
                ],
                cwd=REPO,
            )
        )
        child[0].wait(RAMP_S + OVERLOAD_S + 120)

    burst = threading.Thread(target=overload)
    retry_sampler = RetryAfterSampler(server.url)
    burst.start()
    retry_sampler.start()
    # Enough connections that no probe request ever waits for a free one on the client side, even
    # when each takes the whole request timeout: with a small pool (8 once), the probe measured its
    # own backlog, which drained seconds after the server had recovered.
    probe_connections = math.ceil(probe_rate * (REQUEST_TIMEOUT_S + 1.0))
    probe = run_async(
        lambda: open_loop(
            target,
            requests,
            probe_rate,
            pre_s + RAMP_S + OVERLOAD_S + post_s,
            connections=probe_connections,
            timeout_s=15,
            drain_s=5,
        )
    )
    burst.join()
    retry_sampler.stop()
    assert child and child[0].returncode == 0, "the overload client failed"
    assert server.process is not None and server.process.poll() is None, "the server died"
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    over = json.loads(out.read_text())
    ramp_records = [Record(*r) for r in over["records"] if r[0] < over["start"]]
    over_records = [Record(*r) for r in over["records"] if r[0] >= over["start"]]

    statuses = Counter(r.status for r in over_records)
    answered = {s: n for s, n in statuses.items() if s != NOT_SENT}
    accepted_service = sorted((r.done - r.sent) / 1e9 for r in over_records if r.status == 200)
    p99_accepted = percentile(accepted_service, 99) if accepted_service else 0.0
    sampled = retry_sampler.during(over["start"], over["end"])
    rejected_samples = [(s, h) for s, h in sampled if s != 200]
    baseline = sorted(
        (r.done - r.intended) / 1e6
        for r in probe.records
        if probe.start <= r.intended < over["began"] and r.status == 200
    )
    baseline_p50 = percentile(baseline, 50)
    # a few ms either way is the shared machine's noise; the overload's own effect is hundreds of ms
    threshold = max(2.0 * baseline_p50, baseline_p50 + 5.0)
    after = windows_p50(probe.records, over["end"], window_s, int(post_s / window_s))
    # recovered: the end of the first window from which every later window is within the threshold
    recovered_at = next(
        (k for k in range(len(after)) if all(p is not None and p <= threshold for p in after[k:])), None
    )
    recovery_s = None if recovered_at is None else (recovered_at + 1) * window_s
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    rejected_by_reason = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("kdserve_rejected_total{")
    }
    sent = [r for r in over_records if r.status != NOT_SENT]
    record(
        "overload",
        {
            "overload_seconds": OVERLOAD_S,
            "capacity": capacity,
            "rate_rps": round(rate, 1),
            "connections": OVERLOAD_CONNECTIONS,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "ramp_seconds": RAMP_S,
            "max_inflight_requests": 512,
            "ramp": {
                "statuses": {str(k): v for k, v in sorted(Counter(r.status for r in ramp_records).items())},
                "accepted_service_s": summarize((r.done - r.sent) / 1e9 for r in ramp_records if r.status == 200),
            },
            "scheduled": len(over_records),
            "sent": len(sent),
            "offered_rps": round(len(sent) / OVERLOAD_S, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted_service_s": summarize(accepted_service),
            "accepted_p99_s": round(p99_accepted, 4),
            "server_rejections_by_reason": rejected_by_reason,
            "retry_after_samples": {
                "requests": len(sampled),
                "rejected": len(rejected_samples),
                "rejected_without_retry_after": sum(1 for _, h in rejected_samples if not h),
                "statuses": dict(Counter(str(s) for s, _ in sampled)),
            },
            "probe_rate_rps": probe_rate,
            "baseline_p50_ms": round(baseline_p50, 3),
            "recovery_threshold_ms": round(threshold, 3),
            "probe_connections": probe_connections,
            "p50_ms_per_half_second_after": after,
            "recovery_s": recovery_s,
            "p50_from_send_ms_per_half_second_after": windows_p50(
                probe.records, over["end"], window_s, int(post_s / window_s), from_send=True
            ),
        },
    )
    # TIMEOUT: the client gave up after 15 s without an answer (seen in 1 of 4 quiet runs before
    # refusals were made cheap: docs/RELIABILITY.md); never acceptable in the steady overload
    assert set(answered) <= {200, 429, 503}, statuses
    assert {r.status for r in ramp_records} <= {200, 429, 503, NOT_SENT, TIMEOUT}, statuses
    assert all(s in (200, 429, 503) for _, s, _ in retry_sampler.answers), retry_sampler.answers
    assert all(h and h.isdigit() for _, h in rejected_samples), rejected_samples
    assert p99_accepted <= REQUEST_TIMEOUT_S, (
        f"accepted p99 {p99_accepted:.3f} s > request_timeout_s {REQUEST_TIMEOUT_S}"
    )
    assert recovery_s is not None, ("p50 never came back to baseline", baseline_p50, threshold, after)
    assert recovery_s <= RECOVERY_LIMIT_S, (
        f"p50 recovered after {recovery_s:.1f} s, target {RECOVERY_LIMIT_S} s",
        after,
        windows_p50(probe.records, over["end"], window_s, int(post_s / window_s), from_send=True),
    )
    # during the ramp a request can be the first on a connection the saturated server has not
    # accepted yet (it waits in the kernel's queue): reported, not failed
    unanswered = sum(1 for r in ramp_records if r.status == TIMEOUT)
    if unanswered:
        pytest.xfail(f"{unanswered} requests of the connection ramp had no answer within the client's 15 s")
