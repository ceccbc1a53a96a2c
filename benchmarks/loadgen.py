"""A fast, dependency-free HTTP/1.1 load generator: closed loop, open loop, replay.

Why not httpx/aiohttp: building a request object and parsing headers into dicts costs more
than a fast server spends answering, so the client, not the server, would set the ceiling.
Here every request is pre-built bytes written to a keep-alive connection, and the response
parser reads the status line, Content-Length (or chunked framing) and nothing else. The event
loop is uvloop when installed (it is with ``uvicorn[standard]``).

Two ways to load a server:

* **closed loop** (``closed_loop``): ``concurrency`` connections, each sends its next request
  as soon as the previous answer arrives. Throughput at saturation; latency under it.
* **open loop** (``open_loop``): requests are *scheduled* at a fixed rate, request ``i`` at
  ``t0 + i / rate``, whatever the server does, and latency is ``done - intended``. When the
  server stalls, requests that should have been sent during the stall wait for a connection
  and their wait is counted: no coordinated omission (Gil Tene's term; wrk2 does the same).
  ``service`` (``done - sent``) is also kept, to show what a closed-loop tool would report.

Times are ``time.perf_counter_ns()``. Status codes are kept as ints; failures without an
HTTP answer use the negative codes in ``FAILURES``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from kdserve.bench.common import BenchError
from kdserve.bench.http_client import (
    CONNECTION_ERROR,
    FAILURES,
    NOT_SENT,
    TIMEOUT,
    Client,
    Target,
)

__all__ = [
    "CONNECTION_ERROR",
    "FAILURES",
    "NOT_SENT",
    "TIMEOUT",
    "Client",
    "Record",
    "RunResult",
    "Target",
    "closed_loop",
    "intended_times",
    "open_loop",
    "probe",
    "replay",
    "run_async",
]

T = TypeVar("T")
now_ns = time.perf_counter_ns


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh uvloop loop when available, else asyncio's default loop."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


class Record(NamedTuple):
    """One request: intended send time, actual send time, completion time (ns), status."""

    intended: int
    sent: int
    done: int
    status: int


@dataclass
class RunResult:
    """Raw records of one run plus the window that counts (``start`` .. ``end``, ns)."""

    mode: str
    start: int
    end: int
    records: list[Record]
    parameters: dict[str, Any] = field(default_factory=dict)
    bodies: list[bytes | None] | None = None


async def _connect_all(clients: Sequence[Client]) -> None:
    try:
        await asyncio.gather(*(client.connect() for client in clients))
    except OSError as exc:
        for client in clients:
            client.close()
        raise BenchError(f"cannot connect to {clients[0].target.url}: {exc.strerror or exc}") from None


async def closed_loop(
    target: Target,
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    timeout_s: float = 10.0,
    total_requests: int | None = None,
) -> RunResult:
    """``concurrency`` connections in a send-wait-send loop over ``requests`` (cycled).

    With ``total_requests`` exactly that many are sent and ``duration_s``/``warmup_s`` are ignored;
    otherwise requests sent during ``warmup_s`` are discarded and sending stops after ``duration_s``.
    """
    if concurrency < 1 or not requests:
        raise BenchError("closed loop needs concurrency >= 1 and at least one request")
    clients = [Client(target, timeout_s) for _ in range(concurrency)]
    await _connect_all(clients)
    records: list[Record] = []
    counter = 0
    start = now_ns()
    measure_from = start if total_requests is not None else start + int(warmup_s * 1e9)
    stop = None if total_requests is not None else measure_from + int(duration_s * 1e9)

    async def worker(client: Client) -> None:
        nonlocal counter
        while True:
            index = counter
            if total_requests is not None and index >= total_requests:
                return
            counter += 1
            sent = now_ns()
            if stop is not None and sent >= stop:
                return
            status, _ = await client.send(requests[index % len(requests)])
            records.append(Record(sent, sent, now_ns(), status))

    await asyncio.gather(*(worker(c) for c in clients))
    for client in clients:
        client.close()
    end = stop if stop is not None else now_ns()
    params = {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "total_requests": total_requests,
    }
    return RunResult("closed", measure_from, end, records, params)


def intended_times(start_ns: int, rate: float, count: int) -> list[int]:
    """Send schedule of an open loop: ``start + i * 1e9 / rate`` ns, computed from ``i`` (no drift)."""
    return [start_ns + round(i * 1e9 / rate) for i in range(count)]


async def open_loop(
    target: Target,
    requests: Sequence[bytes],
    rate: float,
    duration_s: float,
    warmup_s: float = 0.0,
    connections: int = 64,
    timeout_s: float = 10.0,
    drain_s: float = 5.0,
) -> RunResult:
    """Requests scheduled at ``rate`` per second for ``warmup_s + duration_s``; latency from intended time.

    ``connections`` keep-alive connections share the schedule: each takes the next request,
    waits for its intended time (not at all if already late) and sends it. A request still
    unsent ``drain_s`` after the schedule ends is recorded as ``NOT_SENT``.
    """
    if rate <= 0 or connections < 1 or not requests:
        raise BenchError("open loop needs rate > 0, connections >= 1 and at least one request")
    clients = [Client(target, timeout_s) for _ in range(connections)]
    await _connect_all(clients)
    count = max(1, round((warmup_s + duration_s) * rate))
    t0 = now_ns() + 20_000_000  # 20 ms lead: every worker is waiting before the first send is due
    schedule = intended_times(t0, rate, count)
    schedule_end = t0 + int((warmup_s + duration_s) * 1e9)
    give_up = schedule_end + int(drain_s * 1e9)
    records: list[Record] = []
    counter = 0

    async def worker(client: Client) -> None:
        nonlocal counter
        while counter < count:
            index = counter
            counter += 1
            intended = schedule[index]
            delay = intended - now_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
                # uvloop's timers have millisecond resolution and can fire up to ~0.5 ms early: never
                # send before the intended time, and wait out the rest in 1 ms steps rather than spin
                # (spinning cost ~10% of a core at 1,000 req/s, taken from the server it shares with).
                while (delay := intended - now_ns()) > 0:
                    await asyncio.sleep(max(delay / 1e9, 0.001))
            sent = now_ns()
            if sent > give_up:
                records.append(Record(intended, sent, sent, NOT_SENT))
                continue
            status, _ = await client.send(requests[index % len(requests)])
            records.append(Record(intended, sent, now_ns(), status))

    await asyncio.gather(*(worker(c) for c in clients))
    for client in clients:
        client.close()
    params = {
        "rate": rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "connections": connections,
        "drain_s": drain_s,
    }
    return RunResult("open", t0 + int(warmup_s * 1e9), schedule_end, records, params)


async def replay(target: Target, requests: Sequence[bytes], concurrency: int, timeout_s: float = 30.0) -> RunResult:
    """Send every request once (``concurrency`` at a time), keeping each response body in order."""
    if not requests:
        raise BenchError("nothing to replay")
    clients = [Client(target, timeout_s, keep_body=True) for _ in range(min(concurrency, len(requests)))]
    await _connect_all(clients)
    slots: list[Record | None] = [None] * len(requests)
    bodies: list[bytes | None] = [None] * len(requests)
    counter = 0
    start = now_ns()

    async def worker(client: Client) -> None:
        nonlocal counter
        while counter < len(requests):
            index = counter
            counter += 1
            sent = now_ns()
            status, body = await client.send(requests[index])
            slots[index] = Record(sent, sent, now_ns(), status)
            bodies[index] = body

    await asyncio.gather(*(worker(c) for c in clients))
    for client in clients:
        client.close()
    records = [r for r in slots if r is not None]
    return RunResult("replay", start, now_ns(), records, {"concurrency": concurrency}, bodies)


async def probe(target: Target, body: bytes | None, timeout_s: float = 10.0) -> tuple[int, bytes | None]:
    """One request with its body kept: checks the target answers before a run starts."""
    client = Client(target, timeout_s, keep_body=True)
    try:
        await _connect_all([client])
        return await client.send(target.request(body))
    finally:
        client.close()
