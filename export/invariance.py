"""Does a text's score depend on the other texts in its batch?

A dynamically quantized graph (``--quantize dynamic``, what ``auto`` ships when it passes the
gate) computes each activation's int8 scale from the whole batch tensor at run time, so the same
text scored beside different texts gets different logits. A server that batches concurrent
requests therefore gives one post different scores, and sometimes different decisions, depending
on what else arrived in the same few milliseconds. fp32 graphs and static int8 (fixed scales) do
not do this beyond float rounding.

Export measures it for every bundle: ``rows`` validation texts scored one at a time against the
same texts in batches, and the texts whose decisions differ (the categories the bundle's policy
flags, else those at 0.5, and a single-label bundle's top label). The block goes in the manifest
(``extra.batch_invariance``) and the model card. A dynamic int8 bundle is served one text per call
by default (``ROWS_ALONE``), so the block then says what batching would have moved, not what the
bundle serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import ROWS_ALONE, BundleModel, Manifest, policy_mask
from kdserve.core.calibration import calibrated_probabilities


def decisions(logits: np.ndarray, manifest: Manifest) -> np.ndarray:
    """bool [N, C]: the categories each row flags under the manifest's policy; without one, the
    top label (single-label) or every category with a calibrated score >= 0.5 (multi-label)."""
    temperatures = (manifest.calibration or {}).get("temperatures")
    probs = calibrated_probabilities(logits, manifest.problem_type, temperatures)
    if (manifest.policy or {}).get("thresholds"):  # as the served answer decides (``BundleModel.flags``)
        return policy_mask(probs, manifest.labels, manifest.policy)
    if manifest.problem_type == "multi_label":
        return probs >= 0.5
    return np.eye(len(manifest.labels), dtype=bool)[probs.argmax(axis=1)]


def batch_invariance(folder: Path, texts: list[str], manifest: Manifest, batch_size: int) -> dict[str, Any]:
    """The graph in ``folder`` run on ``texts`` in length-sorted batches of ``batch_size`` and one
    text at a time; ``served_alone``: whether the bundle runs rows alone (``ROWS_ALONE``), in which
    case its served scores are the one-at-a-time ones whatever the batch."""
    model = BundleModel(folder, verify=False, rows_alone=False)
    batched = model.predict(texts, batch_size).astype(np.float64)
    alone = np.vstack([model.predict([text]) for text in texts]).astype(np.float64)
    diff = np.abs(alone - batched)
    changed = (decisions(alone, manifest) != decisions(batched, manifest)).any(axis=1)
    if manifest.problem_type != "multi_label":  # the answer's top label is a decision too
        changed |= alone.argmax(axis=1) != batched.argmax(axis=1)
    return {
        "rows": len(texts),
        "batch_size": batch_size,
        "max_abs_logit_diff": float(diff.max()),
        "rms_logit_diff": float(np.sqrt((diff**2).mean())),
        "decisions_changed": int(changed.sum()),
        "served_alone": bool(manifest.extra.get(ROWS_ALONE, False)),
    }
