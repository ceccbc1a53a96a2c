"""Temperature scaling, the fit/report split and operating points, on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdserve.core.calibration import (
    Policy,
    calibrate_and_choose,
    calibrated_probabilities,
    calibration_split,
    fit_temperature,
    golden_section,
    resolve_benign,
    sigmoid,
)
from kdserve.core.errors import ConfigError, DataError


def test_golden_section_finds_a_parabola_minimum() -> None:
    assert golden_section(lambda x: (x - 1.25) ** 2, -3, 4) == pytest.approx(1.25, abs=1e-5)


def test_multi_label_temperature_recovered_exactly_from_soft_targets() -> None:
    # BCE against soft targets sigmoid(z / T0) is minimised exactly at T = T0, per category
    z = np.linspace(-6, 6, 25)[:, None] * np.array([[1.0, 1.0]])
    y = np.stack([sigmoid(z[:, 0] / 2.0), sigmoid(z[:, 1] / 0.5)], axis=1)
    t = fit_temperature(z, y, "multi_label")
    assert t == pytest.approx([2.0, 0.5], abs=1e-4)


def test_single_label_temperature_from_sampled_labels() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(20000, 3))
    p = calibrated_probabilities(z, "single_label", [2.5])
    ids = (rng.random(len(z))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    (t,) = fit_temperature(z, ids, "single_label")
    assert t == pytest.approx(2.5, rel=0.05)


def test_calibrated_probabilities() -> None:
    z = np.array([[2.0, 0.0]])
    assert calibrated_probabilities(z, "single_label", [2.0])[0, 0] == pytest.approx(math.e / (math.e + 1))
    one, two = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2))
    assert calibrated_probabilities(z, "multi_label", [2.0, 1.0])[0].tolist() == pytest.approx([one, 0.5])
    assert calibrated_probabilities(z, "multi_label", None)[0].tolist() == pytest.approx([two, 0.5])


def test_split_is_seeded_disjoint_and_complete() -> None:
    fit, report = calibration_split(11, seed=5)
    assert len(fit) == 6 and len(report) == 5
    assert sorted(fit.tolist() + report.tolist()) == list(range(11))
    again, _ = calibration_split(11, seed=5)
    assert fit.tolist() == again.tolist()
    with pytest.raises(DataError):
        calibration_split(1)


def test_policy_parse() -> None:
    assert Policy.parse("precision=0.9") == Policy("precision", 0.9)
    assert str(Policy.parse(" recall=0.95 ")) == "recall=0.95"
    assert Policy.parse("f1") == Policy("f1")
    for bad in ("precision", "precision=1.5", "recall=x", "accuracy=0.9", "f1=0.3"):
        with pytest.raises(ConfigError, match="policy must be"):
            Policy.parse(bad)


def test_benign_labels() -> None:
    assert resolve_benign(["hate_speech", "offensive", "neither"], None) == ["neither"]
    assert resolve_benign(["OFF", "NOT"], ["NOT"]) == ["NOT"]
    with pytest.raises(DataError, match="'none' are not labels"):
        resolve_benign(["OFF", "NOT"], ["none"])


def test_calibrate_and_choose_overconfident_model() -> None:
    # a model 3x overconfident: labels drawn from sigmoid(z/3), logits z; T fitted near 3 and ECE
    # on the report half falls
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, size=(4000, 2))
    y = (rng.random(z.shape) < sigmoid(z / 3.0)).astype(float)
    calibration, policy = calibrate_and_choose(
        z, y, ["hate", "neither"], "multi_label", Policy("precision", 0.9), benign=None
    )
    assert calibration["fit_rows"] == calibration["report_rows"] == 2000
    assert calibration["temperatures"] == pytest.approx([3.0, 3.0], rel=0.1)
    assert calibration["ece_after"] < 0.03 < calibration["ece_before"]
    assert calibration["brier_after"] < calibration["brier_before"]
    # the floor: what perfectly calibrated scores show on these 2,000 rows; the fitted model is near it
    assert 0.0 < calibration["ece_floor"] < calibration["ece_after"] + 0.01
    assert policy["benign_labels"] == ["neither"] and list(policy["thresholds"]) == ["hate"]
    hate = policy["validation"]["hate"]
    assert hate["met"] and hate["precision"] >= 0.9 and hate["held_out_precision"] > 0.85


def test_soft_targets_have_no_ece_floor() -> None:
    # vote shares are not 0/1 outcomes a perfectly calibrated model could be drawn against
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(200, 2))
    soft, _ = calibrate_and_choose(z, sigmoid(z), ["a", "b"], "multi_label", None)
    hard, _ = calibrate_and_choose(z, (sigmoid(z) > 0.5).astype(float), ["a", "b"], "multi_label", None)
    assert soft["ece_floor"] is None and hard["ece_floor"] > 0


def test_calibrate_none_keeps_unit_temperature() -> None:
    z = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    calibration, policy = calibrate_and_choose(
        z, np.array([0, 1, 1, 1]), ["a", "b"], "single_label", None, None, "none"
    )
    assert calibration["temperatures"] == [1.0]
    assert calibration["ece_before"] == calibration["ece_after"]
    assert policy == {}
