"""The start-up heap is frozen out of the cyclic collector once the models are warm (a profiled
tenth of a student's /classify time was the collector walking it); garbage made later is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import ready_client


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session keeps its ordinary collector


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_ready_freezes_the_start_up_heap_and_later_cycles_are_still_collected(
    tiny_bundles: Path, unfrozen: None
) -> None:
    assert gc.get_freeze_count() == 0
    with ready_client(tiny_bundles, models=["tiny-bilstm"]) as client:
        assert gc.get_freeze_count() > 0
        answer = client.post("/classify", json={"text": "a fine film ."})
        assert answer.status_code == 200 and answer.json()["results"][0]["label"] in ("negative", "positive")
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
