"""Schema-driven fuzzing with schemathesis against a real uvicorn on loopback.

Every operation of the server's OpenAPI schema, admin routes included (with the admin token),
gets generated requests, schema-valid (positive) and, where the schema can be violated,
schema-invalid (negative), in two configurations: admin token + a policy file, and the same with an
API key. Each response must be no 5xx, carry a status code the schema declares for that
operation, a declared content type, a body matching the declared schema (errors included);
negative data must be refused with a 4xx, and positive data accepted (2xx, or 401/403/404/409/429)
except for the refusals JSON Schema cannot express (``SEMANTIC``, counted apart). ``OPTIONS`` on
every path answers 405 with ``Allow`` listing exactly the methods the schema declares.

The default run sends about 100 cases (derandomized, so CI is reproducible); the slow group
sends >= 1,000 with fresh randomness (KDSERVE_FUZZ_EXAMPLES sets the examples per operation and
mode). Set KDSERVE_RELIABILITY_OUT to a folder to get the counts as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

from tests.serve.conftest import real_server  # noqa: E402

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.negative_data_rejection,
]
ADMIN_TOKEN, API_KEY = "fuzz-admin-token", "fuzz-api-key"
MODELS = ["tiny-bilstm", "tiny-teacher", "tiny-textcnn"]
POLICIES = ["default", "strict"]

#: schema-valid requests the server refuses for reasons JSON Schema cannot state (docs/RELIABILITY.md):
#: (status, error code, a piece of the message)
SEMANTIC = [
    (413, "text_too_long", ""),  # a text's token count (truncate=false)
    (413, "too_many_windows", ""),  # long_text=chunk: windows per text, from its token count
    (422, "invalid_request", "elements but shape"),  # V2: shape[0] equal to the element count
    (422, "invalid_routing", ""),  # the routes name models that must be loaded, with equal labels
    (422, "invalid_policy", ""),  # the policies name loaded models and their categories
]


def _semantic(response: Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    code, message = (error.get("code"), error.get("message")) if isinstance(error, dict) else (body.get("code"), error)
    return any(
        response.status_code == status and code == want and part in str(message) for status, want, part in SEMANTIC
    )


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)  # "METHOD /path mode" -> cases sent
    statuses: Counter[int] = field(default_factory=Counter)
    semantic: Counter[str] = field(default_factory=Counter)  # positive cases refused per SEMANTIC
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.total,
            "server_errors": sum(n for s, n in self.statuses.items() if s >= 500),
            "failures": len(self.failures),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "semantic_refusals": dict(sorted(self.semantic.items())),
            "per_operation": dict(sorted(self.cases.items())),
        }


def _steer(case: Any, positive: bool, n: int) -> None:
    """Point half the positive cases at real models, and every positive ``policy`` at a real policy:
    a random name is a 404/422 that never reaches the paths behind it."""
    if not positive:
        return
    if "name" in (case.path_parameters or {}) and n % 2:
        case.path_parameters["name"] = MODELS[n // 2 % len(MODELS)]
    if "version" in (case.path_parameters or {}) and n % 2:
        case.path_parameters["version"] = "1"
    if isinstance(case.body, dict) and isinstance(case.body.get("policy"), str):
        case.body["policy"] = POLICIES[n % len(POLICIES)]


def _headers(path: str, api_key: str | None) -> dict[str, str]:
    if path.startswith("/admin/"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def fuzz_operation(
    operation: Any, mode: Any, examples: int, derandomize: bool, api_key: str | None, report: FuzzReport
) -> None:
    """Up to ``examples`` cases of one operation in one generation mode, counted into ``report``."""
    key = f"{operation.label} {mode.value}"
    positive = mode == schemathesis.GenerationMode.POSITIVE

    # the server is shared and the machine busy: no deadline; no example database on disk
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        report.cases[key] += 1
        _steer(case, positive, report.cases[key])
        response = case.call(timeout=30, headers=_headers(operation.path, api_key))
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of failures
            report.failures.append(f"{key}: {exc}"[:3000])
        if not positive:
            return  # (negative cases on /admin also mutate the declared bearer header: their 401s are right)
        if response.status_code == 401:  # the token or key reached the route, whichever it needs
            report.failures.append(f"{key}: 401 with credentials: {response.text[:300]}")
        try:
            case.validate_response(response, checks=[st_checks.positive_data_acceptance])
        except (Exception, BaseExceptionGroup) as exc:
            if _semantic(response):
                report.semantic[f"{operation.label} {response.status_code}"] += 1
            else:
                report.failures.append(f"{key}: {exc}"[:3000])

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:
        # an operation whose schema cannot be violated (no parameters, no body) has no negative
        # cases: hypothesis says so by failing to generate; nothing was sent
        if "Unable to satisfy assumptions" not in str(exc) or report.cases[key]:
            report.failures.append(f"{key}: generation failed: {exc}"[:3000])


def fuzz(url: str, examples: int, derandomize: bool, api_key: str | None = None) -> FuzzReport:
    """Up to ``examples`` cases per operation and generation mode; failures collected, not raised."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz_operation(result.ok(), mode, examples, derandomize, api_key, report)
    return report


