"""Moderation decisions under live policies, over real tiny bundles with policy blocks: calibrated
scores from the batcher, categories/flagged in /classify, the policy file, named policies, the
live swap through PUT /admin/policies, the flag counters, and the boundary cascade."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO
from tests.serve.conftest import ready_client
from tests.serve.moderation_bundles import (
    MULTI,
    PLAIN,
    SINGLE,
    TEACHER,
    TEXTS,
    build_moderation_bundles,
    expected_scores,
    write_policy_file,
)

ADMIN = {"Authorization": "Bearer s3cret"}
POLICY = {
    "policies": {
        "default": {SINGLE: {"thresholds": {"negative": 0.55}}},
        "strict": {SINGLE: {"thresholds": {"negative": 0.2}}, MULTI: {"thresholds": {"negative": 0.1}}},
        "lenient": {SINGLE: {"thresholds": {"negative": 0.95}}},
    }
}


@pytest.fixture(scope="module")
def mod_bundles(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_moderation_bundles(tiny_bundles, tmp_path_factory.mktemp("mod") / "bundles")


def classify(client: Any, **body: Any) -> Any:
    response = client.post("/classify", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def decided(scores: np.ndarray, column: int, threshold: float) -> list[bool]:
    return [bool(s >= threshold) for s in scores[:, column]]


def test_served_scores_are_calibrated_and_multi_label_is_sigmoid(mod_bundles: Path) -> None:
    single, multi = (expected_scores(mod_bundles, m, TEXTS) for m in (SINGLE, MULTI))
    assert np.allclose(single.sum(axis=1), 1) and not np.allclose(multi.sum(axis=1), 1)  # sigmoids: no shared mass
    with ready_client(mod_bundles) as client:
        for model, expected in ((SINGLE, single), (MULTI, multi)):
            out = classify(client, texts=TEXTS, model=model, all_scores=True)
            got = np.array(
                [
                    [dict((s["label"], s["score"]) for s in r["scores"])[k] for k in ("negative", "positive")]
                    for r in out["results"]
                ]
            )
            np.testing.assert_allclose(got, expected, atol=1e-6)
        # a multi-label answer carries every category's score without asking
        plain = classify(client, texts=TEXTS[:2], model=MULTI)
        assert all(len(r["scores"]) == 2 for r in plain["results"])
        assert classify(client, text=TEXTS[0], model=SINGLE)["results"][0]["scores"] is None


def test_decisions_follow_the_default_policy(mod_bundles: Path) -> None:
    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    multi = expected_scores(mod_bundles, MULTI, TEXTS)
    with ready_client(mod_bundles) as client:
        out = classify(client, texts=TEXTS, model=SINGLE)["results"]
        assert [r["categories"] for r in out] == [{"negative": f} for f in decided(single, 0, 0.6)]
        assert [r["flagged"] for r in out] == decided(single, 0, 0.6)
        assert {r["policy"] for r in out} == {"default"}
        assert any(r["flagged"] for r in out) and not all(r["flagged"] for r in out)
        out = classify(client, texts=TEXTS, model=MULTI)["results"]
        neg, pos = decided(multi, 0, 0.5), decided(multi, 1, 0.7)
        assert [r["categories"] for r in out] == [{"negative": a, "positive": b} for a, b in zip(neg, pos)]
        assert [r["flagged"] for r in out] == [a or b for a, b in zip(neg, pos)]
        # a bundle without a policy answers as before: no decision
        plain = classify(client, text=TEXTS[0], model=PLAIN)["results"][0]
        assert (plain["categories"], plain["flagged"], plain["policy"]) == (None, None, None)
        # the flag counters, by model, category and policy
        metrics = client.get("/metrics").text
        flagged = sum(decided(single, 0, 0.6))
        assert f'kdserve_policy_flags_total{{category="negative",model="{SINGLE}",policy="default"}} {flagged}.0' in (
            metrics
        )
        assert f'kdserve_policy_decisions_total{{model="{SINGLE}",policy="default"}} 5.0' in metrics


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_policy_file_named_policies_and_unknown_policy(mod_bundles: Path, tmp_path: Path, suffix: str) -> None:
    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    multi = expected_scores(mod_bundles, MULTI, TEXTS)
    path = write_policy_file(tmp_path / f"policies{suffix}", POLICY)
    with ready_client(mod_bundles, policy_file=path) as client:
        out = classify(client, texts=TEXTS, model=SINGLE)["results"]  # the file's default: 0.55
        assert [r["flagged"] for r in out] == decided(single, 0, 0.55)
        for name, threshold in (("strict", 0.2), ("lenient", 0.95)):
            out = classify(client, texts=TEXTS, model=SINGLE, policy=name)["results"]
            assert [r["flagged"] for r in out] == decided(single, 0, threshold)
            assert {r["policy"] for r in out} == {name}
        # strict lowers MULTI's negative threshold and keeps the manifest's positive one (merged)
        out = classify(client, texts=TEXTS, model=MULTI, policy="strict")["results"]
        assert [r["categories"] for r in out] == [
            {"negative": a, "positive": b} for a, b in zip(decided(multi, 0, 0.1), decided(multi, 1, 0.7))
        ]
        # lenient does not list MULTI: its default decides, and the answer says so
        out = classify(client, texts=TEXTS[:1], model=MULTI, policy="lenient")["results"]
        assert out[0]["policy"] == "default"
        bad = client.post("/classify", json={"text": "x", "policy": "strictest"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_policy"
        assert "strict, lenient" not in bad.json()["error"]["message"]  # names sorted
        assert "default, lenient, strict" in bad.json()["error"]["message"]


BAD_CONFIGS = [
    ({"policies": {"strict": {SINGLE: {"thresholds": {"hate": 0.5}}}}}, "unknown category 'hate'"),
    ({"policies": {"strict": {SINGLE: {"thresholds": {"negative": 1.5}}}}}, "must be a number within [0, 1], got 1.5"),
    ({"policies": {"strict": {SINGLE: {"thresholds": {"negative": True}}}}}, "got True"),
    ({"policies": {"strict": {"nope": {}}}}, "unknown model 'nope'"),
    ({"policies": {"strict": {SINGLE: {"thresholds": {"positive": 0.5}}}}}, "'positive' is a benign label"),
    ({"policies": {"strict": {SINGLE: {"treshold": {}}}}}, "unknown field(s) 'treshold'"),
    ({"policies": {"bad name!": {}}}, "policy name 'bad name!'"),
    ({"policy": {}}, "unknown field(s) 'policy'"),
    ({"policies": {"strict": {SINGLE: {"benign_labels": ["nope"]}}}}, "benign label 'nope'"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_invalid_policy_config_is_refused_whole(mod_bundles: Path, config: dict, message: str) -> None:
    from kdserve.core.bundle import read_manifest
    from kdserve.serve.policies import PolicyError, PolicyStore

    manifests = {name: read_manifest(mod_bundles / name) for name in (SINGLE, MULTI, TEACHER, PLAIN)}
    store = PolicyStore(manifests, POLICY)
    before = store.describe()
    with pytest.raises(PolicyError) as info:
        store.replace(config)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert store.describe() == before


def test_bad_policy_file_exits_2_with_one_line(mod_bundles: Path, tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.json", {"policies": {"strict": {SINGLE: {"thresholds": {"x": 0.5}}}}})
    proc = subprocess.run(
        [sys.executable, "-m", "kdserve", "serve", "--bundles", str(mod_bundles), "--policy-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "unknown category 'x'" in lines[0], proc.stderr


def test_admin_swaps_policies_live_and_keeps_them_on_error(mod_bundles: Path) -> None:
    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    with ready_client(mod_bundles, admin_token="s3cret") as client:
        assert client.put("/admin/policies", json=POLICY).status_code == 401
        before = classify(client, texts=TEXTS, model=SINGLE)["results"]
        assert [r["flagged"] for r in before] == decided(single, 0, 0.6)
        swapped = client.put("/admin/policies", json=POLICY, headers=ADMIN)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["policies"]["strict"][SINGLE] == {
            "thresholds": {"negative": 0.2},
            "benign_labels": ["positive"],
        }
        after = classify(client, texts=TEXTS, model=SINGLE)["results"]
        assert [r["flagged"] for r in after] == decided(single, 0, 0.55)
        bad = client.put(
            "/admin/policies", json={"policies": {"strict": {SINGLE: {"thresholds": {"negative": -1}}}}}, headers=ADMIN
        )
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_policy"
        assert client.get("/admin/policies", headers=ADMIN).json() == swapped.json()
        assert client.put("/admin/policies", content=b"[1]", headers=ADMIN).status_code == 422
        strict = classify(client, texts=TEXTS, model=SINGLE, policy="strict")["results"]
        assert [r["flagged"] for r in strict] == decided(single, 0, 0.2)
        # back to the manifests' defaults: named policies are gone
        assert client.put("/admin/policies", json={}, headers=ADMIN).status_code == 200
        gone = client.post("/classify", json={"texts": TEXTS, "model": SINGLE, "policy": "strict"})
        assert gone.status_code == 422 and gone.json()["error"]["code"] == "unknown_policy"


# ---------------------------------------------------------------- the boundary cascade


def cascade_config(**route: Any) -> dict[str, Any]:
    return {"routes": {"c": {"policy": "cascade", "student": SINGLE, "teacher": TEACHER, **route}}}


def test_boundary_cascade_escalates_texts_near_a_category_threshold(mod_bundles: Path, tmp_path: Path) -> None:
    import json

    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    teacher = expected_scores(mod_bundles, TEACHER, TEXTS)
    band = 0.15
    near = np.abs(single[:, 0] - 0.6) <= band
    assert 0 < near.sum() < len(TEXTS), single  # the fixed texts exercise both sides
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps(cascade_config(escalate="boundary", band=band)))
    with ready_client(mod_bundles, routing_file=routing, admin_token="s3cret") as client:
        out = classify(client, texts=TEXTS, model="c")["results"]
        assert [r["escalated"] for r in out] == near.tolist()
        assert [r["model"] for r in out] == [TEACHER if n else SINGLE for n in near]
        # each text is decided by the policy of the model that answered it
        expected = [teacher[i, 0] >= 0.5 if n else single[i, 0] >= 0.6 for i, n in enumerate(near)]
        assert [r["flagged"] for r in out] == expected
        # a named policy moves the band with its threshold (strict: 0.2)
        client.put("/admin/policies", json=POLICY, headers=ADMIN)
        strict = classify(client, texts=TEXTS, model="c", policy="strict")["results"]
        assert [r["escalated"] for r in strict] == (np.abs(single[:, 0] - 0.2) <= band).tolist()
        # top-score rule and boundary rule together: either escalates
        both = cascade_config(escalate="boundary", band=band, threshold=0.99)
        assert client.put("/admin/routing", json=both, headers=ADMIN).status_code == 200
        out = classify(client, texts=TEXTS, model="c")["results"]
        assert [r["escalated"] for r in out] == (near | (single.max(axis=1) < 0.99)).tolist()


def test_boundary_cascade_validation() -> None:
    from kdserve.serve.routing import ModelInfo, Router, RoutingError

    models = {
        SINGLE: ModelInfo(SINGLE, "student", ["negative", "positive"]),
        TEACHER: ModelInfo(TEACHER, "teacher", ["negative", "positive"]),
    }
    Router(models, cascade_config(escalate="boundary"))  # band defaults to 0.1; no top-score threshold needed
    for route, message in (
        ({"escalate": "boundary", "band": 0.7}, "field 'band': must be within [0, 0.5], got 0.7"),
        ({"band": 0.1, "threshold": 0.5}, 'field \'band\': only applies with "escalate": "boundary"'),
        ({"escalate": "edge"}, "field 'escalate'"),
        ({}, "field 'threshold': required"),
    ):
        with pytest.raises(RoutingError, match=message.replace("[", r"\[").replace("(", r"\(")):
            Router(models, cascade_config(**route))


def test_boundary_cascade_in_the_router_uses_the_live_thresholds(mod_bundles: Path) -> None:
    from kdserve.core.bundle import BundleModel
    from kdserve.serve.routing import ModelInfo, Router, Scores
    from kdserve.serve.scores import Reading

    bundles = {m: BundleModel(mod_bundles / m, intra_op_threads=1) for m in (SINGLE, TEACHER)}
    models = {m: ModelInfo(m, b.manifest.role, list(b.labels)) for m, b in bundles.items()}
    calls: list[tuple[str, list[str]]] = []

    async def infer(model: str, texts: list[str], reading: Reading) -> Scores:
        calls.append((model, texts))
        b = bundles[model]
        logits = b.predict(texts)
        return Scores(model, b.manifest.checksum, list(b.labels), b.probabilities(logits).astype(np.float32), logits)

    router = Router(models, cascade_config(escalate="boundary", band=0.05))
    scores = expected_scores(mod_bundles, SINGLE, TEXTS)
    cut = float(scores[2, 0])  # a threshold exactly at text 2's score: only it (and any within 0.05) escalates
    # thresholds only under the policy "strict": the request's policy travels with it to the cascade
    router.category_thresholds = lambda model, policy: (
        np.array([cut, np.nan]) if model == SINGLE and policy == "strict" else None
    )
    answer = asyncio.run(router.classify(TEXTS, "c", None, infer, Reading(policy="strict")))
    expected = np.flatnonzero(np.abs(scores[:, 0] - cut) <= 0.05).tolist()
    assert 2 in expected and [i for i, a in enumerate(answer.answers) if a.escalated] == expected
    assert calls == [(SINGLE, TEXTS), (TEACHER, [TEXTS[i] for i in expected])]
    # no policy named (no thresholds): only the top-score rule, which escalates none here
    assert not any(a.escalated for a in asyncio.run(router.classify(TEXTS, "c", None, infer)).answers)


@pytest.mark.slow
def test_policy_swaps_during_a_load_run_at_half_capacity(mod_bundles: Path) -> None:
    """Open loop at half the measured capacity while PUT /admin/policies swaps twice a second: no
    request fails, and once the swaps stop the answers follow the last policy's thresholds."""
    import json
    import threading
    import time

    import httpx

    from kdserve.bench.http_client import Target
    from kdserve.bench.loadgen import closed_loop, open_loop, run_async
    from tests.serve.conftest import real_server

    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    configs = [{"policies": {"default": {SINGLE: {"thresholds": {"negative": t}}}}} for t in (0.2, 0.95)]
    with real_server(mod_bundles, admin_token="s3cret") as url:
        target = Target.parse(url, "/classify")
        bodies = [
            target.request(json.dumps({"texts": TEXTS[: 1 + i % 5], "model": SINGLE}).encode()) for i in range(50)
        ]
        capacity = run_async(lambda: closed_loop(target, bodies, concurrency=16, duration_s=2.0, warmup_s=0.5))
        rps = len(capacity.records) / ((capacity.end - capacity.start) / 1e9)
        stop, swaps, swap_errors = threading.Event(), [], []

        def swapper() -> None:
            while not stop.is_set():
                r = httpx.put(url + "/admin/policies", json=configs[len(swaps) % 2], headers=ADMIN, timeout=10)
                (swaps if r.status_code == 200 else swap_errors).append(r.status_code)
                time.sleep(0.5)

        thread = threading.Thread(target=swapper)
        thread.start()
        try:
            run = run_async(lambda: open_loop(target, bodies, rps / 2, 4.0, connections=16, timeout_s=10))
        finally:
            stop.set()
            thread.join()
        statuses = [r.status for r in run.records]
        print(
            f"\npolicy swap under load: capacity {rps:.0f} req/s, ran {rps / 2:.0f} req/s x 4 s, "
            f"{len(statuses)} requests, {len(swaps)} swaps"
        )
        assert len(swaps) >= 4 and not swap_errors
        assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
        last = configs[(len(swaps) - 1) % 2]["policies"]["default"][SINGLE]["thresholds"]["negative"]
        out = httpx.post(url + "/classify", json={"texts": TEXTS, "model": SINGLE}, timeout=10).json()["results"]
        assert [r["flagged"] for r in out] == decided(single, 0, last)
