"""``kdserve pipeline`` end to end on a tiny BERT teacher and a small CSV (slow: every stage runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdserve.core.data import DatasetSpec
from tests.conftest import write_sentiment_csv

pytest.importorskip("torch")


@pytest.mark.slow
def test_a_refused_int8_teacher_keeps_the_run_going_with_its_fp32_bundle(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accuracy gate refusing the teacher's int8 models (dynamic, then the static fallback; it
    refused dynamic once on Rotten Tomatoes: -1.06 points) must not lose the run: the fp32 teacher
    is kept, the student is still exported and timed, and the summary says why there is no int8
    teacher."""
    import kdserve.export.pipeline
    from kdserve.export.checks import AccuracyGateError
    from kdserve.pipeline import run_pipeline

    real_gate = kdserve.export.pipeline.accuracy_gate
    calls: list[str] = []

    def gate(*args: Any, **kwargs: Any) -> Any:
        calls.append("gate")
        if len(calls) <= 2:  # the teacher is exported first: dynamic, then static
            raise AccuracyGateError(f"the {args[-1]} model loses 1.06 accuracy points (injected)")
        return real_gate(*args, **kwargs)

    monkeypatch.setattr(kdserve.export.pipeline, "accuracy_gate", gate)
    data = DatasetSpec(str(write_sentiment_csv(tmp_path / "sentiment.csv", 240)), validation_fraction=0.2)
    summary = run_pipeline("quick", data, tmp_path / "run", teacher_model=str(tiny_bert_dir), max_train_examples=200)

    names = [r["bundle"] for r in summary["rows"]]
    assert names == ["teacher-fp32", "bilstm-fp32", "bilstm-int8"] and len(calls) == 3
    assert summary["int8_refused"]["teacher"].startswith(
        "the int8 model loses 1.06 accuracy points (injected); then the int8-static model loses 1.06"
    )
    assert "bilstm" not in summary["int8_refused"]
    assert sorted(p.name for p in (tmp_path / "run" / "bundles").iterdir()) == [
        "bilstm-fp32",
        "bilstm-int8",
        "teacher-fp32",
    ]
    assert all(r["p50_ms"] > 0 and 0 <= r["accuracy"] <= 1 for r in summary["rows"])
    text = (tmp_path / "run" / "summary.md").read_text()
    assert "speed-up vs teacher-fp32 |" in text and "No int8 bundle of the teacher: " in text
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["int8_refused"] == summary["int8_refused"]
