"""Percentiles: linear interpolation between closest ranks (numpy's default), exact on known arrays."""

from __future__ import annotations

import math
import random

import pytest

from kdserve.bench.stats import percentile, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 11)), 0, 1.0),
        (list(range(1, 11)), 50, 5.5),  # h = 4.5: halfway between 5 and 6
        (list(range(1, 11)), 90, 9.1),  # h = 8.1
        (list(range(1, 11)), 99, 9.91),  # h = 8.91
        (list(range(1, 11)), 99.9, 9.991),  # h = 8.991: p99.9 of 10 samples sits between the two largest
        (list(range(1, 11)), 100, 10.0),
        (list(range(1, 101)), 99, 99.01),  # h = 98.01
        (list(range(1, 101)), 99.9, 99.901),  # h = 98.901
        ([float(i) for i in range(1001)], 99.9, 999.0),  # h = 999 exactly: an observed value, no float noise
        ([float(i) for i in range(1001)], 99, 990.0),
        ([5.0], 99.9, 5.0),  # one sample: every percentile is it
        ([1.0, 2.0], 99.9, 1.999),
        ([1.0, 2.0, 3.0, 10.0], 25, 1.75),
        ([1.0, 2.0, 3.0, 10.0], 99.9, 9.979),  # h = 2.997: 3 + 0.997 * 7
    ],
)
def test_percentile_exact_values(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_matches_numpy_linear_on_random_samples() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(0)
    for n in (1, 2, 3, 7, 100, 999, 1001):
        data = sorted(rng.expovariate(1.0) for _ in range(n))
        for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
            assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)), rel=1e-12, abs=1e-12)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    for q in (-1, 100.1, math.nan):
        with pytest.raises(ValueError, match="within"):
            percentile([1.0], q)


def test_summarize_scales_rounds_and_counts() -> None:
    ns = [1_000_000, 2_000_000, 3_000_000, 10_000_000]  # 1, 2, 3, 10 ms in ns
    s = summarize(ns, 1e-6)
    assert s == {"count": 4, "mean": 4.0, "min": 1.0, "max": 10.0, "p50": 2.5, "p90": 7.9, "p99": 9.79, "p99.9": 9.979}


def test_summarize_of_nothing_has_no_numbers() -> None:
    assert summarize([]) == {
        "count": 0,
        "mean": None,
        "min": None,
        "max": None,
        "p50": None,
        "p90": None,
        "p99": None,
        "p99.9": None,
    }
