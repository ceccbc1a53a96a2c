"""Percentiles and latency summaries, in plain Python so the numbers are reproducible anywhere.

Interpolation method: linear between closest ranks, Hyndman & Fan (1996) definition 7, the
default of ``numpy.percentile`` (``method="linear"``) and of Excel's PERCENTILE.INC. For ``n``
sorted samples ``x[0..n-1]`` and a percentile ``q`` in [0, 100]::

    h = (n - 1) * q / 100
    P(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so P(0) is the minimum, P(100) the maximum, and a percentile never leaves the range of the
data. On small samples the tail percentiles are interpolations between the largest samples:
with 100 samples p99 lies between the 99th and 100th values (h = 98.01) and p99.9 between the
same two (h = 98.901); p99.9 only describes a real tail from about 1,000 samples up, which is
why every summary carries its ``count``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

#: The percentiles every latency summary reports; the JSON keys are "p50", "p90", "p99", "p99.9".
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def percentile_key(q: float) -> str:
    return f"p{q:g}"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of values already sorted ascending (method above)."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    n = len(sorted_values)
    # Rounding the rank removes binary noise such as 999 * 99.9 / 100 = 998.0010000000001,
    # which would otherwise make an exact rank interpolate with a 1e-13 weight.
    rank = round((n - 1) * q / 100.0, 9)
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    weight = rank - low
    return float(sorted_values[low] + weight * (sorted_values[high] - sorted_values[low]))


def summarize(values: Iterable[float], scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """count, mean, min, max and the ``PERCENTILES`` of ``values`` times ``scale`` (e.g. 1e-6 for
    ns -> ms), rounded to ``digits`` decimals. An empty sample gives count 0 and None elsewhere."""
    data = sorted(float(v) * scale for v in values)
    keys = ["mean", "min", "max", *(percentile_key(q) for q in PERCENTILES)]
    if not data:
        return {"count": 0, **{key: None for key in keys}}
    out: dict[str, Any] = {
        "count": len(data),
        "mean": round(math.fsum(data) / len(data), digits),
        "min": round(data[0], digits),
        "max": round(data[-1], digits),
    }
    for q in PERCENTILES:
        out[percentile_key(q)] = round(percentile(data, q), digits)
    return out
