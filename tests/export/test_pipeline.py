"""End to end: tiny teacher and students of every kind -> fp32 + int8 bundles, checked against PyTorch."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, verify_bundle
from tests.export.conftest import LABELS, MAX_LENGTH, STUDENT_KINDS

KINDS = ("teacher", *STUDENT_KINDS)
BUNDLE_FILES = {"model.onnx", "tokenizer.json", "labels.json", "README.md", "manifest.json"}
# The ops that carry int8 weights in each kind's quantized graph.
INT8_OPS = {
    "teacher": {"QAttention", "MatMulInteger"},
    "bilstm": {"DynamicQuantizeLSTM", "MatMulInteger"},
    "textcnn": {"MatMulInteger"},
    "transformer": {"MatMulInteger"},
}


def _reference(kind: str, folder: Path) -> Callable[[list[str]], np.ndarray]:
    """PyTorch logits of the checkpoint with its training tokenizer, for texts padded in one batch."""
    import torch

    from kdserve.train.common import pad_batch

    if kind == "teacher":
        from kdserve.train.checkpoint import load_classifier

        model, tokenizer = load_classifier(str(folder))
        model.eval()

        def run(texts: list[str]) -> np.ndarray:
            ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
            with torch.inference_mode():
                return model(**pad_batch(ids, 0, True)).logits.numpy()

        return run
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer
    from kdserve.train.students import load_student

    student, _ = load_student(folder)
    tokenizer = load_tokenizer(folder)

    def run_student(texts: list[str]) -> np.ndarray:
        batch = pad_batch(encode_batch(tokenizer, texts, MAX_LENGTH), 0, False)
        with torch.inference_mode():
            return student(batch["input_ids"], batch["attention_mask"]).numpy()

    return run_student


def _checkpoint(kind: str, tiny_teacher_dir: Path, student_dirs: dict[str, Path]) -> Path:
    return tiny_teacher_dir if kind == "teacher" else student_dirs[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_fp32_and_int8_bundles_with_full_manifests(
    kind: str, bundles: dict[str, list[Path]], tiny_teacher_dir: Path, student_dirs: dict[str, Path]
) -> None:
    fp32, int8 = bundles[kind]
    assert (fp32.name, int8.name) == (f"{kind}-fp32", f"{kind}-int8")
    source = _checkpoint(kind, tiny_teacher_dir, student_dirs)
    for folder, precision in ((fp32, "fp32"), (int8, "int8")):
        assert {p.name for p in folder.iterdir()} == BUNDLE_FILES
        m = verify_bundle(folder)
        assert (m.name, m.model_kind, m.precision, m.labels, m.max_length) == (
            folder.name,
            kind,
            precision,
            list(LABELS),
            MAX_LENGTH,
        )
        assert m.inputs == (
            ["input_ids", "attention_mask", "token_type_ids"] if kind == "teacher" else ["input_ids", "attention_mask"]
        )
        assert (m.output, m.pad_id, m.opset, m.source_checkpoint) == ("logits", 0, 18, str(source.resolve()))
        assert m.kdserve_version and m.export_seconds > 0 and len(m.manifest_sha256) == 64
        assert datetime.fromisoformat(m.created).tzinfo == UTC
        assert set(m.metrics) == {"fp32", "int8"}
        for scores in m.metrics.values():
            # the tiny models were fitted to the separable data: both precisions get every example right
            assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0 and scores["examples"] == 20
            assert scores["split"] == "validation" and "sentiment.csv" in scores["data"]
        assert m.extra["accuracy_gate"] == {
            "drop_points": 0.0,
            "max_drop_points": 1.0,
            "auc_drop_points": 0.0,
            "auc_drop_label": "negative",
            "max_auc_drop_points": 0.5,
            "passed": True,
            "forced": False,
        }
        assert json.loads((folder / "labels.json").read_text()) == list(LABELS)
        card = (folder / "README.md").read_text()
        assert f"# {folder.name}" in card and "`negative`, `positive`" in card and "100.00%" in card
        assert "## Limits" in card and "## Intended use" in card
    fp32_manifest, int8_manifest = verify_bundle(fp32), verify_bundle(int8)
    assert fp32_manifest.extra["parity"]["max_abs_diff"] <= 1e-4 and fp32_manifest.extra["parity"]["texts"] == 16
    assert int8_manifest.extra["quantization"]["mode"] == "dynamic"
    assert INT8_OPS[kind] <= set(int8_manifest.extra["quantization"]["int8_nodes"])
    assert int8_manifest.extra["vs_fp32"]["argmax_agreement"] == 1.0
    if kind == "teacher":
        assert fp32_manifest.extra["optimization"] == "O2" and fp32_manifest.extra["exporter"] == "optimum"
    else:
        from kdserve.train.students import count_parameters, load_student

        assert fp32_manifest.parameters == count_parameters(load_student(source)[0])
        exporter = "kdserve-bilstm-graph" if kind == "bilstm" else "torch.onnx-torchscript"
        assert fp32_manifest.extra["exporter"] == exporter


@pytest.mark.parametrize("kind", KINDS)
def test_bundle_matches_pytorch_for_any_batch_and_length(
    kind: str, bundles: dict[str, list[Path]], tiny_teacher_dir: Path, student_dirs: dict[str, Path]
) -> None:
    """Dynamic axes: batch sizes 1-5 and lengths 1 to past max_length (truncated) all run and agree."""
    reference = _reference(kind, _checkpoint(kind, tiny_teacher_dir, student_dirs))
    model = BundleModel(bundles[kind][0])
    long_text = " ".join(["the movie was really good and"] * 12)  # > MAX_LENGTH tokens
    for texts in (["good"], ["the plot was dull .", "awful", long_text], ["a", "b c", "the film", "great !", "bad"]):
        encoded = model.encode(texts)
        assert encoded.input_ids.shape[0] == len(texts)
        np.testing.assert_allclose(model.run(encoded), reference(texts), atol=1e-4)
    assert model.encode([long_text]).lengths == [MAX_LENGTH] and model.encode([long_text]).truncated == [True]
    graph_inputs = model.session.get_inputs()
    assert all(isinstance(i.shape[0], str) and isinstance(i.shape[1], str) for i in graph_inputs)
    assert all(i.type == "tensor(int64)" for i in graph_inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_bundle_tokenizer_has_no_padding_or_truncation(kind: str, bundles: dict[str, list[Path]]) -> None:
    for folder in bundles[kind]:
        stored = json.loads((folder / "tokenizer.json").read_text())
        assert stored["padding"] is None and stored["truncation"] is None


def test_quantization_none_writes_only_fp32_and_existing_output_needs_overwrite(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.checks import OutputExistsError
    from kdserve.export.pipeline import export_checkpoint

    config = export_config(student_dirs["textcnn"], tmp_path, name="cnn", quantization="none")
    assert export_checkpoint(config) == [tmp_path / "cnn-fp32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn-fp32"]  # no staging folder left behind
    assert set(verify_bundle(tmp_path / "cnn-fp32").metrics) == {"fp32"}
    before = (tmp_path / "cnn-fp32" / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="cnn-fp32 already exists .pass --overwrite"):
        export_checkpoint(config)
    assert (tmp_path / "cnn-fp32" / "manifest.json").read_text() == before
    config.overwrite = True
    assert export_checkpoint(config) == [tmp_path / "cnn-fp32"]
    verify_bundle(tmp_path / "cnn-fp32")


def test_static_int8_calibrates_and_gets_its_own_bundle(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    paths = export_checkpoint(export_config(student_dirs["transformer"], tmp_path, name="tf", quantization="static"))
    assert [p.name for p in paths] == ["tf-fp32", "tf-int8-static"]
    m = verify_bundle(paths[1])
    quant = m.extra["quantization"]
    assert (m.precision, quant["mode"], quant["format"], quant["calibration_examples"]) == (
        "int8-static",
        "static",
        "QDQ",
        32,
    )
    assert quant["int8_nodes"]["QuantizeLinear"] > 0 and set(m.metrics) == {"fp32", "int8-static"}
    assert m.metrics["int8-static"]["accuracy"] == 1.0


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("textcnn"),
        pytest.param("bilstm", marks=pytest.mark.slow),
        pytest.param("transformer", marks=pytest.mark.slow),
    ],
)
def test_dynamo_exporter_also_passes_parity(
    kind: str, student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript")
    from kdserve.export.pipeline import export_checkpoint

    (fp32,) = export_checkpoint(export_config(student_dirs[kind], tmp_path, exporter="dynamo", quantization="none"))
    m = verify_bundle(fp32)
    assert m.extra["exporter"] == "torch.onnx-dynamo" and m.extra["parity"]["max_abs_diff"] <= 1e-4
