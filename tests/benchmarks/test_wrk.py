"""The wrk driver: the script it writes, its parsing, and real wrk runs against real servers."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from kdserve.bench.common import BenchError
from kdserve.bench.http_bench import SweepConfig, render_batch_bodies
from kdserve.bench.servers import start_server
from kdserve.bench.wrk import _lua_string, lua_script, parse_output, run_wrk, summarize, wrk_binary
from kdserve.core.errors import ConfigError

needs_wrk = pytest.mark.skipif(wrk_binary() is None, reason="wrk is not installed (apt-get install wrk)")


def test_bodies_become_lua_long_strings_that_cannot_close_early() -> None:
    assert _lua_string(b'{"text": "a"}') == '[[\n{"text": "a"}]]'
    # a body holding "]]" (and "]=]") needs a longer bracket
    assert _lua_string(b'{"text": "x]]y]=]z"}') == '[==[\n{"text": "x]]y]=]z"}]==]'
    script = lua_script("/classify", [b'{"text": "a"}', b'{"text": "b"}'])
    assert script.count("[[\n") == 2 and '"/classify"' in script


@pytest.mark.parametrize("path", ["classify", '/a"b', "/a\\b"])
def test_a_path_that_would_break_the_script_is_refused(path: str) -> None:
    with pytest.raises(BenchError, match="bad request path"):
        lua_script(path, [b"{}"])


def test_summary_is_parsed_from_the_marker_line_only() -> None:
    out = (
        "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 2 connections\n"
        'KDSERVE_WRK {"requests": 2000, "duration_us": 2000000, "bytes": 1, "connect": 0, "read": 0, '
        '"write": 0, "status": 10, "timeout": 1, "p50_us": 1500, "p90_us": 2500, "p99_us": 4000, '
        '"p999_us": 9000, "max_us": 12000, "mean_us": 1612.5}\n'
    )
    summary = summarize(parse_output(out), connections=2, threads=1)
    # throughput counts the answers that were not errors, as the built-in generator does
    assert summary["throughput_rps"] == 995.0 and summary["ok"] == 1990 and summary["completed"] == 2000
    assert summary["latency_ms"] == {
        "count": 2000,
        "p50": 1.5,
        "p90": 2.5,
        "p99": 4.0,
        "p99.9": 9.0,
        "max": 12.0,
        "mean": 1.613,
    }
    assert summary["errors"] == {"status": 10, "timeout": 1}
    with pytest.raises(BenchError, match="no summary line"):
        parse_output("Running 1s test\n")


def _stats(url: str) -> int:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as answer:
        return int(json.loads(answer.read())["requests"])


@needs_wrk
def test_wrk_counts_what_the_server_received() -> None:
    with start_server("trivial", start_timeout_s=30) as server:
        before = _stats(server.url)
        result = run_wrk(f"{server.url}/classify", [b'{"text": "a"}'], connections=4, duration_s=1)
        received = _stats(server.url) - before
    assert result["errors"] == {} and result["completed"] > 100
    # wrk counts answered requests; the server also saw the ones in flight when wrk stopped
    assert 0 <= received - result["completed"] <= 4
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]


@needs_wrk
def test_wrk_cycles_through_the_bodies_against_kdserve(tiny_bundles: Path) -> None:
    bodies = [json.dumps({"texts": ["a fine film ."]}).encode(), json.dumps({"texts": ["dull", "bad", "ok"]}).encode()]
    with start_server("kdserve", bundles_root=tiny_bundles, model="tiny-textcnn", start_timeout_s=120) as server:
        result = run_wrk(f"{server.url}/classify", bodies, connections=2, duration_s=1)
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
    texts = float(re.search(r'^kdserve_model_texts_total\{model="tiny-textcnn"\} (\S+)$', metrics, re.M).group(1))
    requests = float(
        re.search(r'^kdserve_model_requests_total\{model="tiny-textcnn",status="ok"\} (\S+)$', metrics, re.M).group(1)
    )
    assert result["errors"] == {} and result["completed"] > 20
    # alternating bodies of 1 and 3 texts: 2 texts a request on average
    assert texts / requests == pytest.approx(2.0, abs=0.1)


@needs_wrk
def test_wrk_reports_non_2xx_answers_as_errors() -> None:
    with start_server("trivial", start_timeout_s=30, extra=["--status-cycle", "200,503"]) as server:
        result = run_wrk(f"{server.url}/classify", [b"{}"], connections=2, duration_s=1)
    assert result["errors"]["status"] == pytest.approx(result["completed"] / 2, abs=3)


def test_batch_bodies_cycle_through_the_texts() -> None:
    bodies = render_batch_bodies(["a", "b", "c", "d", "e"], 2)
    assert [json.loads(b) for b in bodies] == [{"texts": ["a", "b"]}, {"texts": ["c", "d"]}]
    assert [json.loads(b) for b in render_batch_bodies(["a"], 3)] == [{"texts": ["a", "a", "a"]}]
    with pytest.raises(ConfigError):
        render_batch_bodies([], 2)


def test_a_wrk_sweep_is_validated_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="--generator"):
        SweepConfig(generator="ab")
    with pytest.raises(ConfigError, match="wrk-threads"):
        SweepConfig(concurrency=[1, 4], generator="wrk", wrk_threads=2)


@needs_wrk
def test_compare_runs_every_closed_loop_level_through_wrk_with_batched_requests(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path
) -> None:
    from kdserve.cli import main

    out = tmp_path / "out"
    flags = ["--bundles", str(tiny_bundles), "--models", "tiny-bilstm", "--short-data", str(text_files["short"])]
    flags += ["--long-data", str(text_files["long"]), "--texts", "40", "--latency-iterations", "10"]
    flags += ["--concurrency", "1,4", "--duration", "1", "--warmup", "0", "--generator", "wrk"]
    flags += ["--batch-size", "4", "--teacher-batch-sizes", "1", "--no-plots", "--output", str(out)]
    assert main(["bench", "compare", *flags]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["generator"] == "wrk" and result["batch_size"] == 4
    assert result["generator_ceiling"]["generator"] == "wrk"
    (row,) = result["models"]
    closed = row["http"]["closed_loop"]
    assert [(r["generator"], r["concurrency"]) for r in closed] == [("wrk", 1), ("wrk", 4)]
    assert all(r["errors"] == {} and r["texts_per_s"] == round(r["throughput_rps"] * 4, 1) for r in closed)
    assert row["max_texts_per_s"] == round(row["max_throughput_rps"] * 4, 1)
    # a student is timed in process at the batch size it is sent, and compared in texts/s
    inprocess = row["inprocess"]
    assert set(inprocess["examples_per_s"]) == {"1", "4"}
    assert inprocess["http_fraction"] == round(row["max_texts_per_s"] / inprocess["best_examples_per_s"], 2)
    report = (out / "report.md").read_text()
    assert "Closed-loop generator: **wrk**" in report and "4 texts per request" in report
