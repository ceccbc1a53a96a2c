"""A text's scores and its batchmates: the decision rule, the measurement, and rows run alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import ROWS_ALONE, BundleModel, read_manifest, verify_bundle
from kdserve.core.errors import ConfigError
from kdserve.export.invariance import decisions

# Mixed lengths, so that length-sorted batches pad and mix short and long texts.
TEXTS = [
    "good",
    "the movie was really good and the acting was great",
    "awful",
    "the plot was dull and boring and the film was bad",
    "great !",
    "the film was quite good",
    "bad",
    "the acting was terrible , the movie was awful and the plot was very dull",
]


def test_decisions_follow_the_policy_and_never_flag_benign_labels(bundles: dict[str, list[Path]]) -> None:
    base = read_manifest(bundles["bilstm"][0])  # labels negative, positive
    logits = np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])  # softmax positive: 0.5, 0.731, 0.047
    policy = {"thresholds": {"negative": 0.9, "positive": 0.6}, "benign_labels": ["negative"]}
    with_policy = replace(base, calibration={"temperatures": [1.0]}, policy=policy)
    assert decisions(logits, with_policy).tolist() == [[False, False], [False, True], [False, False]]
    hotter = replace(with_policy, calibration={"temperatures": [4.0]})  # positive 0.562 on row 2: under 0.6
    assert decisions(logits, hotter).tolist() == [[False, False], [False, False], [False, False]]
    no_policy = replace(base, calibration={}, policy={})
    assert decisions(logits, no_policy).tolist() == [[True, False], [False, True], [True, False]]
    multi = replace(no_policy, problem_type="multi_label")  # sigmoid >= 0.5 per label
    assert decisions(np.array([[0.0, -0.1], [2.0, 1.0]]), multi).tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize("kind", ["teacher", "bilstm"])
def test_a_dynamic_int8_graph_moves_with_its_batch_unless_rows_run_alone(
    kind: str, bundles: dict[str, list[Path]]
) -> None:
    fp32, int8 = bundles[kind]
    batched = BundleModel(int8, rows_alone=False)
    alone = np.vstack([batched.predict([t]) for t in TEXTS])
    assert np.abs(batched.predict(TEXTS, batch_size=8) - alone).max() > 1e-4  # per-batch activation scales
    served = BundleModel(int8)
    assert served.rows_alone and verify_bundle(int8).extra[ROWS_ALONE] is True
    for size in (1, 3, 8):
        np.testing.assert_array_equal(served.predict(TEXTS, batch_size=size), alone)
    block = verify_bundle(int8).extra["batch_invariance"]
    assert block["rows"] == 20 and block["batch_size"] == 16 and block["served_alone"] is True
    assert block["max_abs_logit_diff"] > 1e-4 and 0 <= block["decisions_changed"] <= 20
    assert "so the bundle runs each text in its own ONNX Runtime call" in (int8 / "README.md").read_text()
    fp32_model = BundleModel(fp32)
    assert not fp32_model.rows_alone
    np.testing.assert_allclose(
        fp32_model.predict(TEXTS, batch_size=8), np.vstack([fp32_model.predict([t]) for t in TEXTS]), atol=1e-5
    )
    fp32_block = verify_bundle(fp32).extra["batch_invariance"]
    assert fp32_block["max_abs_logit_diff"] < 1e-4 and fp32_block["decisions_changed"] == 0
    assert fp32_block["served_alone"] is False
    assert "do not depend on the rest of its batch" in (fp32 / "README.md").read_text()


def test_batched_dynamic_int8_is_a_choice_the_card_warns_about(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    _, int8 = export_checkpoint(
        export_config(student_dirs["bilstm"], tmp_path, name="lstm", dynamic_int8_rows="batched", invariance_texts=5)
    )
    manifest = verify_bundle(int8)
    assert manifest.extra[ROWS_ALONE] is False and not BundleModel(int8).rows_alone
    assert (
        manifest.extra["batch_invariance"]["rows"] == 5 and manifest.extra["batch_invariance"]["served_alone"] is False
    )
    card = (int8 / "README.md").read_text()
    assert "Scores depend on the rest of the batch" in card and "--dynamic-int8-rows alone" in card


def test_no_measurement_with_zero_invariance_texts(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    for folder in export_checkpoint(export_config(student_dirs["textcnn"], tmp_path, name="cnn", invariance_texts=0)):
        assert "batch_invariance" not in verify_bundle(folder).extra
        assert "batch" not in (folder / "README.md").read_text().split("## Limits")[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dynamic_int8_rows": "sometimes"}, "dynamic_int8_rows must be one of alone, batched, got 'sometimes'"),
        ({"invariance_texts": -1}, "invariance_texts must be an integer >= 0, got -1"),
        ({"invariance_texts": True}, "invariance_texts must be an integer >= 0, got True"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any], message: str, export_config: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match=message):
        export_config(Path("c"), Path("o"), **overrides)
