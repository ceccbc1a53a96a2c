"""int8 quantization with ONNX Runtime: dynamic (weights int8, activations quantized per batch
at run time) or static (activation ranges calibrated on training texts, QDQ format).

One code path for the teacher and the students (``onnxruntime.quantization`` works on any
graph; Optimum's ORTQuantizer wants a transformers config folder). The CPU presets
(``kdserve.export.config.QUANT_PRESETS``) carry Optimum's AutoQuantizationConfig settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.export.checks import ExportError
from kdserve.export.config import QUANT_PRESETS
from kdserve.export.onnx_export import quiet

#: Ops that the static (QDQ) quantizer can handle among those a user may ask for; Attention
#: and LSTM have no QDQ form and stay float in a static model.
_STATIC_OPS = ("MatMul", "Gather", "EmbedLayerNormalization", "Conv", "Transpose")


def _extra_options() -> dict[str, Any]:
    import onnx

    # Graphs fused by ORTOptimizer hold com.microsoft ops that ONNX shape inference cannot type;
    # every tensor in these models is float32, so that is the right default for the quantizer.
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


#: Node types that carry int8 arithmetic or int8 weights in a quantized graph.
INT8_OPS = (
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QAttention",
    "DynamicQuantizeLSTM",
    "ConvInteger",
    "QEmbedLayerNormalization",
    "QLinearMatMul",
    "QLinearConv",
    "QuantizeLinear",
    "DequantizeLinear",
)


def int8_nodes(path: Path) -> dict[str, int]:
    """How many nodes of each int8 type ``path`` holds: what quantization actually changed."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in INT8_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def quantize_dynamic_int8(src: Path, dst: Path, preset: str, op_types: Sequence[str]) -> dict[str, Any]:
    """Dynamic int8: signed int8 weights (per channel), uint8 activations computed per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = QUANT_PRESETS[preset]
    try:
        with quiet():
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=list(op_types),
                per_channel=settings["per_channel"],
                reduce_range=settings["reduce_range"],
                weight_type=QuantType.QInt8,
                extra_options=_extra_options(),
            )
    except Exception as exc:  # onnxruntime.quantization raises bare RuntimeError/ValueError
        raise ExportError(f"dynamic int8 quantization of {src} failed: {str(exc).strip().splitlines()[0]}") from None
    return {
        "mode": "dynamic",
        "preset": preset,
        **settings,
        "weight_type": "int8",
        "activation_type": "uint8",
        "op_types": list(op_types),
        "int8_nodes": int8_nodes(dst),
    }


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._iter, None)
        return dict(feed) if feed is not None else None

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def quantize_static_int8(
    src: Path,
    dst: Path,
    preset: str,
    op_types: Sequence[str],
    feeds: Iterable[Mapping[str, np.ndarray]],
    method: str = "minmax",
) -> dict[str, Any]:
    """Static int8 in QDQ format: int8 weights, uint8 activations whose ranges come from running
    ``feeds`` (encoded training batches) through the float model."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    settings = QUANT_PRESETS[preset]
    ops = [op for op in op_types if op in _STATIC_OPS]
    if not ops:
        raise ExportError(
            f"static quantization supports {', '.join(_STATIC_OPS)}; none of {list(op_types)} is among them"
        )
    feeds = list(feeds)
    if not feeds:
        raise ExportError("static quantization needs at least one calibration batch")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        with quiet():
            quantize_static(
                src,
                dst,
                _Reader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=ops,
                per_channel=settings["per_channel"],
                reduce_range=settings["reduce_range"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options=_extra_options(),
            )
    except Exception as exc:
        raise ExportError(f"static int8 quantization of {src} failed: {str(exc).strip().splitlines()[0]}") from None
    return {
        "mode": "static",
        "format": "QDQ",
        "preset": preset,
        **settings,
        "weight_type": "int8",
        "activation_type": "uint8",
        "op_types": ops,
        "calibration_method": method,
        "calibration_batches": len(feeds),
        "calibration_examples": int(sum(len(f["input_ids"]) for f in feeds)),
        "int8_nodes": int8_nodes(dst),
    }
