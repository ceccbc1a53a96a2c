"""``POST /v1/moderations`` through the official ``openai`` SDK against a real ``kdserve serve``
process with an API key, over tiny bundles with policies; its errors; schemathesis over the route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.serve.conftest import free_port, ready_client, wait_process_ready
from tests.serve.moderation_bundles import MULTI, PLAIN, SINGLE, TEXTS, build_moderation_bundles, expected_scores

openai = pytest.importorskip("openai")

KEY = "sk-test-kdserve"


@pytest.fixture(scope="module")
def mod_bundles(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_moderation_bundles(tiny_bundles, tmp_path_factory.mktemp("mod") / "bundles")


@pytest.fixture(scope="module")
def server(mod_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m kdserve serve`` on a free loopback port with KDSERVE_API_KEY set; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("log") / "server.log"
    env = {**os.environ, "KDSERVE_API_KEY": KEY}
    args = ["--bundles", str(mod_bundles), "--port", str(port), "--warmup-batch-sizes", "1", "--warmup-lengths", "8"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kdserve", "serve", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_process_ready(proc, url, log.read_text)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_sdk_single_list_and_named_model(server: str, mod_bundles: Path) -> None:
    sdk = client(server)
    one = sdk.moderations.create(input=TEXTS[1])  # the default route: the first student, mod-multi
    assert one.id.startswith("modr-") and one.model == MULTI and len(one.results) == 1
    multi = expected_scores(mod_bundles, MULTI, TEXTS)
    result = one.results[0]
    scores = result.category_scores.to_dict()
    assert set(scores) == {"negative", "positive"}
    np.testing.assert_allclose([scores["negative"], scores["positive"]], multi[1], atol=1e-6)
    categories = result.categories.to_dict()
    assert categories == {"negative": bool(multi[1, 0] >= 0.5), "positive": bool(multi[1, 1] >= 0.7)}
    assert result.flagged == any(categories.values())
    assert result.category_applied_input_types.to_dict() == {"negative": ["text"], "positive": ["text"]}

    many = sdk.moderations.create(input=TEXTS, model=SINGLE)
    single = expected_scores(mod_bundles, SINGLE, TEXTS)
    assert many.model == SINGLE and len(many.results) == len(TEXTS)
    assert [r.flagged for r in many.results] == [bool(s >= 0.6) for s in single[:, 0]]
    got = [r.category_scores.to_dict() for r in many.results]
    assert all(set(g) == {"negative"} for g in got)  # the benign "positive" is no category
    np.testing.assert_allclose([g["negative"] for g in got], single[:, 0], atol=1e-6)
    assert any(r.flagged for r in many.results) and not all(r.flagged for r in many.results)
    # kdserve's extension through the SDK's extra_body: an unknown named policy
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk.moderations.create(input="x", model=SINGLE, extra_body={"policy": "strict"})
    assert info.value.body["code"] == "unknown_policy"


def test_sdk_errors(server: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").moderations.create(input="hello")
    sdk = client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.moderations.create(input="hello", model="omni-moderation-latest")
    assert missing.value.body["code"] == "unknown_model"
    for bad in ("", [], ["fine", "  "]):
        with pytest.raises(openai.UnprocessableEntityError) as info:
            sdk.moderations.create(input=bad)
        assert info.value.body["code"] == "invalid_request" and "input" in info.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as no_policy:
        sdk.moderations.create(input="hello", model=PLAIN)
    assert no_policy.value.body["code"] == "no_policy" and PLAIN in no_policy.value.body["message"]


def test_probes_stay_open_with_a_key(server: str) -> None:
    import httpx

    for path in ("/health", "/ready", "/metrics", "/v2/health/ready"):
        assert httpx.get(server + path, timeout=10).status_code == 200, path
    refused = httpx.post(server + "/classify", json={"text": "hi"}, timeout=10)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_route_in_the_openapi_schema_and_fuzzed(mod_bundles: Path, tmp_path: Path) -> None:
    """The route, its fields and errors are in the schema; schemathesis: no 5xx, answers conform.
    The fuzzer steers positive cases' ``policy`` to "default" or "strict", so the server has both."""
    pytest.importorskip("schemathesis")
    import schemathesis

    from tests.reliability.test_fuzz import FuzzReport, fuzz_operation
    from tests.serve.conftest import real_server

    with ready_client(mod_bundles) as tc:
        schema = tc.get("/openapi.json").json()
    operation = schema["paths"]["/v1/moderations"]["post"]
    assert {"200", "401", "404", "422"} <= set(operation["responses"])
    props = schema["components"]["schemas"]["ModerationRequest"]["properties"]
    assert {"input", "model", "policy"} == set(props)
    assert "policy" in schema["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert {"categories", "flagged", "policy"} <= set(schema["components"]["schemas"]["TextResult"]["properties"])

    policies = tmp_path / "policies.json"
    strict = {SINGLE: {"negative": 0.3}, MULTI: {"negative": 0.3, "positive": 0.5}}
    policies.write_text(json.dumps({"policies": {"strict": {m: {"thresholds": t} for m, t in strict.items()}}}))
    with real_server(mod_bundles, policy_file=policies) as url:
        loaded = schemathesis.openapi.from_url(url + "/openapi.json")
        report = FuzzReport()
        for result in loaded.get_all_operations():
            op = result.ok()
            if op.path != "/v1/moderations":
                continue
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                fuzz_operation(op, mode, 40, True, [], report)
    print(report.as_dict())
    assert report.total >= 60 and not report.failures, "\n\n".join(report.failures[:3])
    assert not [s for s in report.statuses if s >= 500] and report.statuses[200] > 0
