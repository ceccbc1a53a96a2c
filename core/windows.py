"""Long texts as a model's windows, and the windows' scores back as one answer per text.

A bundle reads at most ``max_length`` tokens (special tokens included). Three ways to fit a longer
text (``LONG_TEXT_MODES``):

- ``truncate``: the first ``max_length`` tokens, as ``BundleModel.encode`` does; ``truncated``
  says tokens were dropped. The server keeps its own encode call for this mode (the hot path).
- ``head_tail``: the start and the end of the body (``head_fraction`` of the budget from the
  start, the rest from the end: Sun et al. 2019, "How to Fine-Tune BERT for Text
  Classification?", found head+tail best on IMDB), the tokenizer's special tokens kept at both
  ends. Still one row; ``truncated`` when the middle was dropped.
- ``chunk``: overlapping windows of at most ``max_length`` tokens, each with the special tokens,
  covering every token: consecutive windows share ``overlap`` of the body budget. The last window
  is aligned to the end of the text, so every window has the same length (they batch without
  padding) and no window is a few stray tokens. More than ``max_windows`` windows raises
  ``TooManyWindows``: a cost limit the caller states, never a silent cut.

``aggregate`` turns a text's per-window logits into one answer: the mean of the windows'
probabilities for a single-label (softmax) model, or their per-class maximum (renormalised), and
for a multi-label (sigmoid) model the per-category maximum, so a flag raised by any window stays
raised. torch-free: the server imports this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kdserve.core.bundle import softmax
from kdserve.core.errors import KdserveError

LongTextMode = Literal["truncate", "head_tail", "chunk"]
LONG_TEXT_MODES: tuple[str, ...] = ("truncate", "head_tail", "chunk")
Aggregation = Literal["mean", "max"]
AGGREGATIONS: tuple[str, ...] = ("mean", "max")
# a probability of exactly 0 has no logarithm; this floor keeps aggregated logits finite
_LOG_FLOOR = 1e-12


class WindowError(KdserveError):
    """A windowing parameter that cannot work (e.g. a ``max_length`` with no room for text)."""


class TooManyWindows(KdserveError):
    """Text ``index`` needs ``windows`` windows, over ``limit``."""

    def __init__(self, index: int, windows: int, limit: int) -> None:
        self.index, self.windows, self.limit = index, windows, limit
        super().__init__(f"texts[{index}] needs {windows} windows, over max_windows_per_text ({limit})")


@dataclass(frozen=True)
class TextWindows:
    """One text as the rows a model runs: ``rows`` are int64 token ids, each at most ``max_length``
    long; ``truncated`` says some token of the text is in no row; ``tokens`` is the text's full
    token count with special tokens."""

    rows: list[np.ndarray]
    truncated: bool
    tokens: int


def special_counts(tokenizer: Any) -> tuple[int, int]:
    """(special tokens added before the text, after it) for a single text, e.g. (1, 1) for BERT's
    [CLS] ... [SEP] and (0, 0) for the word-level students. Read from a probe's
    ``special_tokens_mask``: the tokenizer's post-processor is the only authority on its template."""
    total = int(tokenizer.num_special_tokens_to_add(False))
    if total == 0:
        return 0, 0
    mask = tokenizer.encode("a", add_special_tokens=True).special_tokens_mask
    before = 0
    while before < len(mask) and mask[before] == 1:
        before += 1
    before = min(before, total)
    return before, total - before


