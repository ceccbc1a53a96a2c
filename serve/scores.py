"""What a model returns for a list of texts: the scores with the metadata that travels with them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """One model's answer to a list of texts, with what produced it: the bundle version that ran
    (a hot reload may swap it mid-request), its labels, and the raw logits beside the
    probabilities (the Hugging Face API's ``function_to_apply`` needs them)."""

    model: str
    checksum: str
    labels: list[str]
    probabilities: np.ndarray  # float32 [N, C], columns in ``labels`` order
    logits: np.ndarray | None = None  # float32 [N, C], or None when the model gives none
    truncated: list[bool] | None = None  # text i lost tokens to the token limit; None: none did
    windows: list[int] | None = None  # rows text i ran as (long_text chunk); None: one each


@dataclass(frozen=True)
class Reading:
    """How a request wants its texts read and decided, passed explicitly down every call its route
    makes (the router's ``infer``, a cascade's teacher, a shadow task): ``truncate=False`` refuses a
    text over the token limit; ``long_text`` overrides the server's mode (None: its default);
    ``policy`` names the moderation policy (None: each model's default)."""

    truncate: bool = True
    long_text: str | None = None
    policy: str | None = None
