from __future__ import annotations

import random

import pytest

from kdserve.train.batching import bucketed_batches, sorted_batches


def test_bucketed_batches_cover_every_index_once_and_group_lengths() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    batches = bucketed_batches(lengths, batch_size=16, rng=random.Random(1), pool_batches=10)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(len(b) <= 16 for b in batches)

    # Bucketing must cut padding well below what random batches waste.
    def padding(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    shuffled = list(range(1000))
    random.Random(2).shuffle(shuffled)
    random_batches = [shuffled[i : i + 16] for i in range(0, 1000, 16)]
    assert padding(batches) < 0.2 * padding(random_batches)


def test_bucketed_batches_are_deterministic_under_a_seed() -> None:
    lengths = list(range(100))
    a = bucketed_batches(lengths, 8, random.Random(5))
    b = bucketed_batches(lengths, 8, random.Random(5))
    c = bucketed_batches(lengths, 8, random.Random(6))
    assert a == b and a != c


def test_sorted_batches_longest_first() -> None:
    assert sorted_batches([3, 1, 2, 5], 2) == [[3, 0], [2, 1]]
    with pytest.raises(ValueError):
        sorted_batches([1], 0)