def window_starts(body: int, budget: int, step: int) -> list[int]:
    """Start offsets (into a body of ``body`` tokens) of windows ``budget`` long, ``step`` apart,
    the last one aligned to the body's end; one window at 0 when the body fits."""
    if body <= budget:
        return [0]
    count = 1 + -(-(body - budget) // step)  # ceil: enough steps for the last window to reach the end
    return [min(i * step, body - budget) for i in range(count)]


class Windower:
    """Cuts texts into a model's rows for a ``LongTextMode``. Holds its own untruncated copy of the
    bundle's tokenizer (the bundle's own, truncating one is never reconfigured: it serves the
    ``truncate`` hot path on other threads)."""

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        *,
        pad_id: int = 0,
        overlap: float = 0.25,
        max_windows: int = 32,
        head_fraction: float = 0.25,
    ) -> None:
        from tokenizers import Tokenizer

        if not 0 <= overlap < 1:
            raise WindowError(f"overlap must be in [0, 1), got {overlap}")
        if not 0 <= head_fraction <= 1:
            raise WindowError(f"head_fraction must be in [0, 1], got {head_fraction}")
        if max_windows < 1:
            raise WindowError(f"max_windows must be >= 1, got {max_windows}")
        own = Tokenizer.from_str(tokenizer.to_str())
        own.no_truncation()
        own.no_padding()
        self.tokenizer = own
        self.max_length = max_length
        self.pad_id = pad_id
        self.max_windows = max_windows
        self.before, self.after = special_counts(own)
        self.budget = max_length - self.before - self.after
        if self.budget < 1:
            raise WindowError(
                f"max_length {max_length} leaves no room for text beside {self.before + self.after} special tokens"
            )
        self.step = max(1, self.budget - int(self.budget * overlap))
        self.head = int(self.budget * head_fraction)

    def windows_needed(self, tokens: int) -> int:
        """How many ``chunk`` windows a text of ``tokens`` tokens (specials included) takes."""
        return len(window_starts(max(tokens - self.before - self.after, 0), self.budget, self.step))

    def split(self, ids: Sequence[int] | np.ndarray, mode: str, index: int = 0) -> TextWindows:
        """One encoded text (special tokens included, untruncated) as rows for ``mode``; ``index``
        names the text in a ``TooManyWindows``."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        if n == 0:
            # an empty encoding (word-level tokenizers give none for an empty text): one pad token,
            # as BundleModel.encode feeds the model
            return TextWindows([np.array([self.pad_id], dtype=np.int64)], False, 0)
        if n <= self.max_length:
            return TextWindows([ids], False, n)
        prefix, suffix = ids[: self.before], ids[n - self.after :]
        body = ids[self.before : n - self.after]
        if mode == "truncate":
            return TextWindows([np.concatenate([prefix, body[: self.budget], suffix])], True, n)
        if mode == "head_tail":
            tail = self.budget - self.head
            kept = np.concatenate([body[: self.head], body[len(body) - tail :]])
            return TextWindows([np.concatenate([prefix, kept, suffix])], True, n)
        if mode != "chunk":
            raise WindowError(f"long_text mode must be one of {', '.join(LONG_TEXT_MODES)}, got {mode!r}")
        starts = window_starts(len(body), self.budget, self.step)
        if len(starts) > self.max_windows:
            raise TooManyWindows(index, len(starts), self.max_windows)
        rows = [np.concatenate([prefix, body[s : s + self.budget], suffix]) for s in starts]
        return TextWindows(rows, False, n)

    def encode(self, texts: Sequence[str], mode: str) -> list[TextWindows]:
        """Every text's rows for ``mode``, tokenized in one batch call; raises ``TooManyWindows``
        for the first text over the cap (before any is run)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [self.split(e.ids, mode, i) for i, e in enumerate(encodings)]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def aggregate(logits: np.ndarray, multi_label: bool = False, how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """(logits [C], probabilities [C]) of one text from its windows' logits [W, C].

    Single-label: ``mean`` averages the windows' softmax probabilities, ``max`` takes each class's
    highest probability over the windows and renormalises (a class one window is sure of is not
    averaged away); the logits returned are the log of those probabilities, so their softmax gives
    them back. Multi-label: each category's highest probability and highest logit (a window that
    flags is enough). One window: its own logits and probabilities, untouched."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise WindowError(f"aggregate needs logits [windows, classes], got shape {logits.shape}")
    if multi_label:
        top = logits.max(axis=0)
        return top, sigmoid(top).astype(np.float32)
    probabilities = softmax(logits)
    if logits.shape[0] == 1:
        return logits[0], probabilities[0].astype(np.float32)
    if how == "mean":
        combined = probabilities.mean(axis=0)
    elif how == "max":
        combined = probabilities.max(axis=0)
        combined = combined / combined.sum()
    else:
        raise WindowError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    combined = combined.astype(np.float32)
    return np.log(np.maximum(combined, _LOG_FLOOR)).astype(np.float32), combined
