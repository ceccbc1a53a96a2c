"""The optional API key: off by default; when set, every inference protocol (the direct /classify path
included) needs it, probes, metrics, docs and /admin (own token) do not; 401s are counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serve.conftest import make_settings, ready_client

KEY = "k3y-for-tests"
GOOD = {"Authorization": f"Bearer {KEY}"}
PROTECTED = [
    ("POST", "/classify", {"text": "the movie was great ."}),
    ("POST", "/", {"inputs": "the movie was great ."}),
    ("POST", "/models/tiny-textcnn", {"inputs": "the movie was great ."}),
    (
        "POST",
        "/v2/models/tiny-textcnn/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]},
    ),
    ("POST", "/v1/moderations", {"input": "great", "model": "tiny-textcnn"}),
    ("GET", "/models", None),
    ("GET", "/routing", None),
    ("GET", "/v2/models/tiny-textcnn", None),
]
OPEN = ["/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"]


def test_off_by_default_and_empty_env_is_off(tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_settings(tiny_bundles).api_key is None
    monkeypatch.setenv("KDSERVE_API_KEY", "  ")
    assert make_settings(tiny_bundles).api_key is None
    monkeypatch.setenv("KDSERVE_API_KEY", KEY)
    assert make_settings(tiny_bundles).api_key.get_secret_value() == KEY
    with ready_client(tiny_bundles, api_key=None) as client:
        assert client.post("/classify", json={"text": "great"}).status_code == 200


def test_every_inference_route_needs_the_key(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, api_key=KEY, admin_token="adm1n") as client:
        for method, path, body in PROTECTED:
            for headers, why in (({}, "needs an API key"), ({"Authorization": "Bearer nope"}, "wrong API key")):
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                error = response.json()
                # the V2 routes keep their own error shape
                message = error["error"] if path.startswith("/v2") else error["error"]["message"]
                assert why in message, (path, error)
            ok = client.request(method, path, json=body, headers=GOOD)
            # /v1/moderations on a policy-less bundle is a 422 no_policy: past the key check
            assert ok.status_code in (200, 422), (path, ok.text)
            assert ok.status_code == 200 or ok.json()["error"]["code"] == "no_policy"
        # other schemes and a bare "Bearer" are no key
        for value in (f"Basic {KEY}", "Bearer", f"bearer {KEY}x"):
            assert client.post("/classify", json={"text": "a"}, headers={"Authorization": value}).status_code == 401
        assert (
            client.post("/classify", json={"text": "a"}, headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        )
        for path in OPEN:
            assert client.get(path).status_code == 200, path
        # /admin answers to its own token, not to the API key
        assert client.get("/admin/policies", headers={"Authorization": "Bearer adm1n"}).status_code == 200
        assert client.get("/admin/policies", headers=GOOD).status_code == 403
        metrics = client.get("/metrics").text
        assert 'kdserve_http_requests_total{endpoint="/classify",method="POST",status="401"}' in metrics
