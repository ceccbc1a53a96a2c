"""HTTP sweeps: closed-loop concurrency, open-loop arrival rate, and the generator's own ceiling.

Latency percentiles are over answers with a 2xx status (a fast 429 is not a fast answer);
every other outcome is counted by status in ``errors``. Throughput is 2xx answers per second
of the measured window.

Two generators measure the closed loop: ``builtin`` (``loadgen``, asyncio) and ``wrk`` (the
system's wrk, ``kdserve.bench.wrk``: a client no one here wrote, and a cheaper one, so it leaves
the server more of a shared machine). Open-loop runs always use the built-in generator (wrk has no
open-loop mode; that is wrk2). Every result says which generator measured it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdserve.bench.common import BenchError
from kdserve.bench.loadgen import (
    FAILURES,
    RunResult,
    Target,
    closed_loop,
    event_loop_name,
    open_loop,
    probe,
    run_async,
)
from kdserve.bench.stats import summarize
from kdserve.core.errors import ConfigError

DEFAULT_TEMPLATE = '{"text": {text}}'
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_RATE_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
GENERATORS = ("builtin", "wrk")


@dataclass
class SweepConfig:
    """One HTTP sweep. ``rates`` (requests/s) wins over ``rate_fractions`` (of the best closed-loop
    throughput); an empty ``concurrency`` skips the closed loop (then ``rates`` is required)."""

    concurrency: list[int] = field(default_factory=lambda: list(DEFAULT_CONCURRENCY))
    rates: list[float] = field(default_factory=list)
    rate_fractions: list[float] = field(default_factory=lambda: list(DEFAULT_RATE_FRACTIONS))
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: int = 64
    timeout_s: float = 10.0
    drain_s: float = 5.0
    #: which client runs the closed-loop levels (``GENERATORS``); open-loop runs are always built-in
    generator: str = "builtin"
    #: wrk's threads (``-t``): 1 leaves the server the most of a 2-core machine
    wrk_threads: int = 1

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(f"--generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if self.wrk_threads < 1:
            raise ConfigError(f"--wrk-threads must be >= 1, got {self.wrk_threads}")
        if self.generator == "wrk" and min(self.concurrency, default=self.wrk_threads) < self.wrk_threads:
            raise ConfigError(f"wrk needs every concurrency level >= --wrk-threads ({self.wrk_threads})")
        if any(c < 1 for c in self.concurrency):
            raise ConfigError(f"concurrency levels must be >= 1, got {self.concurrency}")
        if any(not r > 0 for r in self.rates) or any(not 0 < f <= 2 for f in self.rate_fractions):
            raise ConfigError("rates must be > 0 and rate fractions within (0, 2]")
        if not self.concurrency and not self.rates:
            raise ConfigError("an open-loop-only sweep needs explicit --rates")
        if not self.duration_s > 0 or self.warmup_s < 0 or not self.timeout_s > 0 or self.drain_s < 0:
            raise ConfigError("duration and timeout must be > 0, warm-up and drain >= 0")
        if self.connections < 1:
            raise ConfigError(f"connections must be >= 1, got {self.connections}")


def render_bodies(
    texts: Sequence[str], template: str = DEFAULT_TEMPLATE, extra: dict[str, str] | None = None
) -> list[bytes]:
    """Request bodies: ``{text}`` in the template becomes the JSON string of each text, and
    ``{name}`` for each ``extra`` item the JSON of its value. Each body must be valid JSON."""
    if "{text}" not in template:
        raise ConfigError(f"--body-template must contain {{text}}, got {template!r}")
    bodies = []
    for text in texts:
        body = template.replace("{text}", json.dumps(text))
        for name, value in (extra or {}).items():
            body = body.replace("{" + name + "}", json.dumps(value))
        bodies.append(body.encode("utf-8"))
    try:
        json.loads(bodies[0]) if bodies else None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--body-template does not give valid JSON ({exc.msg}): {bodies[0][:120]!r}") from None
    return bodies


def render_batch_bodies(texts: Sequence[str], batch_size: int) -> list[bytes]:
    """``{"texts": [...]}`` bodies of ``batch_size`` texts each, cycling through ``texts`` (the
    requests a moderation pipeline sends: one call per page of comments)."""
    if batch_size < 1 or not texts:
        raise ConfigError(f"a batch needs >= 1 text and batch size >= 1, got {len(texts)} texts, {batch_size}")
    count = max(len(texts) // batch_size, 1)
    return [
        json.dumps({"texts": [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]}).encode("utf-8")
        for i in range(count)
    ]


def status_name(code: int) -> str:
    return FAILURES.get(code, str(code))


def summarize_run(run: RunResult) -> dict[str, Any]:
    """Counts, throughput and latency percentiles (ms) of the measured part of one run."""
    if run.mode == "open":
        measured = [r for r in run.records if run.start <= r.intended < run.end]
    elif run.parameters.get("total_requests") is not None:
        measured = list(run.records)
    else:
        measured = [r for r in run.records if run.start <= r.sent < run.end]
    ok = [r for r in measured if 200 <= r.status < 300]
    counts = Counter(status_name(r.status) for r in measured)
    errors = {name: n for name, n in sorted(counts.items()) if not name.startswith("2")}
    window_ns = max(run.end - run.start, 1)
    if run.mode == "open" and ok:
        # Overloaded, answers keep arriving after the schedule ends: rate over the time they took.
        window_ns = max(window_ns, max(r.done for r in ok) - run.start)
    elif run.mode == "closed" and run.parameters.get("total_requests") is not None and measured:
        window_ns = max(max(r.done for r in measured) - run.start, 1)
    out: dict[str, Any] = {
        "mode": run.mode,
        **run.parameters,
        "requests": len(measured),
        "ok": len(ok),
        "errors": errors,
        "status_counts": dict(sorted(counts.items())),
        "total_sent_including_warmup": len(run.records),
        "throughput_rps": round(len(ok) / (window_ns / 1e9), 2),
        "latency_ms": summarize((r.done - r.intended for r in ok), 1e-6),
    }
    if run.mode == "open":
        out["service_ms"] = summarize((r.done - r.sent for r in ok), 1e-6)
        out["send_lag_ms"] = summarize((r.sent - r.intended for r in measured), 1e-6)
    return out


def run_measured(factory: Any) -> dict[str, Any]:
    """Run a load coroutine and summarize it, with the generator's own CPU use: on a machine it
    shares with the server, every core-second the client burns is one the server did not get."""
    import time

    cpu, wall = time.process_time(), time.perf_counter()
    run = run_async(factory)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    summary = summarize_run(run)
    summary["client_cpu_percent"] = round(100 * cpu / wall, 1) if wall > 0 else None
    sent = max(len(run.records), 1)
    summary["client_cpu_us_per_request"] = round(cpu / sent * 1e6, 1)
    return summary


def check_target(target: Target, body: bytes, timeout_s: float = 30.0) -> dict[str, Any]:
    """One real request before a sweep: fail with one clear line if the target is down or refuses it."""
    status, answer = run_async(lambda: probe(target, body, timeout_s))
    if status < 0:
        raise BenchError(f"{target.url}: no answer ({status_name(status)})")
    if not 200 <= status < 300:
        snippet = (answer or b"")[:200].decode("utf-8", "replace")
        raise BenchError(f"{target.url} answered {status} to the first request: {snippet}")
    try:
        return dict(json.loads(answer or b"{}"))
    except (json.JSONDecodeError, TypeError, ValueError):
        return {}


def sweep(
    target: Target,
    bodies: Sequence[bytes],
    config: SweepConfig,
    label: str = "",
    log: Any = None,
    texts_per_request: int = 1,
) -> dict[str, Any]:
    """Closed-loop concurrency sweep, then open-loop rates; returns both with the best throughput
    (and, for requests of ``texts_per_request`` texts each, texts/s beside req/s)."""
    say = log or (lambda message: None)
    check_target(target, bodies[0], config.timeout_s)
    requests = [target.request(body) for body in bodies]
    closed: list[dict[str, Any]] = []
    for level in config.concurrency:
        closed.append(closed_run(target, bodies, requests, level, config))
        closed[-1]["texts_per_s"] = round(closed[-1]["throughput_rps"] * texts_per_request, 1)
        say(
            f"{label} closed loop c={level}: {closed[-1]['throughput_rps']:.0f} req/s, "
            f"p99 {closed[-1]['latency_ms']['p99']} ms, errors {closed[-1]['errors'] or 0}"
        )
    best = max(closed, key=lambda r: r["throughput_rps"]) if closed else None
    rates = list(config.rates)
    if not rates and best is not None:
        rates = [round(best["throughput_rps"] * f, 1) for f in config.rate_fractions if best["throughput_rps"] * f > 0]
    opened: list[dict[str, Any]] = []
    for rate in rates:
        opened.append(open_run(target, requests, rate, config))
        say(
            f"{label} open loop {rate:g} req/s: achieved {opened[-1]['throughput_rps']:.0f}, "
            f"p99 {opened[-1]['latency_ms']['p99']} ms, errors {opened[-1]['errors'] or 0}"
        )
    return {
        "target": target.url,
        "label": label,
        "generator": config.generator,
        "event_loop": event_loop_name(),
        "config": config.__dict__.copy(),
        "closed_loop": closed,
        "open_loop": opened,
        "max_throughput_rps": best["throughput_rps"] if best else None,
        "best_concurrency": best["concurrency"] if best else None,
        "texts_per_request": texts_per_request,
        "max_texts_per_s": best["texts_per_s"] if best else None,
    }


def closed_run(
    target: Target, bodies: Sequence[bytes], requests: Sequence[bytes], level: int, config: SweepConfig
) -> dict[str, Any]:
    """One closed-loop level with ``config.generator``: the summary dict (which says its generator)."""
    if config.generator == "wrk":
        from kdserve.bench.wrk import run_wrk

        return run_wrk(
            target.url,
            bodies,
            level,
            config.duration_s,
            threads=min(config.wrk_threads, level),
            timeout_s=config.timeout_s,
            warmup_s=config.warmup_s,
        )
    summary = run_measured(
        lambda: closed_loop(target, requests, level, config.duration_s, config.warmup_s, config.timeout_s)
    )
    summary["generator"] = "builtin"
    return summary


def open_run(target: Target, requests: Sequence[bytes], rate: float, config: SweepConfig) -> dict[str, Any]:
    """One open-loop run over pre-built request bytes (``Target.request``), summarized."""
    return run_measured(
        lambda: open_loop(
            target,
            requests,
            rate,
            config.duration_s,
            config.warmup_s,
            config.connections,
            config.timeout_s,
            config.drain_s,
        )
    )


def measure_ceiling(
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    concurrency: Sequence[int] = (16, 64),
    log_dir: str | None = None,
    generator: str = "builtin",
) -> dict[str, Any]:
    """The generator's requests/s against the trivial server (a subprocess on this machine)."""
    from kdserve.bench.servers import start_server

    runs = []
    with start_server("trivial", log_dir=log_dir, start_timeout_s=30) as server:
        target = Target.parse(server.url, "/classify")
        body = render_bodies(["a constant text"])[0]
        check_target(target, body)
        requests = [target.request(body)]
        # wrk measures whole seconds: at least one, after at least one of warm-up
        level_config = SweepConfig(
            concurrency=list(concurrency),
            rate_fractions=[],
            duration_s=max(duration_s, 1.0) if generator == "wrk" else duration_s,
            warmup_s=warmup_s,
            generator=generator,
        )
        for level in concurrency:
            runs.append(closed_run(target, [body], requests, level, level_config))
    best = max(runs, key=lambda r: r["throughput_rps"])
    return {
        "server": "kdserve.bench.trivial_server",
        "generator": generator,
        "event_loop": event_loop_name(),
        "runs": runs,
        "ceiling_rps": best["throughput_rps"],
        "best_concurrency": best["concurrency"],
    }


