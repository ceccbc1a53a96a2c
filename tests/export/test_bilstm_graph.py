"""The hand-built BiLSTM graph against the PyTorch module, for every pooling, on padded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

VOCAB, CLASSES = 40, 3


def _student(pooling: str) -> torch.nn.Module:
    from kdserve.train.student_configs import BiLSTMConfig
    from kdserve.train.students import BiLSTMStudent

    torch.manual_seed(0)
    config = BiLSTMConfig(
        vocab_size=VOCAB, num_classes=CLASSES, embedding_dim=8, hidden_size=6, classifier_hidden=10, pooling=pooling
    )
    model = BiLSTMStudent(config).eval()
    with torch.no_grad():  # non-zero biases, so a gate-order mistake cannot hide behind zeros
        for name, param in model.named_parameters():
            if "bias" in name:
                param.uniform_(-0.5, 0.5)
    return model


def _batch(lengths: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, VOCAB, size=n)
        mask[row, :n] = 1
    return ids, mask


def _run(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_graph_matches_pytorch_on_mixed_lengths_and_an_empty_row(pooling: str, tmp_path: Path) -> None:
    """Rows of length 7, 1, 4 and 0 (all padding) in one batch: the backward direction must read
    each row reversed within its own length, and the empty row must behave as the module's."""
    import onnx

    from kdserve.export.bilstm_graph import build_bilstm_graph

    model = _student(pooling)
    facts = build_bilstm_graph(model, tmp_path / "m.onnx", 18)
    assert facts == {"exporter": "kdserve-bilstm-graph", "optimization": "none"}
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    used = {name for node in graph.node for name in node.input}
    assert {i.name for i in graph.initializer} <= used  # no unused constants for ONNX Runtime to warn about
    ids, mask = _batch([7, 1, 4, 0], 7)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = _run(tmp_path / "m.onnx", ids, mask)
    assert got.shape == (4, CLASSES)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # each row alone gives its batched logits: padding changes nothing
    for row in range(3):
        alone = _run(
            tmp_path / "m.onnx",
            ids[row : row + 1, : max(int(mask[row].sum()), 1)],
            mask[row : row + 1, : max(int(mask[row].sum()), 1)],
        )
        np.testing.assert_allclose(alone[0], got[row], atol=1e-5, rtol=0)


def test_graph_is_one_lstm_op_and_quantizes_to_one_int8_lstm(tmp_path: Path) -> None:
    """The point of the module: one bidirectional LSTM, far fewer nodes than torch.onnx's trace,
    and dynamic int8 turns that op into DynamicQuantizeLSTM with the logits close to fp32."""
    import onnx

    from kdserve.export.bilstm_graph import build_bilstm_graph
    from kdserve.export.onnx_export import export_student
    from kdserve.export.quantize import int8_nodes, quantize_dynamic_int8

    model = _student("max")
    build_bilstm_graph(model, tmp_path / "graph.onnx", 18)
    export_student(model, tmp_path / "traced.onnx", 18, "torchscript")
    graph = onnx.load(str(tmp_path / "graph.onnx")).graph.node
    traced = onnx.load(str(tmp_path / "traced.onnx")).graph.node
    lstms = [n for n in graph if n.op_type == "LSTM"]
    assert len(lstms) == 1 and len(lstms[0].input) == 5  # X, W, R, B, sequence_lens
    assert any(a.name == "direction" and a.s == b"bidirectional" for a in lstms[0].attribute)
    assert len(graph) < len(traced) / 2
    facts = quantize_dynamic_int8(
        tmp_path / "graph.onnx", tmp_path / "int8.onnx", "avx512_vnni", ("MatMul", "LSTM", "Gather")
    )
    assert facts["int8_nodes"]["DynamicQuantizeLSTM"] == 1 == int8_nodes(tmp_path / "int8.onnx")["DynamicQuantizeLSTM"]
    ids, mask = _batch([5, 3], 5)
    fp32, int8 = _run(tmp_path / "graph.onnx", ids, mask), _run(tmp_path / "int8.onnx", ids, mask)
    np.testing.assert_allclose(int8, fp32, atol=0.05, rtol=0)
