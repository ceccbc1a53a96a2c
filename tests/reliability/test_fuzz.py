"""Schema-driven fuzzing with schemathesis against a real uvicorn on loopback.

Every operation of the server's OpenAPI schema gets generated requests, schema-valid (positive)
and, where the schema can be violated, schema-invalid (negative). Each response must be no 5xx,
carry a status code the schema declares for that operation, a declared content type, a body
matching the declared schema (errors included), and negative data must be refused with a 4xx.

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


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)  # "METHOD /path mode" -> cases sent
    statuses: Counter[int] = field(default_factory=Counter)
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
            "per_operation": dict(sorted(self.cases.items())),
        }


def fuzz_operation(
    operation: Any, mode: Any, examples: int, derandomize: bool, models: list[str], report: FuzzReport
) -> None:
    """Up to ``examples`` cases of one operation in one generation mode, counted into ``report``."""
    key = f"{operation.label} {mode.value}"

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
        n = report.cases[key]
        if mode == schemathesis.GenerationMode.POSITIVE and "name" in (case.path_parameters or {}) and n % 2:
            # a random name is a 404: every other case names a real model, to reach the 200 paths
            case.path_parameters["name"] = models[n // 2 % len(models)]
        response = case.call(timeout=30)
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of failures
            report.failures.append(f"{key}: {exc}"[:3000])

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:
        # an operation whose schema cannot be violated (no parameters, no body) has no negative
        # cases: hypothesis says so by failing to generate; nothing was sent
        if "Unable to satisfy assumptions" not in str(exc) or report.cases[key]:
            report.failures.append(f"{key}: generation failed: {exc}"[:3000])


def fuzz(url: str, examples: int, derandomize: bool, models: list[str]) -> FuzzReport:
    """Up to ``examples`` cases per operation and generation mode; failures collected, not raised."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz_operation(result.ok(), mode, examples, derandomize, models, report)
    return report


@pytest.fixture(scope="module")
def url(tiny_bundles: Path) -> Iterator[str]:
    with real_server(tiny_bundles) as base:
        yield base


MODELS = ["tiny-bilstm", "tiny-teacher", "tiny-textcnn"]


def _record(report: FuzzReport, name: str) -> None:
    out = os.environ.get("KDSERVE_RELIABILITY_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"\n{name}: {json.dumps(report.as_dict())}")


def test_fuzz_every_operation_quick(url: str) -> None:
    report = fuzz(url, examples=9, derandomize=True, models=MODELS)
    _record(report, "fuzz-quick")
    assert not report.failures, "\n\n".join(report.failures[:5])
    assert report.total >= 100 and not [s for s in report.statuses if s >= 500]
    assert report.statuses[200] > 0 and report.statuses[422] > 0  # both answers and refusals were exercised


@pytest.mark.slow
def test_fuzz_every_operation_1000_cases(url: str) -> None:
    examples = int(os.environ.get("KDSERVE_FUZZ_EXAMPLES", "100"))
    report = fuzz(url, examples=examples, derandomize=False, models=MODELS)
    _record(report, "fuzz")
    assert not report.failures, "\n\n".join(report.failures[:5])
    assert report.total >= 1000, report.cases
    assert not [s for s in report.statuses if s >= 500]
