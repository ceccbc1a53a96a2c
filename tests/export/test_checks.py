"""The self-checks fail loudly: a wrong graph, a wrong tokenizer or a lossy int8 model is refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kdserve.core.bundle import BundleModel, read_manifest, verify_bundle, write_manifest
from kdserve.export import onnx_export
from kdserve.export.checks import (
    AccuracyGateError,
    ExportError,
    ParityError,
    accuracy_gate,
    check_parity,
    parity_texts,
)
from tests.export.conftest import MAX_LENGTH, copy_bundle, make_student


def _student_reference(folder: Path) -> Any:
    model = onnx_export.load_student(folder)
    return onnx_export.student_reference(folder, model, MAX_LENGTH)[0]


def _validation_texts(spec: Any) -> list[str]:
    from kdserve.core.data import load_dataset

    return [t for t, _ in load_dataset(spec).validation]


def _perturb_initializer(model_path: Path, name_part: str, delta: float) -> str:
    model = onnx.load(str(model_path))
    init = next(i for i in model.graph.initializer if name_part in i.name and i.data_type == onnx.TensorProto.FLOAT)
    values = numpy_helper.to_array(init).copy()
    values.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(model_path))
    return init.name


def test_parity_passes_on_the_real_export(
    bundles: dict[str, list[Path]], student_dirs: dict[str, Path], sentiment_data: Any
) -> None:
    texts = parity_texts(_validation_texts(sentiment_data), 16)
    report = check_parity(_student_reference(student_dirs["bilstm"]), BundleModel(bundles["bilstm"][0]), texts, 1e-4)
    assert report.texts == 16 and report.max_abs_diff <= 1e-5


def test_parity_fails_loudly_on_a_perturbed_initializer(
    bundles: dict[str, list[Path]], student_dirs: dict[str, Path], sentiment_data: Any, tmp_path: Path
) -> None:
    broken = copy_bundle(bundles["bilstm"][0], tmp_path)
    _perturb_initializer(broken / "model.onnx", "classifier.3.bias", 0.01)  # the output layer: shifts one logit
    write_manifest(broken, read_manifest(broken))  # re-hash: the graph is "valid", just wrong
    texts = parity_texts(_validation_texts(sentiment_data), 16)
    with pytest.raises(ParityError) as info:
        check_parity(_student_reference(student_dirs["bilstm"]), BundleModel(broken), texts, 1e-4)
    message = str(info.value)
    assert "ONNX logits differ from PyTorch by up to 0.01 on 16 validation texts (tolerance 0.0001)" in message
    assert str(broken) in message and "\n" not in message


def test_parity_fails_when_the_bundle_tokenizer_differs(
    bundles: dict[str, list[Path]], student_dirs: dict[str, Path], sentiment_data: Any, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    broken = copy_bundle(bundles["textcnn"][0], tmp_path)
    tokenizer = Tokenizer.from_file(str(broken / "tokenizer.json"))
    tokenizer.normalizer = None  # no lower-casing: "The" is now [UNK] where training saw "the"
    tokenizer.save(str(broken / "tokenizer.json"))
    write_manifest(broken, read_manifest(broken))
    texts = ["The movie was great .", "the film was bad ."]
    with pytest.raises(ParityError, match="the bundle tokenizer gives different ids than training for text 'The movie"):
        check_parity(_student_reference(student_dirs["textcnn"]), BundleModel(broken), texts, 1e-4)


def test_export_of_a_wrong_model_is_refused_and_nothing_is_written(
    student_dirs: dict[str, Path],
    sentiment_data: Any,
    export_config: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exporter writes a student with other weights (same architecture): parity must catch it."""
    from kdserve.export.pipeline import export_checkpoint

    other = onnx_export.load_student(make_student("bilstm", tmp_path / "other", sentiment_data, train=False, seed=7))
    real_export = onnx_export.export_student
    monkeypatch.setattr(onnx_export, "export_student", lambda model, *a: real_export(other, *a))
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="ONNX logits differ from PyTorch by up to"):
        export_checkpoint(export_config(student_dirs["bilstm"], out))
    assert list(out.iterdir()) == []  # staging removed, no bundle published


def test_parity_texts_span_the_lengths_and_mix_them() -> None:
    texts = [f"w{i} " * i for i in range(1, 101)] + ["", "   "]
    picked = parity_texts(texts, 10)
    assert len(picked) == 10 and "" not in picked and "   " not in picked
    lengths = [len(t.split()) for t in picked]
    assert max(lengths) == 100 and min(lengths) == 1
    assert lengths[:2] == [1, 100]  # short and long alternate, so each batch mixes padding
    assert parity_texts(["a", "bb"], 10) == ["a", "bb"]
    with pytest.raises(ExportError, match="no non-empty text"):
        parity_texts(["", " "], 4)