def generator_bound_note(max_rps: float | None, ceiling: dict[str, Any] | None) -> str | None:
    """A warning when a server's best throughput comes close to what the generator can send."""
    if not max_rps or not ceiling or not ceiling.get("ceiling_rps"):
        return None
    share = max_rps / ceiling["ceiling_rps"]
    if share >= 0.5:
        return (
            f"{max_rps:.0f} req/s is {share:.0%} of the generator's ceiling ({ceiling['ceiling_rps']:.0f} req/s): "
            "the client shares the cores and limits this number"
        )
    return None


def run_http_bench(
    target: Target,
    texts: Sequence[str],
    config: SweepConfig,
    template: str = DEFAULT_TEMPLATE,
    label: str = "",
    ceiling: bool = True,
    log: Any = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """The ``kdserve bench http`` result: the generator's ceiling, then the sweep against ``target``
    (``batch_size`` > 1: ``{"texts": [...]}`` bodies of that many texts, instead of the template)."""
    from kdserve.bench.common import machine_info

    say = log or (lambda message: None)
    bodies = render_batch_bodies(texts, batch_size) if batch_size > 1 else render_bodies(texts, template)
    check_target(target, bodies[0], config.timeout_s)  # before spending time on the ceiling
    limit = measure_ceiling(generator=config.generator) if ceiling else None
    if limit:
        say(f"load generator ceiling: {limit['ceiling_rps']:.0f} req/s against the trivial server")
    result = sweep(target, bodies, config, label=label or target.url, log=say, texts_per_request=batch_size)
    return {
        "kind": "http",
        "machine": machine_info(),
        "generator": config.generator,
        "batch_size": batch_size,
        "template": template if batch_size == 1 else '{"texts": [...]}',
        "texts": len(texts),
        "generator_ceiling": limit,
        "sweep": result,
        "note": generator_bound_note(result["max_throughput_rps"], limit),
    }
