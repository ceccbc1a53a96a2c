"""``kdserve bench footprint`` against a real kdserve holding two tiny bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdserve.bench.common import BenchError
from kdserve.bench.footprint import FootprintConfig, run_footprint
from kdserve.cli import main
from kdserve.core.errors import ConfigError


def test_footprint_times_ready_reads_memory_and_answers_every_model(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("kdserve.serve.app")
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "footprint",
            "--bundles",
            str(tiny_bundles),
            "--models",
            "tiny-textcnn,tiny-bilstm",
            "--data",
            str(text_files["short"]),
            "--requests",
            "15",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert [m["name"] for m in result["models"]] == ["tiny-bilstm", "tiny-textcnn"]  # find_bundles' order
    for model in result["models"]:
        assert model["statuses"] == {"200": 15} and model["latency_ms"]["p50"] > 0
    assert 0 < result["ready_s"] < 180
    if sys.platform.startswith("linux"):
        # a Python process with FastAPI and ONNX Runtime loaded holds tens of MB at least
        assert 20 < result["rss_mb_at_ready"] <= result["rss_mb_after_requests"] * 1.5 < 3000
    report = (out / "report.md").read_text()
    assert report.startswith("# Server footprint\n") and "| tiny-bilstm | bilstm |" in report
    assert f"ready **{result['ready_s']} s**" in report


def test_footprint_refuses_bad_settings(tiny_bundles: Path) -> None:
    with pytest.raises(ConfigError, match="requests must be >= 0"):
        FootprintConfig(str(tiny_bundles), requests=-1)
    with pytest.raises(BenchError, match="no bundle named nope"):
        run_footprint(FootprintConfig(str(tiny_bundles), models=["nope"]))
