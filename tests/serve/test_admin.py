"""Admin routes: token auth, hot reload (success and a corrupted bundle), live routing changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import ready_client
from tests.serve.test_api import error_of

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def bundles(tiny_bundles: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bundles"
    for name in ("tiny-textcnn", "tiny-teacher"):
        shutil.copytree(tiny_bundles / name, root / name)
    return root


def test_admin_auth(bundles: Path) -> None:
    with ready_client(bundles, admin_token=TOKEN) as client:
        r = client.post("/admin/reload")
        assert error_of(r)[:2] == (401, "unauthorized") and r.headers["www-authenticate"] == "Bearer"
        assert error_of(client.post("/admin/reload", headers={"Authorization": "Basic abc"}))[:2] == (
            401,
            "unauthorized",
        )
        assert error_of(client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}))[:2] == (
            403,
            "forbidden",
        )
        # the token is checked before the body is read
        r = client.put("/admin/routing", content=b"{nope", headers={"Authorization": "Bearer wrong"})
        assert error_of(r)[:2] == (403, "forbidden")
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
    with ready_client(bundles) as client:  # no token: the routes do not exist
        assert error_of(client.post("/admin/reload", headers=AUTH))[:2] == (404, "not_found")
        assert error_of(client.put("/admin/routing", json={}, headers=AUTH))[:2] == (404, "not_found")


def test_reload_swaps_in_a_new_version(bundles: Path) -> None:
    from tests.bundles import build_tiny_bundle

    with ready_client(bundles, admin_token=TOKEN) as client:
        before = client.post("/classify", json={"text": "great", "model": "tiny-textcnn"}).json()["results"][0][
            "checksum"
        ]
        # a retrained model, written in place
        shutil.rmtree(bundles / "tiny-textcnn")
        build_tiny_bundle(bundles / "tiny-textcnn", name="tiny-textcnn", kind="textcnn", seed=5, train_steps=30)
        r = client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        change = r.json()["reloaded"]["tiny-textcnn"]
        assert change["old"] == before and change["new"] != before
        after = client.post("/classify", json={"text": "great", "model": "tiny-textcnn"}).json()["results"][0][
            "checksum"
        ]
        assert after == change["new"]
        assert client.get("/models/tiny-textcnn").json()["checksum"] == after
        assert client.get("/ready").json()["models"]["tiny-textcnn"] == after
        assert 'kdserve_reloads_total{status="ok"} 1.0' in client.get("/metrics").text


def test_failed_reload_keeps_the_old_version_serving(bundles: Path) -> None:
    with ready_client(bundles, admin_token=TOKEN) as client:
        before = client.get("/models/tiny-teacher").json()["checksum"]
        labels = bundles / "tiny-teacher" / "labels.json"
        labels.write_text(labels.read_text().replace("negative", "NEGATIVE"))
        status, code, message = error_of(client.post("/admin/reload", headers=AUTH))
        assert (status, code) == (409, "reload_failed")
        assert message == (
            f"reload failed, still serving the previous bundles: {labels}: sha256 does not match "
            f"the manifest (corrupted or modified)"
        )
        r = client.post("/classify", json={"text": "great", "model": "teacher"})
        assert r.status_code == 200 and r.json()["results"][0]["checksum"] == before
        assert client.get("/ready").status_code == 200
        assert 'kdserve_reloads_total{status="failed"} 1.0' in client.get("/metrics").text


def test_reload_refused_when_a_route_loses_its_model(bundles: Path) -> None:
    routing = {"routes": {"exp": {"policy": "ab", "variants": {"tiny-textcnn": 0.5, "tiny-teacher": 0.5}}}}
    with ready_client(bundles, admin_token=TOKEN) as client:
        assert client.put("/admin/routing", json=routing, headers=AUTH).status_code == 200
        shutil.rmtree(bundles / "tiny-textcnn")
        status, code, message = error_of(client.post("/admin/reload", headers=AUTH))
        assert (status, code) == (409, "reload_failed") and "tiny-textcnn" in message
        assert client.post("/classify", json={"text": "great", "model": "exp", "routing_key": "u1"}).status_code == 200


def test_put_routing_changes_routes_live(bundles: Path) -> None:
    routing: dict[str, Any] = {
        "routes": {"exp": {"policy": "ab", "variants": {"tiny-textcnn": 1.0, "tiny-teacher": 1e-9}}}
    }
    with ready_client(bundles, admin_token=TOKEN) as client:
        assert error_of(client.post("/classify", json={"text": "great", "model": "exp"}))[:2] == (404, "unknown_model")
        r = client.put("/admin/routing", content=json.dumps(routing), headers=AUTH)
        assert r.status_code == 200 and "exp" in r.json()["routes"]
        body = client.post("/classify", json={"text": "great", "model": "exp", "routing_key": "user-1"}).json()
        assert (
            body["route"] == "exp"
            and body["variant"] == "tiny-textcnn"
            and body["results"][0]["model"] == "tiny-textcnn"
        )
        bad = {"routes": {"exp": {"policy": "ab", "variants": {"missing-model": 1.0}}}}
        status, code, message = error_of(client.put("/admin/routing", json=bad, headers=AUTH))
        assert (status, code) == (422, "invalid_routing") and "missing-model" in message
        assert error_of(client.put("/admin/routing", content=b"[1]", headers=AUTH))[:2] == (422, "invalid_request")
        # the bad config changed nothing
        assert (
            client.post("/classify", json={"text": "great", "model": "exp", "routing_key": "u"}).json()["variant"]
            == "tiny-textcnn"
        )


def test_reload_does_not_drop_requests_in_flight(bundles: Path) -> None:
    import threading
    import time

    with ready_client(bundles, admin_token=TOKEN, max_wait_ms=500, adaptive_wait=False) as client:
        service = client.app.state.service
        old = service.slots["tiny-textcnn"]
        answers: list[Any] = []
        lock = threading.Lock()

        def ask(i: int) -> None:
            r = client.post("/classify", json={"text": f"great {i}", "model": "tiny-textcnn"})
            with lock:
                answers.append(r)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while old.batcher.queue_depth < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert old.batcher.queue_depth == 4  # all queued on the old version when the reload starts
        r = client.post("/admin/reload", headers=AUTH)
        for t in threads:
            t.join(10)
        assert r.status_code == 200
        assert [a.status_code for a in answers] == [200] * 4
        assert service.slots["tiny-textcnn"] is not old and old.batcher.batches >= 1
        assert client.post("/classify", json={"text": "great"}).status_code == 200
