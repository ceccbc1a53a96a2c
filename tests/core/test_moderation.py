"""Moderation metrics against numbers worked out by hand on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdserve.core.moderation import (
    average_precision,
    brier_score,
    ece_floor,
    expected_calibration_error,
    format_moderation,
    moderation_metrics,
    operating_point,
    precision_at_recall,
    precision_recall_curve,
    recall_at_precision,
    roc_auc,
)

# y and scores of scikit-learn's documented example: AUC 0.75, AP 0.8333
Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_roc_auc_by_hand() -> None:
    # positive/negative pairs ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4) = 3 of 4
    assert roc_auc(Y, S) == pytest.approx(0.75)


def test_roc_auc_ties_count_one_half() -> None:
    # pairs: 0.5 vs 0.5 tie (1/2), 0.5 > 0.2, 0.9 > 0.5, 0.9 > 0.2 -> 3.5 / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_roc_auc_undefined_without_both_classes() -> None:
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    assert math.isnan(average_precision([0, 0], [0.2, 0.3]))


def test_precision_recall_curve_by_hand() -> None:
    precision, recall, thresholds = precision_recall_curve(Y, S)
    assert thresholds.tolist() == [0.8, 0.4, 0.35, 0.1]
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_average_precision_step_sum() -> None:
    # 0.5 * 1 + 0 * 0.5 + 0.5 * 2/3 + 0 * 0.5
    assert average_precision(Y, S) == pytest.approx(5 / 6)
    # a tie admits both rows at once: 0.5 * 1 + 0.5 * 2/3
    assert average_precision([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(5 / 6)


def test_recall_at_precision_and_precision_at_recall() -> None:
    assert recall_at_precision(Y, S, 0.9) == pytest.approx(0.5)  # only t=0.8 reaches 0.9
    assert recall_at_precision(Y, S, 0.6) == pytest.approx(1.0)  # t=0.35: P 2/3, R 1
    assert precision_at_recall(Y, S, 1.0) == pytest.approx(2 / 3)
    assert precision_at_recall(Y, S, 0.5) == pytest.approx(1.0)
    # no threshold reaches precision 1 when the top score is a negative
    assert recall_at_precision([0, 1], [0.9, 0.1], 1.0) == 0.0


def test_operating_points() -> None:
    f1 = operating_point(Y, S, "f1")  # F1 per threshold: 2/3, 1/2, 4/5, 2/3
    assert (f1.threshold, f1.f1, f1.met) == (0.35, pytest.approx(0.8), True)
    strict = operating_point(Y, S, "precision", 0.9)
    assert (strict.threshold, strict.precision, strict.recall) == (0.8, 1.0, 0.5)
    caught = operating_point(Y, S, "recall", 0.95)
    assert (caught.threshold, caught.precision) == (0.35, pytest.approx(2 / 3))
    unreachable = operating_point([0, 1], [0.9, 0.1], "precision", 0.9)
    assert not unreachable.met and unreachable.precision == 0.5
    with pytest.raises(ValueError, match="unknown operating-point target"):
        operating_point(Y, S, "accuracy")


def test_soft_targets_count_positive_from_one_half() -> None:
    assert roc_auc([0.1, 0.2, 0.6, 1.0], S) == pytest.approx(0.75)


def test_ece_by_hand() -> None:
    # bins of width 1/15: 0.1 -> bin 1 alone (gap 0.1); 0.38 and 0.35 -> bin 5 (mean conf 0.365,
    # mean outcome 0.5, gap 0.135); 0.82 -> bin 12 alone (gap 0.18). Weighted: .025 + .0675 + .045
    assert expected_calibration_error([0.1, 0.38, 0.35, 0.82], Y) == pytest.approx(0.1375)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [1])


def test_brier_by_hand() -> None:
    probs = np.array([[0.9, 0.2], [0.4, 0.6]])
    # (0.01 + 0.04 + 0.16 + 0.16) / 4
    assert brier_score(probs, np.array([[1, 0], [0, 1]]), "multi_label") == pytest.approx(0.0925)
    single = np.array([[0.7, 0.2, 0.1], [0.3, 0.29, 0.41]])
    # rows: 0.09 + 0.04 + 0.01 = 0.14; 0.09 + 0.71^2 + 0.41^2 = 0.7622
    assert brier_score(single, np.array([0, 1]), "single_label") == pytest.approx(0.4511)


def test_single_label_report() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.29, 0.41]])
    m = moderation_metrics(probs, np.array([0, 1]), ["a", "b", "c"])
    # top-label confidence 0.7 (right) and 0.41 (wrong): 0.5 * 0.3 + 0.5 * 0.41
    assert m.ece == pytest.approx(0.355)
    assert m.brier == pytest.approx(0.4511)
    assert m.micro_f1 == pytest.approx(0.5)  # = accuracy for single-label
    # a: predicted once, right -> F1 1; b: missed -> 0; c: predicted once, wrong -> 0
    assert m.macro_f1 == pytest.approx(1 / 3)
    assert m.per_category["a"].roc_auc == pytest.approx(1.0)
    assert m.per_category["b"].roc_auc == pytest.approx(1.0)  # its one pair: true 0.29 above 0.2
    assert math.isnan(m.per_category["c"].roc_auc)  # no true c


def test_multi_label_report() -> None:
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.1], [0.2, 0.8]])
    y = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    m = moderation_metrics(probs, y, ["hate", "threat"], "multi_label", thresholds=[0.5, 0.5])
    hate = m.per_category["hate"]
    # hate: flagged rows 0, 2 (0.9, 0.7); true rows 0, 3 -> P 1/2, R 1/2; AUC: 0.9 beats 0.4, 0.7;
    # 0.2 beats neither -> 2/4
    assert (hate.precision, hate.recall, hate.roc_auc) == (0.5, 0.5, pytest.approx(0.5))
    threat = m.per_category["threat"]
    assert (threat.precision, threat.recall, threat.roc_auc) == (1.0, 1.0, pytest.approx(1.0))
    # micro: tp 1 + 2 = 3, predicted 2 + 2 = 4, true 2 + 2 = 4 -> 0.75
    assert m.micro_f1 == pytest.approx(0.75)
    assert m.macro_f1 == pytest.approx((0.5 + 1.0) / 2)
    text = format_moderation(m, "title")
    assert "hate" in text and "R@P0.9" in text and "ECE" in text


def test_ece_floor_is_the_small_sample_bias_of_a_calibrated_model() -> None:
    # certain scores have certain outcomes: no floor at all
    assert ece_floor(np.ones(50)) == 0.0
    assert ece_floor(np.zeros(50)) == 0.0
    # the same confidences on 100x the rows: the floor falls about as 1/sqrt(n)
    conf = np.linspace(0.55, 0.95, 600)
    few, many = ece_floor(conf), ece_floor(np.repeat(conf, 100), draws=20)
    assert 0.02 < few < 0.05 and many < few / 5
    # seeded: the same figure every time, so a manifest is reproducible
    assert ece_floor(conf, seed=3) == ece_floor(conf, seed=3)
