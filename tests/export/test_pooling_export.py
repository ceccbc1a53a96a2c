"""A mean-pooling teacher exports through torch.onnx, keeps ORT's fused attention, and checks itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, verify_bundle
from tests.export.conftest import MAX_LENGTH, make_teacher


@pytest.fixture(scope="module")
def mean_teacher_dir(tiny_bert_dir: Path, sentiment_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT fine-tuned through mean pooling."""
    return make_teacher(tiny_bert_dir, sentiment_data, tmp_path_factory.mktemp("mean_teacher"), pooling="mean")


def test_mean_pooling_teacher_exports_fused_and_matches_pytorch(
    mean_teacher_dir: Path, export_config: Callable[..., Any], tmp_path: Path
) -> None:
    import onnx
    import torch

    from kdserve.export.pipeline import export_checkpoint
    from kdserve.train.checkpoint import load_classifier
    from kdserve.train.common import pad_batch

    fp32, int8 = export_checkpoint(export_config(mean_teacher_dir, tmp_path, name="mean"))
    m = verify_bundle(fp32)
    assert (m.extra["pooling"], m.extra["exporter"], m.extra["optimization"]) == (
        "mean",
        "torch.onnx-torchscript",
        "O2",
    )
    assert m.inputs == ["input_ids", "attention_mask", "token_type_ids"] and m.output == "logits"
    assert m.extra["parity"]["max_abs_diff"] <= 1e-4 and m.metrics["fp32"]["accuracy"] == 1.0
    assert "kdserve_pooling: mean" in (fp32 / "README.md").read_text()
    # ORT's optimizer recognised the eager attention: the same fused ops as an Optimum export
    ops = {node.op_type for node in onnx.load(str(fp32 / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    q = verify_bundle(int8)
    assert q.extra["pooling"] == "mean" and "QAttention" in q.extra["quantization"]["int8_nodes"]
    assert q.extra["vs_fp32"]["argmax_agreement"] == 1.0

    model, tokenizer = load_classifier(str(mean_teacher_dir))
    model.eval()
    bundle = BundleModel(fp32)
    for texts in (["good"], ["the plot was dull .", "awful", " ".join(["the movie was really good and"] * 12)]):
        ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        with torch.inference_mode():
            expected = model(**pad_batch(ids, 0, True)).logits.numpy()
        np.testing.assert_allclose(bundle.run(bundle.encode(texts)), expected, atol=1e-4)
    assert json.loads((mean_teacher_dir / "config.json").read_text())["kdserve_pooling"] == "mean"
