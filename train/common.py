"""Small pieces every training recipe shares: seeding, device choice, padding, file output."""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdserve.core.errors import ConfigError


def set_seed(seed: int) -> None:
    """Seed every generator a recipe touches, so a rerun gives the same numbers on one machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the GPU when there is one; asking for CUDA without one is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, with_token_types: bool) -> dict[str, torch.Tensor]:
    """Pad token-id lists to the longest in the batch (dynamic padding).

    Returns ``input_ids`` and ``attention_mask`` of shape [B, L_max] and, for models that take
    them, all-zero ``token_type_ids`` [B, L_max].
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_token_types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically: a crash never leaves a half-written metrics or config file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["seconds"]``."""
    box = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def progress_kwargs() -> dict[str, Any]:
    """tqdm settings: live on a terminal, a line every 30 s in logs (CI, nohup) instead of a flood."""
    interactive = sys.stderr.isatty()
    return {"mininterval": 0.5 if interactive else 30.0, "file": sys.stderr, "dynamic_ncols": True}


class WeightAverage:
    """Exponential moving average of a model's weights (Polyak averaging), for evaluating and saving.

    After each optimizer step ``update`` moves every floating-point parameter and buffer of
    ``self.model`` (a frozen deep copy) towards the trained model's: avg <- d_t * avg + (1 - d_t) * w,
    with d_t = min(decay, (1 + t) / (10 + t)) at step t, so the first steps do not keep the
    random initialisation for thousands of steps. Integer buffers are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"weight-average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged, current = self.model.state_dict(), model.state_dict()
        for name, avg in averaged.items():
            if avg.is_floating_point():
                avg.lerp_(current[name], 1.0 - decay)
            else:
                avg.copy_(current[name])
