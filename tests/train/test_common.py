from __future__ import annotations

import pytest

pytest.importorskip("torch")

from train.common import eval_points


@pytest.mark.parametrize(
    ("num_batches", "per_epoch", "expected"),
    [
        (100, 1, {100}),
        (100, 4, {25, 50, 75, 100}),
        (10, 3, {3, 7, 10}),
        (2, 5, {1, 2}),  # more passes than batches: one pass per batch at most
        (1, 3, {1}),
    ],
)
def test_eval_points_are_evenly_spaced_and_end_the_epoch(num_batches: int, per_epoch: int, expected: set[int]) -> None:
    assert eval_points(num_batches, per_epoch) == expected
