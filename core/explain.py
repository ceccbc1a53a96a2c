"""Why a model answered as it did: per-word attributions by occlusion, in one batched model call.

Each word of the text (a unit: the tokens that share a ``word_id``, so a WordPiece word's pieces
go together, and a word-level student's token is its word) is deleted in turn; the original and
every variant run as ONE batch through the model (one ONNX Runtime call per text, no gradient, so
any exported bundle can be explained, int8 included). A word's attribution for a target class is
the drop of that class's served score when the word is gone (the bundle's own calibrated
probabilities: softmax(logits / T) single-label, each category's sigmoid(logits / T_c)
multi-label): positive = the word pushed towards the class. Special tokens ([CLS], [SEP]) are
never deleted.

The batch runs together even where the bundle serves rows alone (dynamic int8,
``BundleModel.rows_alone``): its rows are the text and its own variants, nothing from other
traffic, so the explanation is still a function of the text alone, and 1 + U separate calls would
cost several times the one batch (docs/RESULTS.md). On such a bundle ``base`` can differ from the
answer's batch-1 score within quantization noise; attributions are differences inside one call.

Cost: one batch of ``1 + U`` rows of at most ``max_length`` tokens, U = the words explained, at
most ``max_units``. The text is read as the bundle's truncating tokenizer reads it (its first
``max_length`` tokens); words past ``max_units`` or past the token limit are not explained and
``complete`` is False.

``Explanation.attribution(target)`` gives any class's attributions from the same batch, so a
multi-label bundle's "each flagged category" needs no second call. torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kdserve.core.bundle import Encoded


class Explainable(Protocol):
    """What ``explain`` needs from a model (``kdserve.core.bundle.BundleModel`` is one)."""

    tokenizer: Any
    manifest: Any

    def run(self, encoded: Encoded, rows_alone: bool | None = None) -> np.ndarray: ...

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Unit:
    """One explained word: its token positions in the encoding and its characters in the text."""

    positions: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Explanation:
    """``base`` [C]: the calibrated scores of the text as explained; ``occluded`` [U, C]: with unit u
    deleted. ``complete``: every word of the text was explained."""

    units: list[Unit]
    base: np.ndarray
    occluded: np.ndarray
    complete: bool

    def attribution(self, target: int) -> np.ndarray:
        """float32 [U]: the drop of class ``target``'s score when each unit is deleted."""
        return (self.base[target] - self.occluded[:, target]).astype(np.float32)


def word_units(encoding: Any) -> list[Unit]:
    """The encoding's words, in order: positions sharing a ``word_id`` (specials have none)."""
    units: list[Unit] = []
    current: list[int] = []
    last: int | None = None
    for position, word in enumerate(encoding.word_ids):
        if word is None:
            continue
        if current and word == last:
            current.append(position)
            continue
        if current:
            units.append(_unit(encoding, current))
        current, last = [position], word
    if current:
        units.append(_unit(encoding, current))
    return units


def _unit(encoding: Any, positions: list[int]) -> Unit:
    return Unit(tuple(positions), int(encoding.offsets[positions[0]][0]), int(encoding.offsets[positions[-1]][1]))


def occlusion_batch(ids: np.ndarray, units: list[Unit], pad_id: int = 0) -> Encoded:
    """Row 0: ``ids``; row 1 + u: ``ids`` without unit u's tokens; right-padded with ``pad_id`` and
    masked. A row left with no token gets one pad token, unmasked, as ``BundleModel.encode`` does."""
    n = len(ids)
    width = max(n, 1)
    batch = np.full((1 + len(units), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(batch)
    lengths = [n]
    batch[0, :n] = ids
    keep = np.ones(n, dtype=bool)
    for row, unit in enumerate(units, start=1):
        keep[list(unit.positions)] = False
        kept = ids[keep]
        batch[row, : len(kept)] = kept
        lengths.append(len(kept))
        keep[list(unit.positions)] = True
    for row, length in enumerate(lengths):
        mask[row, : max(length, 1)] = 1
    return Encoded(batch, mask, [max(length, 1) for length in lengths], [False] * len(lengths))


def explain(model: Explainable, text: str, max_units: int) -> Explanation:
    """Occlusion attributions for ``text`` (see the module docstring), in the bundle's own
    calibrated scores."""
    encoding = model.tokenizer.encode(text, add_special_tokens=True)
    units = word_units(encoding)
    complete = not encoding.overflowing and len(units) <= max_units
    units = units[:max_units]
    ids = np.asarray(encoding.ids, dtype=np.int64)
    batch = occlusion_batch(ids, units, int(model.manifest.pad_id))
    logits = np.asarray(model.run(batch, rows_alone=False), dtype=np.float32)
    probabilities = np.asarray(model.probabilities(logits), dtype=np.float32)
    return Explanation(units, probabilities[0], probabilities[1:], complete)
