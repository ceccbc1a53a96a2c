"""The load generator against the trivial server started as a subprocess: schedules, counts, errors,
and latency measured from intended send times (no coordinated omission)."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kdserve.bench.common import BenchError
from kdserve.bench.http_bench import check_target, render_bodies, summarize_run
from kdserve.bench.http_client import _dechunk
from kdserve.bench.loadgen import (
    NOT_SENT,
    TIMEOUT,
    Target,
    closed_loop,
    intended_times,
    open_loop,
    replay,
    run_async,
)
from kdserve.bench.servers import ServerProcess, free_port, start_server
from kdserve.core.errors import ConfigError

BODY = b'{"text": "a film"}'


@contextmanager
def trivial(*extra: str) -> Iterator[Target]:
    with start_server("trivial", start_timeout_s=30, extra=list(extra)) as server:
        yield Target.parse(server.url, "/classify")


def server_count(target: Target) -> int:
    with urllib.request.urlopen(f"http://{target.host}:{target.port}/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def test_intended_times_are_evenly_spaced_without_drift() -> None:
    assert intended_times(1_000, 200.0, 4) == [1_000, 5_001_000, 10_001_000, 15_001_000]
    times = intended_times(0, 3.0, 3001)  # 333,333,333.3 ns apart: rounding must not accumulate
    assert times[-1] == 1_000_000_000_000
    assert {b - a for a, b in zip(times, times[1:])} <= {333_333_333, 333_333_334}


def test_open_loop_sends_on_schedule_at_the_target_rate() -> None:
    with trivial() as target:
        run = run_async(lambda: open_loop(target, [target.request(BODY)], rate=200.0, duration_s=0.5, connections=8))
        assert server_count(target) == 100
    assert len(run.records) == 100 and all(r.status == 200 for r in run.records)
    intended = sorted(r.intended for r in run.records)
    assert {b - a for a, b in zip(intended, intended[1:])} == {5_000_000}  # exactly 1/rate apart
    assert all(r.sent >= r.intended and r.done > r.sent for r in run.records)
    summary = summarize_run(run)
    assert summary["requests"] == 100 and summary["ok"] == 100 and summary["errors"] == {}
    assert 150 < summary["throughput_rps"] <= 201  # the schedule, not the server, sets the rate


def test_open_loop_charges_a_stall_to_every_request_it_delayed() -> None:
    """A 400 ms stop-the-world pause: the open loop sees ~40 late requests whose latency falls from
    ~400 ms to ~0 as their intended time nears the end of the pause (they all finish together);
    a closed loop with one connection sees one slow request and a clean p90."""
    pause = ("--pause-after-ms", "200", "--pause-for-ms", "400")
    with trivial(*pause) as target:
        open_run = run_async(
            lambda: open_loop(target, [target.request(BODY)], rate=100.0, duration_s=1.0, connections=16)
        )
    with trivial(*pause) as target:
        closed_run = run_async(lambda: closed_loop(target, [target.request(BODY)], 1, duration_s=1.0))
    opened, closed = summarize_run(open_run), summarize_run(closed_run)
    assert opened["ok"] == 100
    late = [r for r in open_run.records if r.done - r.intended > 50e6]
    assert 25 <= len(late) <= 45
    finish = [r.done for r in late]
    assert max(finish) - min(finish) < 60e6  # every delayed request completes when the pause ends
    assert opened["latency_ms"]["max"] > 330 and opened["latency_ms"]["p90"] > 200
    # the one request caught in the pause waits from its send to the pause's end: most of the 400 ms,
    # less any client stall that straddled the pause's start (294 ms seen once on a busy CI machine) ...
    assert [r.done - r.sent > 150e6 for r in closed_run.records].count(True) == 1
    assert closed["latency_ms"]["max"] > 200
    assert closed["latency_ms"]["p90"] < 50  # ... and a closed loop hides the rest


def test_overloaded_server_gives_growing_latency_not_a_flat_line() -> None:
    """A serial server with 10 ms per request (100/s) offered 200/s: the backlog grows by ~5 ms per
    request, so latency from intended time climbs to ~1 s, while service time (from the actual
    send, what a closed loop reports) stays flat at a few queued requests."""
    with trivial("--delay-ms", "10", "--serial") as target:
        run = run_async(lambda: open_loop(target, [target.request(BODY)], rate=200.0, duration_s=1.0, connections=4))
    records = sorted(run.records, key=lambda r: r.intended)
    assert len(records) == 200 and all(r.status == 200 for r in records)
    fifths = [records[i * 40 : (i + 1) * 40] for i in range(5)]
    means = [sum(r.done - r.intended for r in part) / len(part) / 1e6 for part in fifths]
    assert all(b > a for a, b in zip(means, means[1:])), means  # rising, fifth after fifth
    assert means[-1] - means[0] > 500, means
    service = summarize_run(run)["service_ms"]
    assert service["p99"] < 150 and summarize_run(run)["latency_ms"]["max"] > 700


def test_closed_loop_sends_exactly_the_requested_count_and_counts_statuses() -> None:
    with trivial("--status-cycle", "200,200,429,503") as target:
        run = run_async(lambda: closed_loop(target, [target.request(BODY)], 8, duration_s=0, total_requests=240))
        assert server_count(target) == 240
    summary = summarize_run(run)
    assert summary["requests"] == 240 and summary["ok"] == 120
    assert summary["errors"] == {"429": 60, "503": 60}
    assert summary["status_counts"] == {"200": 120, "429": 60, "503": 60}
    assert summary["latency_ms"]["count"] == 120  # latency is over 2xx answers only


def test_closed_loop_duration_mode_counts_match_the_server_and_drop_warmup() -> None:
    with trivial() as target:
        run = run_async(lambda: closed_loop(target, [target.request(BODY)], 4, duration_s=0.5, warmup_s=0.2))
        assert server_count(target) == len(run.records)  # every request sent was answered and recorded
    summary = summarize_run(run)
    assert 0 < summary["requests"] < len(run.records)  # the warm-up's requests are not measured
    assert summary["throughput_rps"] == round(summary["ok"] / 0.5, 2)
    assert summary["total_sent_including_warmup"] == len(run.records)


def test_timeouts_are_counted_as_errors() -> None:
    with trivial("--delay-ms", "3000") as target:
        run = run_async(lambda: closed_loop(target, [target.request(BODY)], 1, 0, timeout_s=0.2, total_requests=2))
    assert [r.status for r in run.records] == [TIMEOUT, TIMEOUT]
    assert summarize_run(run)["errors"] == {"timeout": 2}


def test_open_loop_gives_up_on_requests_it_could_not_send_in_time() -> None:
    with trivial("--delay-ms", "300", "--serial") as target:
        run = run_async(
            lambda: open_loop(
                target, [target.request(BODY)], rate=50.0, duration_s=0.2, connections=1, drain_s=0.1, timeout_s=5
            )
        )
    statuses = [r.status for r in sorted(run.records, key=lambda r: r.intended)]
    assert len(statuses) == 10 and statuses[0] == 200 and NOT_SENT in statuses
    assert summarize_run(run)["errors"]["not_sent"] == statuses.count(NOT_SENT)


def test_replay_keeps_bodies_in_request_order() -> None:
    with trivial() as target:
        bodies = [target.request(b) for b in render_bodies([f"text {i}" for i in range(20)])]
        run = run_async(lambda: replay(target, bodies, concurrency=4))
    assert len(run.records) == 20 and len(run.bodies or []) == 20
    assert all(json.loads(body or b"")["model"] == "trivial" for body in run.bodies or [])


def test_unreachable_target_is_one_clear_error() -> None:
    target = Target.parse(f"http://127.0.0.1:{free_port()}", "/classify")
    with pytest.raises(BenchError, match="cannot connect to http://127.0.0.1:"):
        run_async(lambda: closed_loop(target, [target.request(BODY)], 2, 0.1))
    with pytest.raises(BenchError, match="cannot connect"):
        check_target(target, BODY)


def test_target_that_refuses_the_first_request_is_named() -> None:
    with trivial("--status-cycle", "503") as target:
        with pytest.raises(BenchError, match="answered 503 to the first request"):
            check_target(target, BODY)


def test_target_parsing() -> None:
    assert Target.parse("http://localhost:8000", "/classify").url == "http://localhost:8000/classify"
    assert Target.parse("127.0.0.1:9000/x").path == "/x"
    assert Target.parse("http://h").port == 80
    with pytest.raises(BenchError, match="only plain http"):
        Target.parse("https://example.com")
    with pytest.raises(BenchError, match="must start with '/'"):
        Target.parse("http://h:1", "classify")


def test_chunked_bodies_are_reassembled() -> None:
    data = bytearray(b"HEAD4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\nNEXT")
    assert _dechunk(data, 4) == (b"Wikipedia", len(data) - 4)
    assert _dechunk(bytearray(b"4\r\nWik"), 0) == (b"", -1)  # incomplete: wait for more bytes


def test_body_template_is_json_escaped_and_validated() -> None:
    bodies = render_bodies(['say "hi"\n', "café"], '{"text": {text}, "model": {m}}', {"m": "tiny"})
    assert [json.loads(b) for b in bodies] == [
        {"text": 'say "hi"\n', "model": "tiny"},
        {"text": "café", "model": "tiny"},
    ]
    with pytest.raises(ConfigError, match="must contain"):
        render_bodies(["x"], '{"inputs": "x"}')
    with pytest.raises(ConfigError, match="valid JSON"):
        render_bodies(["x"], '{"text": {text}')


def test_server_that_exits_or_never_gets_ready_is_an_error_and_is_torn_down() -> None:
    port = free_port()
    crash = ServerProcess("crash", [sys.executable, "-c", "print('boom: no bundles'); raise SystemExit(3)"], port)
    with pytest.raises(BenchError, match=r"crash exited with status 3 before it was ready: boom: no bundles"):
        crash.start()
    sleeper = ServerProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], port, start_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(BenchError, match="was not ready .* within 0 s|was not ready .* within 1 s"):
        sleeper.start()
    assert time.monotonic() - started < 15 and sleeper.process is None  # killed, not left behind
