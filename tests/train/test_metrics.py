from __future__ import annotations

import json

import pytest

from kdserve.core.metrics import compute_metrics, format_report


def test_exact_values_on_a_known_confusion() -> None:
    # true:  a a a b b c ; pred: a a b b c c
    m = compute_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m.confusion_matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class["a"].precision == pytest.approx(1.0)
    assert m.per_class["a"].recall == pytest.approx(2 / 3)
    assert m.per_class["b"].precision == pytest.approx(0.5)
    assert m.per_class["b"].recall == pytest.approx(0.5)
    assert m.per_class["c"].precision == pytest.approx(0.5)
    assert m.per_class["c"].f1 == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [m.per_class[k].support for k in "abc"] == [3, 2, 1]


def test_absent_class_counts_as_zero_in_macro_f1() -> None:
    m = compute_metrics([0, 0, 1, 1], [0, 0, 1, 1], ["x", "y", "never"])
    assert m.accuracy == 1.0
    assert m.per_class["never"].f1 == 0.0
    assert m.macro_f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("true", "pred", "message"),
    [([0, 1], [0], "equal length"), ([], [], "empty"), ([0, 3], [0, 1], r"\[0, 2\)")],
)
def test_rejects_malformed_input(true: list[int], pred: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(true, pred, ["a", "b"])


def test_report_and_json(tmp_path) -> None:
    m = compute_metrics([0, 1, 1], [0, 1, 0], ["neg", "pos"], examples_per_s=12.5)
    text = format_report(m, title="demo")
    assert "accuracy 66.67%" in text and "macro-F1 66.67%" in text and "12.5 examples/s" in text
    assert "neg" in text and "confusion matrix" in text
    m.write_json(tmp_path / "m.json")
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded["confusion_matrix"] == [[1, 0], [1, 1]]
    assert loaded["per_class"]["pos"]["recall"] == pytest.approx(0.5)
