"""Defect 4 of issue 23: a bundle whose labels disagree with its graph's output width is refused at
load and at hot reload (naming the file), and the model bytes ONNX Runtime gets are the bytes hashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import ready_client
from tests.serve.test_api import error_of

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def three_labels(folder: Path) -> Path:
    """Rewrite a two-label bundle's manifest and labels.json to three labels (checksums consistent):
    only the graph, still two columns wide, disagrees."""
    from kdserve.core.bundle import LABELS_FILE, read_manifest, write_manifest

    manifest = read_manifest(folder)
    manifest.labels = ["negative", "neutral", "positive"]
    (folder / LABELS_FILE).write_text(json.dumps(manifest.labels))
    write_manifest(folder, manifest)
    return folder


def test_output_width_must_match_the_labels(tiny_bundles: Path, tmp_path: Path) -> None:
    from kdserve.core.bundle import BundleError, BundleModel, verify_bundle

    folder = three_labels(shutil.copytree(tiny_bundles / "tiny-textcnn", tmp_path / "wide"))
    verify_bundle(folder)  # every checksum matches: only the graph tells
    with pytest.raises(BundleError) as caught:
        BundleModel(folder)
    assert str(caught.value) == (
        f"{folder / 'model.onnx'}: output 'logits' has 2 columns but the manifest lists 3 labels "
        f"(negative, neutral, positive)"
    )


def test_the_loaded_bytes_are_the_verified_bytes(tiny_bundles: Path, tmp_path: Path) -> None:
    """verify=False (the server's start-up, after verifying every bundle moments before) still hashes
    the model bytes it hands to ONNX Runtime: a file swapped in between is refused."""
    from kdserve.core.bundle import BundleError, BundleModel

    folder = shutil.copytree(tiny_bundles / "tiny-textcnn", tmp_path / "swapped")
    shutil.copy(tiny_bundles / "tiny-bilstm" / "model.onnx", folder / "model.onnx")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 does not match the manifest"):
        BundleModel(folder, verify=False)


def test_reload_refuses_a_width_mismatch_and_keeps_serving(tiny_bundles: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    shutil.copytree(tiny_bundles / "tiny-textcnn", root / "tiny-textcnn")
    with ready_client(root, admin_token=TOKEN) as client:
        before = client.get("/models/tiny-textcnn").json()["checksum"]
        three_labels(root / "tiny-textcnn")
        status, code, message = error_of(client.post("/admin/reload", headers=AUTH))
        assert (status, code) == (409, "reload_failed")
        assert f"{root / 'tiny-textcnn' / 'model.onnx'}: output 'logits' has 2 columns" in message
        r = client.post("/classify", json={"text": "great"})
        assert r.status_code == 200 and r.json()["results"][0]["checksum"] == before
        assert client.get("/ready").status_code == 200


def test_start_up_refuses_a_width_mismatch(tiny_bundles: Path, tmp_path: Path) -> None:
    from kdserve.core.bundle import BundleError
    from kdserve.serve.config import load_settings
    from kdserve.serve.service import Service

    root = tmp_path / "bundles"
    three_labels(shutil.copytree(tiny_bundles / "tiny-textcnn", root / "tiny-textcnn"))
    service = Service(load_settings(bundles=root, warmup_batch_sizes=[1], warmup_lengths=[8]))
    import asyncio

    with pytest.raises(BundleError, match="output 'logits' has 2 columns"):
        asyncio.run(service.start())
    assert service.status == "failed" and service.model_status == {"tiny-textcnn": "failed"}
