"""Tiny real bundles with moderation blocks, made from the session's tiny sentiment bundles.

The networks are the tiny trained ones (tests/bundles.py); only the manifest changes: a
calibration temperature, a default policy, and for ``mod-multi`` the multi-label problem type (the
same two logits read as two independent sigmoids). "negative" plays the harmful category.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SINGLE = "mod-single"  # tiny-textcnn, T = 2, negative flags at 0.6, positive benign
MULTI = "mod-multi"  # tiny-textcnn as multi-label, T = (1.5, 0.5), negative at 0.5, positive at 0.7
TEACHER = "mod-teacher"  # tiny-teacher, T = 1, negative flags at 0.5, positive benign
PLAIN = "tiny-bilstm"  # no policy: no decisions

TEXTS = ["the movie was great .", "the film was awful .", "the plot was", "really excellent", "dull acting"]


def _with(source: Path, folder: Path, name: str, **fields: Any) -> Path:
    from kdserve.core.bundle import read_manifest, write_manifest

    shutil.copytree(source, folder)
    manifest = read_manifest(folder)
    manifest.name = name
    for key, value in fields.items():
        setattr(manifest, key, value)
    manifest.__post_init__()  # the manifest's own validation of the moderation blocks
    write_manifest(folder, manifest)
    return folder


def build_moderation_bundles(tiny_bundles: Path, root: Path) -> Path:
    """``root`` with mod-single, mod-multi, mod-teacher and the policy-less tiny-bilstm; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    _with(
        tiny_bundles / "tiny-textcnn",
        root / SINGLE,
        SINGLE,
        calibration={"method": "temperature", "temperatures": [2.0]},
        policy={"target": "test", "benign_labels": ["positive"], "thresholds": {"negative": 0.6}},
    )
    _with(
        tiny_bundles / "tiny-textcnn",
        root / MULTI,
        MULTI,
        problem_type="multi_label",
        calibration={"method": "temperature", "temperatures": [1.5, 0.5]},
        policy={"target": "test", "benign_labels": [], "thresholds": {"negative": 0.5, "positive": 0.7}},
    )
    _with(
        tiny_bundles / "tiny-teacher",
        root / TEACHER,
        TEACHER,
        calibration={"method": "temperature", "temperatures": [1.0]},
        policy={"target": "test", "benign_labels": ["positive"], "thresholds": {"negative": 0.5}},
    )
    shutil.copytree(tiny_bundles / PLAIN, root / PLAIN)
    return root


def write_policy_file(path: Path, config: dict[str, Any]) -> Path:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(config))
    else:
        path.write_text(json.dumps(config))
    return path


def expected_scores(root: Path, model: str, texts: list[str]) -> Any:
    """The calibrated scores [N, C] the bundle's own reader gives (the server must give the same)."""
    from kdserve.core.bundle import BundleModel

    bundle = BundleModel(root / model, intra_op_threads=1)
    return bundle.probabilities(bundle.predict(texts))
