"""The smaller findings of issue 23: A/B weights that overflow, V2 versioned paths and a string
``binary_data_output``, a UTF-8 admin token, a folder without a manifest, access-log redaction."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import error_of
from tests.serve.conftest import ready_client, real_server


def test_ab_weights_whose_sum_overflows_split_evenly() -> None:
    from kdserve.serve.routing_config import ModelInfo, build_state

    models = {n: ModelInfo(n, "student", ["neg", "pos"]) for n in ("a", "b")}
    state = build_state(models, {"routes": {"exp": {"policy": "ab", "variants": {"a": 1e308, "b": 1e308}}}})
    assert state.routes["exp"].cumulative == (0.5, 1.0)


def test_v2_versioned_paths_and_boolean_parameters(tiny_bundles: Path) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]}
    with ready_client(tiny_bundles, models=["tiny-textcnn"]) as client:
        r = client.post("/v2/models/tiny-textcnn/versions/1/infer", json=body)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert client.get("/v2/models/tiny-textcnn/versions/1").json()["versions"] == ["1"]
        assert client.get("/v2/models/tiny-textcnn/versions/1/ready").json() == {"name": "tiny-textcnn", "ready": True}
        r = client.post("/v2/models/tiny-textcnn/versions/2/infer", json=body)
        assert error_of(r) == (404, "not_found", "model 'tiny-textcnn' has no version '2' (versions: 1)")
        r = client.post("/v2/models/tiny-textcnn/infer", json={**body, "parameters": {"binary_data_output": "false"}})
        assert error_of(r) == (
            422,
            "invalid_request",
            "parameter 'binary_data_output' must be true or false (a JSON boolean), got 'false'",
        )
        r = client.post("/v2/models/tiny-textcnn/infer", json={**body, "parameters": {"binary_data_output": False}})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"


def test_a_utf8_admin_token_matches(tiny_bundles: Path) -> None:
    """Over a real server: the TestClient re-encodes header values as UTF-8 whatever was sent."""
    token = "clé-sécrète"
    with real_server(tiny_bundles, models=["tiny-textcnn"], admin_token=token) as url:
        for encoding, status in (("utf-8", 200), ("latin-1", 403)):
            auth = ("Bearer " + token).encode(encoding)
            r = httpx.put(url + "/admin/routing", json={"routes": {}}, headers={"Authorization": auth}, timeout=10)  # type: ignore[dict-item]
            assert r.status_code == status, (encoding, r.text)


def test_a_folder_without_a_manifest_is_logged(
    tiny_bundles: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kdserve.serve.runtime import discover

    shutil.copytree(tiny_bundles / "tiny-textcnn", tmp_path / "ok")
    (tmp_path / "half-copied").mkdir()
    with caplog.at_level(logging.WARNING, "kdserve.serve.runtime"):
        assert list(discover(tmp_path)) == ["ok"]
    assert caplog.messages == [f"skipping {tmp_path / 'half-copied'}: no manifest.json, not a bundle"]


def test_access_log_redacts_queries_and_cuts_long_paths() -> None:
    from kdserve.serve.cli import redact_target

    assert redact_target("/classify?token=s3cret") == "/classify?<query redacted>"
    assert redact_target("/" + "x" * 300) == "/" + "x" * 255 + "...(301 chars)"
    assert redact_target("/health") == "/health"
