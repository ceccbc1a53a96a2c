"""wrk as the load generator: figures from a client no one here wrote.

``run_wrk`` drives the system's ``wrk`` (Debian's ``apt-get install wrk``) against one URL with
the same request bodies the built-in generator sends, cycling through them, and returns the same
summary shape as ``http_bench.summarize_run`` (throughput, latency percentiles in ms, errors), so
``compare`` can put either generator's numbers in one table.

wrk reports through a Lua ``done`` hook that prints one JSON line (percentiles from its own
HdrHistogram, in microseconds), not by scraping its human text. wrk is a closed-loop generator
(each connection sends its next request when the answer arrives), so its latencies are
closed-loop latencies; its ``-R`` open-loop mode exists only in wrk2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdserve.bench.common import BenchError

#: The JSON line the ``done`` hook prints starts with this marker (wrk's own text precedes it).
MARKER = "KDSERVE_WRK "

_SCRIPT = r"""
local bodies = {%(bodies)s}
local requests = {}
local next_index = 1
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format(nil, "%(path)s", nil, body)
  end
end

function request()
  local r = requests[next_index]
  next_index = next_index %% #requests + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"p999_us": %%d, "max_us": %%d, "mean_us": %%f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def wrk_binary() -> str | None:
    """The ``wrk`` on PATH, or None."""
    return shutil.which("wrk")


def _lua_string(body: bytes) -> str:
    """``body`` as a Lua long string whose brackets cannot occur inside it."""
    text = body.decode("utf-8")
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    # a long string drops one newline right after the opening bracket: start with one of our own
    return f"[{eq}[\n{text}]{eq}]"


def lua_script(path: str, bodies: Sequence[bytes]) -> str:
    """The wrk script that POSTs ``bodies`` to ``path`` in turn and prints a JSON summary."""
    if not bodies:
        raise BenchError("wrk needs at least one request body")
    if not path.startswith("/") or '"' in path or "\\" in path:
        raise BenchError(f"bad request path for wrk: {path!r}")
    listed = ",\n".join(_lua_string(b) for b in bodies)
    return _SCRIPT % {"bodies": listed, "path": path, "marker": MARKER}


def parse_output(stdout: str) -> dict[str, Any]:
    """The summary dict from wrk's output (the marker line the script's ``done`` hook wrote)."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER) :]))
    raise BenchError(f"wrk printed no summary line: {stdout[-500:]!r}")


def summarize(raw: dict[str, Any], connections: int, threads: int) -> dict[str, Any]:
    """wrk's numbers in the shape of ``http_bench.summarize_run`` (so reports and plots take either
    generator): throughput is non-error answers per second, latency in ms, errors by kind."""
    seconds = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    ok = raw["requests"] - raw["status"]
    latency = {
        "count": raw["requests"],
        "mean": round(raw["mean_us"] / 1000, 3),
        "max": round(raw["max_us"] / 1000, 3),
        "p50": round(raw["p50_us"] / 1000, 3),
        "p90": round(raw["p90_us"] / 1000, 3),
        "p99": round(raw["p99_us"] / 1000, 3),
        "p99.9": round(raw["p999_us"] / 1000, 3),
    }
    return {
        "generator": "wrk",
        "mode": "closed",
        "concurrency": connections,
        "threads": threads,
        "seconds": round(seconds, 3),
        "requests": raw["requests"],
        "completed": raw["requests"],
        "ok": ok,
        # as the built-in generator counts: answers with a 2xx/3xx status per second (wrk's own
        # "Requests/sec" also counts the failed ones); its latencies cover every answer (wrk's
        # histogram does not split them by status), so a run with errors says so in ``errors``
        "throughput_rps": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "latency_ms": latency,
        "errors": errors,
    }


def run_wrk(
    url: str,
    bodies: Sequence[bytes],
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 10.0,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """One closed-loop wrk run of ``duration_s`` seconds at ``connections`` connections over
    ``threads`` threads, after an unmeasured ``warmup_s`` run; the summary dict."""
    binary = wrk_binary()
    if binary is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    if connections < threads or threads < 1:
        raise BenchError(f"wrk needs connections ({connections}) >= threads ({threads}) >= 1")
    if not duration_s >= 1:
        raise BenchError(f"wrk measures whole seconds: duration must be >= 1, got {duration_s}")
    base, _, rest = url.partition("://")[2].partition("/")
    path = "/" + rest
    with tempfile.TemporaryDirectory(prefix="kdserve-wrk-") as folder:
        script = Path(folder) / "bodies.lua"
        script.write_text(lua_script(path, bodies), encoding="utf-8")
        root = f"http://{base}/"

        def once(seconds: float) -> str:
            command = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
            command += ["--timeout", f"{timeout_s:g}s", "--latency", "-s", str(script), root]
            proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
            if proc.returncode != 0:
                raise BenchError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            return proc.stdout

        if warmup_s > 0:
            once(warmup_s)
        return summarize(parse_output(once(duration_s)), connections, threads)