def _policy_file(folder: Path) -> Path:
    """Thresholds for every tiny model (they have none), so /v1/moderations answers; and a named policy."""
    path = folder / "policies.json"
    path.write_text(
        json.dumps(
            {
                "policies": {
                    "default": {m: {"thresholds": {"negative": 0.5}} for m in MODELS},
                    "strict": {m: {"thresholds": {"negative": 0.2}} for m in MODELS},
                }
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def url(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = _policy_file(tmp_path_factory.mktemp("fuzz"))
    with real_server(tiny_bundles, admin_token=ADMIN_TOKEN, policy_file=policies) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = _policy_file(tmp_path_factory.mktemp("fuzz-key"))
    with real_server(tiny_bundles, admin_token=ADMIN_TOKEN, policy_file=policies, api_key=API_KEY) as base:
        yield base


def _record(report: FuzzReport, name: str) -> None:
    out = os.environ.get("KDSERVE_RELIABILITY_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"\n{name}: {json.dumps(report.as_dict())}")


def _every_route(url: str, report: FuzzReport) -> None:
    paths = set(httpx.get(url + "/openapi.json", timeout=10).json()["paths"])
    reached = {key.split(" ")[1] for key in report.cases}
    assert reached == paths, f"operations not fuzzed: {sorted(paths - reached)}"
    assert any(p.startswith("/admin/") for p in reached)


def test_fuzz_every_operation_quick(url: str) -> None:
    report = fuzz(url, examples=9, derandomize=True)
    _record(report, "fuzz-quick")
    assert not report.failures, "\n\n".join(report.failures[:5])
    _every_route(url, report)
    assert report.total >= 200 and not [s for s in report.statuses if s >= 500]
    assert report.statuses[200] > 0 and report.statuses[422] > 0  # both answers and refusals were exercised


def test_fuzz_every_operation_with_api_key_quick(keyed_url: str) -> None:
    report = fuzz(keyed_url, examples=4, derandomize=True, api_key=API_KEY)
    _record(report, "fuzz-api-key-quick")
    assert not report.failures, "\n\n".join(report.failures[:5])
    _every_route(keyed_url, report)
    assert report.statuses[200] > 0 and not [s for s in report.statuses if s >= 500]


@pytest.mark.parametrize("keyed", [False, True])
def test_options_allow_lists_what_is_served(url: str, keyed_url: str, keyed: bool) -> None:
    """OPTIONS on every path of the schema: 405 with ``Allow`` = the methods the schema declares
    there (plus HEAD, served with every GET), in the JSON error shape."""
    base = keyed_url if keyed else url
    schema = httpx.get(base + "/openapi.json", timeout=10).json()
    for template, item in schema["paths"].items():
        path = template.replace("{name}", MODELS[0]).replace("{version}", "1")
        response = httpx.options(base + path, headers=_headers(path, API_KEY if keyed else None), timeout=10)
        declared = {m.upper() for m in item if m in {"get", "post", "put", "delete", "patch"}}
        allow = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
        assert response.status_code == 405, (path, response.status_code, response.text)
        assert allow - {"HEAD"} == declared, (path, allow, declared)
        assert response.json() == {
            "error": {"code": "method_not_allowed", "message": f"method OPTIONS is not allowed on {path}"}
        } or path.startswith("/v2")


@pytest.mark.slow
def test_fuzz_every_operation_1000_cases(url: str) -> None:
    examples = int(os.environ.get("KDSERVE_FUZZ_EXAMPLES", "100"))
    report = fuzz(url, examples=examples, derandomize=False)
    _record(report, "fuzz")
    assert not report.failures, "\n\n".join(report.failures[:5])
    assert report.total >= 1000, report.cases
    assert not [s for s in report.statuses if s >= 500]


@pytest.mark.slow
def test_fuzz_every_operation_with_api_key_1000_cases(keyed_url: str) -> None:
    examples = int(os.environ.get("KDSERVE_FUZZ_EXAMPLES", "100"))
    report = fuzz(keyed_url, examples=examples, derandomize=False, api_key=API_KEY)
    _record(report, "fuzz-api-key")
    assert not report.failures, "\n\n".join(report.failures[:5])
    assert report.total >= 1000, report.cases
    assert not [s for s in report.statuses if s >= 500]
