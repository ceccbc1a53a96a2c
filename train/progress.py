"""Progress bars for the waits outside the training loop: teacher labelling, augmentation, export's scoring.

Torch-free (export's bundle scoring imports it). A bar shows a rate and an ETA on a terminal and
is off when stderr is not a TTY (CI, nohup, a pipe): a log gets the one-line summary each stage
already writes, not carriage-return noise. The helpers here only observe; they run exactly the
batches the un-instrumented code runs, so every number they produce is bit-identical to it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def interactive() -> bool:
    """True when a person watches stderr (a terminal); bars are drawn only then."""
    return sys.stderr.isatty()


def bar(iterable: Iterable[T], desc: str, unit: str, total: int | None = None) -> Iterator[T]:
    """``iterable`` wrapped in a tqdm bar (rate and ETA) on a terminal; ``iterable`` itself otherwise."""
    if not interactive():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, unit=unit, total=total, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)


class _Counter:
    """A bar advanced by hand (``update(n)``), or nothing when not on a terminal."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self._bar: Any = None
        if interactive():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)

    @property
    def active(self) -> bool:
        return self._bar is not None

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def counter(total: int, desc: str, unit: str) -> _Counter:
    return _Counter(total, desc, unit)


def bundle_predict(model: Any, texts: Sequence[str], batch_size: int, desc: str) -> np.ndarray:
    """``model.predict(texts, batch_size)`` of a ``BundleModel`` with a bar over texts.

    The same length-sorted batches as ``BundleModel.predict`` (sorted by character length, stable),
    so the logits are identical; off a terminal it simply calls ``predict``.
    """
    if not interactive():
        return model.predict(texts, batch_size)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(model.labels)), dtype=np.float32)
    progress = counter(len(texts), desc, "text")
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = model.run(model.encode([texts[i] for i in chunk]))
            progress.update(len(chunk))
    finally:
        progress.close()
    return out
