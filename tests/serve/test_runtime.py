"""Model runtime: discovery, checksum verification, providers, warm-up (no HTTP)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from kdserve.core.bundle import BundleError
from kdserve.serve.runtime import (
    CPU,
    MAX_AUTO_WORKERS,
    cpu_cores,
    discover,
    load_model,
    parallelism_for,
    resolve_providers,
    verify_all,
    warm_up,
)


def test_discover_all_and_subset(tiny_bundles: Path) -> None:
    assert list(discover(tiny_bundles)) == ["tiny-bilstm", "tiny-teacher", "tiny-textcnn"]
    assert list(discover(tiny_bundles, ["tiny-textcnn", "tiny-bilstm"])) == ["tiny-textcnn", "tiny-bilstm"]
    with pytest.raises(BundleError, match="no bundle named nope"):
        discover(tiny_bundles, ["nope"])
    with pytest.raises(BundleError, match="bundles folder not found"):
        discover(tiny_bundles / "missing")
    # a folder that is itself one bundle
    assert list(discover(tiny_bundles / "tiny-textcnn")) == ["tiny-textcnn"]


def test_verify_names_the_corrupted_file(tiny_bundles: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_bundles / "tiny-textcnn", tmp_path / "tiny-textcnn")
    model = tmp_path / "tiny-textcnn" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as exc:
        verify_all(discover(tmp_path))
    assert str(exc.value) == f"{model}: sha256 does not match the manifest (corrupted or modified)"


def test_cuda_request_falls_back_to_cpu_with_a_log_line(tiny_bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fallback to test")
    with caplog.at_level(logging.WARNING, logger="kdserve.serve.runtime"):
        assert resolve_providers("cuda") == [CPU]
        loaded = load_model("tiny-textcnn", tiny_bundles / "tiny-textcnn", device="cuda")
    assert loaded.providers == [CPU]
    messages = [r.getMessage() for r in caplog.records]
    assert any("device cuda requested" in m and "Falling back to the CPU" in m for m in messages)


def test_load_and_warm_up_at_every_shape(tiny_bundles: Path) -> None:
    loaded = load_model("tiny-bilstm", tiny_bundles / "tiny-bilstm", intra_op_threads=1, graph_optimization="basic")
    assert loaded.status == "loading" and loaded.providers == [CPU]
    assert loaded.checksum == loaded.manifest.files["model.onnx"]["sha256"]
    # 64 is above the bundle's max_length (32): capped
    warm_up(loaded, [1, 4], [8, 64])
    assert loaded.status == "ready"
    assert loaded.warmup_shapes == [(1, 8), (1, 32), (4, 8), (4, 32)]


def test_bad_device_and_optimisation_level(tiny_bundles: Path) -> None:
    with pytest.raises(BundleError, match="device must be cpu or cuda"):
        resolve_providers("tpu")
    with pytest.raises(BundleError, match="graph_optimization must be one of"):
        load_model("m", tiny_bundles / "tiny-textcnn", graph_optimization="max")


def test_intra_op_spinning_is_off_in_the_server_and_on_by_default_elsewhere(tiny_bundles: Path) -> None:
    from kdserve.serve.config import Settings
    from kdserve.serve.service import Service

    key = "session.intra_op.allow_spinning"
    off = load_model("m", tiny_bundles / "tiny-textcnn", intra_op_spinning=False)
    assert off.model.session.get_session_options().get_session_config_entry(key) == "0"
    default = load_model("m", tiny_bundles / "tiny-textcnn")
    with pytest.raises(Exception, match="does not have configuration"):  # ONNX Runtime's default: spinning
        default.model.session.get_session_options().get_session_config_entry(key)
    settings = Settings(bundles=tiny_bundles, models=["tiny-textcnn"])
    assert settings.intra_op_spinning is False
    for spinning, expected in ((False, "0"), (True, None)):
        service = Service(settings.model_copy(update={"intra_op_spinning": spinning}))
        options = service._load(
            "tiny-textcnn", tiny_bundles / "tiny-textcnn", False
        ).model.session.get_session_options()
        if expected is None:
            with pytest.raises(Exception, match="does not have configuration"):
                options.get_session_config_entry(key)
        else:
            assert options.get_session_config_entry(key) == expected


def test_auto_parallelism_runs_bilstm_batches_side_by_side(tiny_bundles: Path) -> None:
    cores = min(cpu_cores(), MAX_AUTO_WORKERS)
    assert parallelism_for("bilstm") == (1, cores)
    assert parallelism_for("bilstm", 3) == (3, 1)  # explicit threads: no extra workers unless asked
    assert parallelism_for("bilstm", 0, 2) == (1, 2) and parallelism_for("bilstm", 2, 3) == (2, 3)
    assert parallelism_for("bilstm", device="cuda") == (0, 1)
    assert parallelism_for("textcnn") == (0, 1) and parallelism_for("teacher", 0, 2) == (0, 2)
    # the sessions get it: ONNX Runtime reports the number it was given
    bilstm = load_model("b", tiny_bundles / "tiny-bilstm")
    textcnn = load_model("t", tiny_bundles / "tiny-textcnn")
    assert bilstm.intra_op_threads == 1 == bilstm.model.session.get_session_options().intra_op_num_threads
    assert bilstm.workers == cores
    assert textcnn.intra_op_threads == 0 == textcnn.model.session.get_session_options().intra_op_num_threads
    assert textcnn.workers == 1
    assert load_model("b", tiny_bundles / "tiny-bilstm", intra_op_threads=2).intra_op_threads == 2