def _scores(accuracy: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "macro_f1": accuracy, "examples": 200, "data": "d", "split": "validation"}


def test_accuracy_gate_unit() -> None:
    assert accuracy_gate(_scores(0.90), _scores(0.895), 1.0, False) == (pytest.approx(0.5), False)
    assert accuracy_gate(_scores(0.90), _scores(0.95), -1.0, False)[1] is False  # 5 points better passes -1
    with pytest.raises(AccuracyGateError) as info:
        accuracy_gate(_scores(0.90), _scores(0.85), 1.0, False)
    assert str(info.value) == (
        "the int8 model loses 5.00 accuracy points (fp32 90.00% -> int8 85.00% on 200 d validation examples), "
        "more than --max-accuracy-drop 1; it was not written (pass --force to keep it anyway)"
    )
    assert accuracy_gate(_scores(0.90), _scores(0.85), 1.0, True) == (pytest.approx(5.0), True)


def test_gate_refuses_a_negative_tolerance_and_force_overrides(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    """int8 equals fp32 here (drop 0), so demanding a 1-point gain (-1) must refuse it: the
    default mode tries dynamic, then static, and names both refusals."""
    from kdserve.export.pipeline import export_checkpoint

    out = tmp_path / "refused"
    with pytest.raises(AccuracyGateError) as info:
        export_checkpoint(export_config(student_dirs["textcnn"], out, name="cnn", max_accuracy_drop=-1.0))
    message = str(info.value)
    assert message.startswith("the int8 model loses 0.00 accuracy points (fp32 100.00% -> int8 100.00% on 20 ")
    assert "more than --max-accuracy-drop -1; it was not written (pass --force to keep it anyway)" in message
    assert "; then the int8-static model loses 0.00 accuracy points (fp32 100.00% -> int8-static 100.00%" in message
    assert message.endswith(f"the fp32 bundle was written to {out / 'cnn-fp32'}")
    assert sorted(p.name for p in out.iterdir()) == ["cnn-fp32"] and info.value.written == [out / "cnn-fp32"]
    gate = verify_bundle(out / "cnn-fp32").extra["accuracy_gate"]
    assert gate == {
        "drop_points": 0.0,
        "max_drop_points": -1.0,
        "auc_drop_points": 0.0,
        "auc_drop_label": "negative",
        "max_auc_drop_points": 0.5,
        "passed": False,
        "forced": False,
    }
    attempts = verify_bundle(out / "cnn-fp32").extra["quantization_attempts"]
    assert [(a["precision"], a["passed"]) for a in attempts] == [("int8", False), ("int8-static", False)]

    forced = export_checkpoint(
        export_config(student_dirs["textcnn"], tmp_path / "forced", name="cnn", max_accuracy_drop=-1.0, force=True)
    )
    assert [p.name for p in forced] == ["cnn-fp32", "cnn-int8"]
    assert verify_bundle(forced[1]).extra["accuracy_gate"]["forced"] is True
    assert "overridden with --force" in (forced[1] / "README.md").read_text()


def _damage_dynamic_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make dynamic quantization damage the output layer (class 0 always wins: 50 points lost)."""
    from kdserve.export import quantize

    real = quantize.quantize_dynamic_int8

    def damaging(src: Path, dst: Path, *args: Any) -> dict[str, Any]:
        facts = real(src, dst, *args)
        model = onnx.load(str(dst))
        bias = next(i for i in model.graph.initializer if i.name.endswith("classifier.3.bias"))
        values = numpy_helper.to_array(bias).copy()
        values[0] += 1000.0
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        onnx.save(model, str(dst))
        return facts

    monkeypatch.setattr(quantize, "quantize_dynamic_int8", damaging)


def test_gate_refuses_a_damaged_int8_model_at_the_default_tolerance(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--quantize dynamic has no fallback: a 50-point loss is refused and only fp32 is written."""
    from kdserve.export.pipeline import export_checkpoint

    _damage_dynamic_int8(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(AccuracyGateError, match=r"loses 50\.00 accuracy points \(fp32 100\.00% -> int8 50\.00%"):
        export_checkpoint(export_config(student_dirs["bilstm"], out, name="lstm", quantization="dynamic"))
    assert sorted(p.name for p in out.iterdir()) == ["lstm-fp32"]
    manifest = verify_bundle(out / "lstm-fp32")
    assert manifest.metrics["int8"]["accuracy"] == 0.5 and manifest.metrics["fp32"]["accuracy"] == 1.0
    assert "quantization_attempts" not in manifest.extra
    shutil.rmtree(out)


def test_auto_quantization_falls_back_to_static_when_dynamic_is_refused(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default mode: the damaged dynamic model is refused, static int8 is calibrated and kept,
    and both attempts are on record in both manifests."""
    from kdserve.export.pipeline import export_checkpoint

    _damage_dynamic_int8(monkeypatch)
    out = tmp_path / "out"
    paths = export_checkpoint(export_config(student_dirs["bilstm"], out, name="lstm"))
    assert [p.name for p in paths] == ["lstm-fp32", "lstm-int8-static"]
    assert sorted(p.name for p in out.iterdir()) == ["lstm-fp32", "lstm-int8-static"]
    static = verify_bundle(paths[1])
    assert static.precision == "int8-static" and static.extra["quantization"]["mode"] == "static"
    assert static.metrics["int8"]["accuracy"] == 0.5 and static.metrics["int8-static"]["accuracy"] == 1.0
    attempts = static.extra["quantization_attempts"]
    assert [(a["precision"], a["drop_points"], a["passed"]) for a in attempts] == [
        ("int8", pytest.approx(50.0), False),
        ("int8-static", 0.0, True),
    ]
    assert verify_bundle(paths[0]).extra["quantization_attempts"] == attempts
    assert static.extra["accuracy_gate"] == {
        "drop_points": 0.0,
        "max_drop_points": 1.0,
        "auc_drop_points": 0.0,
        "auc_drop_label": "negative",
        "max_auc_drop_points": 0.5,
        "passed": True,
        "forced": False,
    }
    assert "parity" not in static.extra  # parity is the fp32 graph's, recorded in its own manifest


def test_auto_quantization_keeps_the_refusal_when_static_cannot_run(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LSTM has no static (QDQ) form: with only LSTM to quantize the fallback cannot be made, and
    the export ends as a refusal naming both reasons, not as a failed export."""
    from kdserve.export.pipeline import export_checkpoint

    _damage_dynamic_int8(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(AccuracyGateError) as info:
        export_checkpoint(export_config(student_dirs["bilstm"], out, name="lstm", quantize_ops=("LSTM",)))
    assert str(info.value).startswith("the int8 model loses 50.00 accuracy points")
    assert "; then static int8 could not be made: static quantization supports MatMul, " in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["lstm-fp32"]


def test_auc_drops_per_label_exact_values() -> None:
    from kdserve.export.checks import auc_drops

    # single-label: one-vs-rest on the softmax; fp32 ranks the 2 positives above the 2 negatives
    # (AUC 1), the int8 logits swap one positive below one negative (3 of 4 pairs right: AUC 0.75)
    targets = np.array([0, 1, 1, 0])
    fp32 = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [2.0, 0.0]])
    int8 = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0], [0.0, 0.2]])
    assert auc_drops(fp32, int8, targets, ["negative", "positive"], "single_label") == {
        "negative": pytest.approx(25.0),
        "positive": pytest.approx(25.0),
    }
    # multi-label: each label's own logit; a label without a positive row has no AUC and is left out
    matrix = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    fp32 = np.array([[3.0, 0.1], [1.0, 0.2], [2.0, 0.3], [0.0, 0.4]])
    gained = np.array([[3.0, 0.1], [1.0, 0.2], [2.0, 0.3], [2.5, 0.4]])  # a negative now above a positive
    assert auc_drops(fp32, gained, matrix, ["a", "b"], "multi_label") == {"a": pytest.approx(25.0)}
    assert auc_drops(gained, fp32, matrix, ["a", "b"], "multi_label") == {"a": pytest.approx(-25.0)}


def test_auc_gate_names_the_label_and_force_keeps_the_model() -> None:
    from kdserve.export.checks import auc_gate

    drops = {"pride": 0.6, "joy": -0.2, "grief": 0.1}
    with pytest.raises(AccuracyGateError) as info:
        auc_gate(drops, 0.5, force=False)
    assert str(info.value) == (
        "the int8 model loses 0.60 ROC-AUC points on label 'pride', more than --max-auc-drop 0.5; "
        "it was not written (pass --force to keep it anyway)"
    )
    assert auc_gate(drops, 0.5, force=True) == (0.6, True)
    assert auc_gate(drops, 0.6, force=False) == (0.6, False)
    assert auc_gate({}, 0.5, force=False) == (0.0, False)
