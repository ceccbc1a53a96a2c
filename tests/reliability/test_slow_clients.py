"""The slow-client battery of issue 23, against the real ``kdserve serve`` (a subprocess on
loopback): stalled bodies, stalled headers, oversized headers and a flood of idle connections, each
from a separate attacker process while a normal client (sequential /classify on keep-alive) measures
its success rate and p99; the server's RSS is sampled throughout.

Settings are the defaults except the three timeouts, cut to 2 s so each scenario fits in ~10 s
(the behaviour does not depend on their length). Criteria: stalled bodies and oversized headers keep
>= 90% of the unloaded success rate and p99 <= 3x unloaded (+ 5 ms of timer noise on a shared
2-core machine); idle and stalled-header floods: /health never fails to answer, the normal client is
back to >= 90% success within one timeout of the flood starting; RSS stays under the loaded
baseline + 300 MB; after the attack the server answers as before. Set KDSERVE_RELIABILITY_OUT to
keep the numbers as JSON.
"""

from __future__ import annotations

import multiprocessing
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kdserve.bench.servers import ServerProcess, start_server
from kdserve.bench.stats import percentile
from tests.reliability.test_load import RssSampler, record, rss_bytes

TIMEOUT_S = 2.0
ATTACK_S = 8.0
RSS_BOUND = 300 << 20
IDLE_SOCKETS = 15_000  # the hard fd limit here is 20,000 for the test process and the server alike
STALLED = 512


def attacker(kind: str, port: int, seconds: float) -> None:
    """Runs in its own process: keeps ``kind`` pressure on the server for ``seconds``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    end = time.monotonic() + seconds
    opening = {
        "stalled_body": b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{",
        "stalled_header": b"POST /classify HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "idle": b"",
    }
    if kind == "oversized_header":
        chunk = b"a" * (1 << 20)
        while time.monotonic() < end:  # 4 MB of header per connection, as fast as the server takes it
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    for _ in range(4):
                        sock.sendall(chunk)
                except OSError:
                    pass
        return
    count = IDLE_SOCKETS if kind == "idle" else STALLED
    socks: list[socket.socket] = []

    def open_one() -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            if opening[kind]:
                sock.sendall(opening[kind])
            socks.append(sock)
        except OSError:
            pass

    while time.monotonic() < end:
        while len(socks) < count and time.monotonic() < end:
            open_one()
        if kind == "idle":  # a one-shot flood: opened once, held (or evicted) until the end
            time.sleep(max(0.0, end - time.monotonic()))
            break
        # replace what the server answered or closed: the pressure stays on
        readable, _, _ = select.select(socks, [], [], 0.2)
        for sock in readable:
            socks.remove(sock)
            sock.close()
    for sock in socks:
        sock.close()


class NormalClient(threading.Thread):
    """Sequential /classify requests on one keep-alive client: (start, ok, seconds) each."""

    def __init__(self, url: str, path: str = "/classify") -> None:
        super().__init__(daemon=True)
        self.url, self.path = url, path
        self.records: list[tuple[float, bool, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.halt.is_set():
                started = time.monotonic()
                try:
                    if self.path == "/health":
                        ok = client.get("/health").status_code == 200
                    else:
                        ok = client.post(self.path, json={"text": "the movie was great"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.records.append((started, ok, time.monotonic() - started))
                time.sleep(0.005)


def stats(records: list[tuple[float, bool, float]], since: float = 0.0) -> dict[str, Any]:
    kept = [r for r in records if r[0] >= since]
    ok = [r[2] for r in kept if r[1]]
    return {
        "requests": len(kept),
        "success": round(len(ok) / len(kept), 4) if kept else 0.0,
        "p99_ms": round(percentile(ok, 99) * 1000, 2) if ok else None,
    }


@pytest.fixture(scope="module")
def server(tiny_bundles: Path) -> Iterator[ServerProcess]:
    extra = ["--body-timeout-s", "2", "--header-timeout-s", "2", "--idle-timeout-s", "2"]
    with start_server("kdserve", bundles_root=tiny_bundles, model="tiny-textcnn", extra=extra) as process:
        yield process


def run_scenario(server: ServerProcess, kind: str) -> dict[str, Any]:
    assert server.process is not None
    pid, url, port = server.process.pid, server.url, server.port
    baseline_client = NormalClient(url)
    baseline_client.start()
    time.sleep(3)
    baseline_client.halt.set()
    baseline_client.join()
    unloaded = stats(baseline_client.records[20:])
    rss_before = rss_bytes(pid)
    sampler = RssSampler(pid, every_s=0.2)
    sampler.start()
    client, health = NormalClient(url), NormalClient(url, "/health")
    attack = multiprocessing.get_context("fork").Process(target=attacker, args=(kind, port, ATTACK_S))
    started = time.monotonic()
    attack.start()
    client.start()
    health.start()
    attack.join(ATTACK_S + 60)
    ended = time.monotonic()
    time.sleep(1.0)
    client.halt.set()
    health.halt.set()
    client.join()
    health.join()
    rss = sampler.stop()
    during = [r for r in client.records if started <= r[0] < ended]
    after = [r for r in client.records if r[0] >= ended + 0.5]
    result = {
        "scenario": kind,
        "timeouts_s": TIMEOUT_S,
        "attack_s": ATTACK_S,
        "unloaded": unloaded,
        "during": stats(during),
        "after_one_timeout": stats(during, since=started + TIMEOUT_S),
        "recovered": stats(after),
        "health": stats(health.records),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(max(b for _, b in rss) / 2**20, 1),
        "rss_after_mb": round(rss_bytes(pid) / 2**20, 1),
    }
    # what the edge did about it, from the server's own counters (cumulative over the module's scenarios)
    metrics = httpx.get(url + "/metrics", timeout=10).text
    result["edge_closed_total"] = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("kdserve_edge_closed_total{")
    }
    record(f"slow-clients-{kind}", result)
    assert max(b for _, b in rss) - rss_before < RSS_BOUND, result
    assert result["recovered"]["success"] == 1.0 and result["health"]["success"] >= 0.99, result
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["stalled_body", "oversized_header"])
def test_service_holds_under(server: ServerProcess, kind: str) -> None:
    result = run_scenario(server, kind)
    assert result["during"]["success"] >= 0.9 * result["unloaded"]["success"], result
    assert result["during"]["p99_ms"] <= 3 * result["unloaded"]["p99_ms"] + 5, result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["stalled_header", "idle"])
def test_service_recovers_within_one_timeout(server: ServerProcess, kind: str) -> None:
    result = run_scenario(server, kind)
    assert result["after_one_timeout"]["success"] >= 0.9 * result["unloaded"]["success"], result
