"""The overload's load generator, run as its own process by test_load.py.

Why a process: a burst and the latency probe sharing one event loop disturb each other (after a
burst ended, the probe in the same loop read 2-3x its baseline p50 for ~9 s, while the server,
probed from a separate process, was back to baseline within 0.5 s). Real overload comes from
other clients too.

    python -m tests.reliability.overload_client URL RATE SECONDS CONNECTIONS RAMP_SECONDS OUT.json

sends an open loop of distinct /classify requests for RAMP_SECONDS + SECONDS and writes the
schedule (``began``; ``start``..``end``, the part after the ramp) and every record (intended,
sent, done, status; ns on the monotonic clock all processes share) to OUT.json. The ramp is
when the server accepts the many new connections: a request that is the first on a connection
the server has not accepted yet waits in the kernel, which says nothing about steady overload.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdserve.bench.http_bench import render_bodies
from kdserve.bench.loadgen import Target, open_loop, run_async
from tests.bundles import sentiment_texts


def main(argv: list[str]) -> int:
    url, rate, seconds, connections = argv[0], float(argv[1]), float(argv[2]), int(argv[3])
    ramp, out = float(argv[4]), Path(argv[5])
    target = Target.parse(url, "/classify")
    texts = [t for t, _ in sentiment_texts(2000, seed=13)]
    requests = [target.request(body) for body in render_bodies(texts)]
    # drain_s=0: the overload stops when its schedule does; what could not be sent by then never is
    run = run_async(
        lambda: open_loop(
            target, requests, rate, seconds, warmup_s=ramp, connections=connections, timeout_s=15, drain_s=0
        )
    )
    began = run.start - int(ramp * 1e9)
    out.write_text(
        json.dumps({"began": began, "start": run.start, "end": run.end, "records": [list(r) for r in run.records]})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
