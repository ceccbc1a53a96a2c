"""ExportConfig validates every field on construction, with one clear message per bad value."""

from __future__ import annotations

from typing import Any

import pytest

from kdserve.core.errors import ConfigError
from kdserve.export.config import (
    DEFAULT_QUANTIZE_OPS,
    PRESETS,
    QUANT_PRESETS,
    ExportConfig,
    detect_quant_preset,
)


def make(**overrides: Any) -> ExportConfig:
    return ExportConfig(**{"checkpoint": "ckpt", "output_dir": "out", **overrides})


def test_defaults() -> None:
    config = make()
    assert (config.format, config.quantization, config.optimization, config.exporter) == (
        "bundle",
        "auto",
        "O2",
        "auto",
    )
    assert config.parity_tolerance == 1e-4 and config.max_accuracy_drop == 1.0 and config.opset == 18
    assert config.quantize_ops == DEFAULT_QUANTIZE_OPS and "Conv" not in config.quantize_ops
    assert config.quantization_modes == ("dynamic", "static")
    assert make(quantization="dynamic").quantization_modes == ("dynamic",)
    assert make(quantization="static").quantization_modes == ("static",)
    assert make(quantization="none").quantization_modes == ()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"format": "onnx"}, "format must be one of bundle, triton, got 'onnx'"),
        ({"quantization": "int4"}, "quantization must be one of auto, dynamic, static, none"),
        ({"quant_preset": "avx"}, "quant_preset must be one of auto, avx512_vnni, avx2, arm64"),
        ({"optimization": "O4"}, "optimization must be one of none, O1, O2"),
        ({"exporter": "jit"}, "exporter must be one of auto, torchscript, dynamo"),
        ({"quantize_ops": ("MatMul", "Softmax")}, "quantize_ops ['MatMul', 'Softmax'] must be a non-empty subset"),
        ({"quantize_ops": ()}, "quantize_ops [] must be a non-empty subset"),
        ({"max_length": 1}, "max_length must be an integer >= 2, got 1"),
        ({"opset": 9}, "opset must be an integer in [14, 21], got 9"),
        ({"parity_tolerance": 0}, "parity_tolerance must be in (0, 1), got 0"),
        ({"parity_texts": 0}, "parity_texts must be an integer >= 1, got 0"),
        ({"max_accuracy_drop": 101}, "max_accuracy_drop must be in [-100, 100] points, got 101"),
        ({"max_auc_drop": -0.1}, "max_auc_drop must be in [0, 100] points, got -0.1"),
        ({"max_eval_examples": 0}, "max_eval_examples must be an integer >= 1, got 0"),
        ({"calibration_examples": True}, "calibration_examples must be an integer >= 1, got True"),
        ({"name": "../x"}, "name '../x' must be letters, digits"),
        ({"checkpoint": " "}, "checkpoint must be a folder path"),
        ({"preset": "huge"}, "preset must be one of quick, full, got 'huge'"),
    ],
)
def test_bad_values_raise_config_error(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(**overrides)
    assert needle in str(info.value)
    assert info.value.exit_code == 2


def test_presets_apply_then_overrides_win() -> None:
    quick = ExportConfig.from_preset("quick", checkpoint="c", output_dir="o")
    assert quick.preset == "quick" and quick.max_eval_examples == PRESETS["quick"]["max_eval_examples"] == 1000
    assert ExportConfig.from_preset("full", checkpoint="c", output_dir="o").max_eval_examples is None
    overridden = ExportConfig.from_preset("quick", checkpoint="c", output_dir="o", parity_texts=5, name=None)
    assert overridden.parity_texts == 5 and overridden.name is None
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        ExportConfig.from_preset("tiny", checkpoint="c", output_dir="o")


def test_quant_presets_follow_the_cpu_rules() -> None:
    # reduce_range (7-bit weights) only where u8*s8 pair sums can saturate: AVX2 without VNNI.
    assert QUANT_PRESETS["avx2"]["reduce_range"] is True
    assert QUANT_PRESETS["avx512_vnni"]["reduce_range"] is False and QUANT_PRESETS["arm64"]["reduce_range"] is False
    assert detect_quant_preset() in QUANT_PRESETS
    assert make(quant_preset="auto").resolved_quant_preset == detect_quant_preset()
    assert make(quant_preset="arm64").resolved_quant_preset == "arm64"
