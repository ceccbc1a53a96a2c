"""Labelling engines below ``kdserve distill``: tasks are whole batches of ``BundleModel.predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdserve.bulk.label import MAX_BATCHES_PER_TASK, label_texts, label_texts_ray, plan_chunks
from kdserve.core.bundle import BundleModel
from kdserve.core.errors import ConfigError
from tests.bulk.conftest import texts


@pytest.mark.parametrize(("n", "workers", "given"), [(0, 2, 0), (5, 2, 0), (1000, 2, 0), (6000, 2, 0), (1000, 3, 2)])
def test_tasks_are_whole_predict_batches_longest_first(n: int, workers: int, given: int) -> None:
    rows = [("x" * (i * 7919 % 97)) for i in range(n)]
    chunks = plan_chunks(rows, 16, workers, given)
    order = sorted(range(n), key=lambda i: len(rows[i]))
    assert [i for chunk in reversed(chunks) for i in chunk] == order  # predict's order, cut at batch edges
    assert all(len(chunk) % 16 == 0 for chunk in chunks[1:])  # only the longest-first task may be short
    batches = -(-n // 16)
    if given:
        assert len(chunks) == -(-batches // given)
    elif n:
        per_task = max(1, min(MAX_BATCHES_PER_TASK, batches // (4 * workers)))
        assert len(chunks) == -(-batches // per_task)
        assert len(chunks) >= min(batches, 4 * workers)  # every worker gets several tasks


def test_auto_tasks_and_progress(bilstm: Path) -> None:
    rows = texts(120) + [""]
    seen: list[int] = []
    logits = label_texts(bilstm, rows, batch_size=8, workers=2, progress=seen.append)
    assert np.array_equal(logits, BundleModel(bilstm).predict(rows, batch_size=8))  # identical, not close
    assert sum(seen) == len(rows) and len(seen) == len(plan_chunks(rows, 8, 2))


def test_bad_arguments_and_empty_input(bilstm: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size and threads must be >= 1"):
        label_texts(bilstm, ["a"], batch_size=0)
    with pytest.raises(ConfigError, match="workers and batches_per_task >= 0"):
        label_texts_ray(bilstm, ["a"], workers=-1)
    assert label_texts(bilstm, [], workers=2).shape == (0, 2)
