"""The manifest's problem_type, calibration and policy blocks, and the calibrated scores a
bundle gives, on a tiny real bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdserve.core.bundle import BundleError, BundleModel, Manifest, read_manifest, softmax, write_manifest
from tests.bundles import write_batch_dependent_graph


def _copy(tiny_bundles: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundles / "tiny-textcnn", folder)
    return folder


def test_old_manifest_without_the_blocks_loads_as_before(tiny_bundles: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundles, tmp_path)
    raw = json.loads((folder / "manifest.json").read_text())
    for key in ("problem_type", "calibration", "policy"):
        raw.pop(key, None)
    manifest = Manifest.from_dict(raw)
    assert (manifest.problem_type, manifest.calibration, manifest.policy) == ("single_label", {}, {})
    model = BundleModel(folder)
    logits = model.run(model.encode(["the movie was great ."]))
    assert np.allclose(model.probabilities(logits), softmax(logits.astype(np.float64)))
    assert model.flags(model.probabilities(logits)) == [[]]


def test_calibrated_single_label_scores_and_policy(tiny_bundles: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundles, tmp_path)
    manifest = read_manifest(folder)
    manifest.calibration = {"method": "temperature", "temperatures": [2.0]}
    manifest.policy = {"target": "f1", "benign_labels": ["negative"], "thresholds": {"positive": 0.6, "negative": 0.1}}
    write_manifest(folder, manifest)
    model = BundleModel(folder)
    logits = model.run(model.encode(["the movie was great .", "the plot was awful ."]))
    probs = model.probabilities(logits)
    assert np.allclose(probs, softmax(logits.astype(np.float64) / 2.0))
    expected = [["positive"] if p >= 0.6 else [] for p in probs[:, 1]]
    assert model.flags(probs) == expected  # "negative" is benign: never flagged despite t = 0.1


def test_multi_label_scores_are_per_label_sigmoids(tiny_bundles: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundles, tmp_path)
    manifest = read_manifest(folder)
    manifest.problem_type = "multi_label"
    manifest.calibration = {"temperatures": [0.5, 4.0]}
    write_manifest(folder, manifest)
    model = BundleModel(folder)
    logits = model.run(model.encode(["the movie was great ."])).astype(np.float64)
    expected = 1 / (1 + np.exp(-logits / np.array([0.5, 4.0])))
    assert np.allclose(model.probabilities(logits), expected)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"problem_type": "multilabel"}, "problem_type 'multilabel'"),
        ({"calibration": {"temperatures": [1.0, 2.0]}}, "temperatures must be 1 positive"),
        ({"calibration": {"temperatures": [0]}}, "temperatures must be 1 positive"),
        ({"policy": {"thresholds": {"hate": 0.5}}}, "thresholds must map labels"),
        ({"policy": {"benign_labels": ["NOT"]}}, "benign_labels ['NOT']"),
    ],
)
def test_bad_moderation_blocks_are_refused(tiny_bundles: Path, change: dict, fragment: str) -> None:
    raw = json.loads((tiny_bundles / "tiny-textcnn" / "manifest.json").read_text())
    with pytest.raises(BundleError, match=None) as info:
        Manifest.from_dict({**raw, **change})
    assert fragment in str(info.value)


def test_rows_alone_makes_a_texts_scores_independent_of_its_batch(tiny_bundles: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundles, tmp_path)
    write_batch_dependent_graph(folder)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest)
    texts = ["good", "the movie was really great and good", "bad", "awful", "the plot was dull"]
    batched = BundleModel(folder)
    assert batched.rows_alone is False  # no key in the manifest: batches run whole, as before
    alone = np.vstack([batched.predict([t]) for t in texts])
    assert np.abs(batched.predict(texts, batch_size=5) - alone).max() > 1e-3
    manifest.extra["rows_alone"] = True
    write_manifest(folder, manifest)
    model = BundleModel(folder)
    assert model.rows_alone is True and BundleModel(folder, rows_alone=False).rows_alone is False
    for size in (2, 5):
        np.testing.assert_array_equal(model.predict(texts, batch_size=size), alone)
    encoded = model.encode(texts)
    np.testing.assert_array_equal(model.run(encoded), alone)  # the serving path: one padded batch in
