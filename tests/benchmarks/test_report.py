"""Reports from a recorded ``kdserve bench compare`` result (tests/benchmarks/data/recorded.json:
a real run on the tiny bundles, kdserve vs the naive, LitServe and skipped-hf baselines)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from kdserve.bench.plots import pareto_front
from kdserve.bench.report import write_report
from kdserve.cli import main

RECORDED = Path(__file__).parent / "data" / "recorded.json"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_compare_report_has_the_headline_and_baseline_tables(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = json.loads(RECORDED.read_text())
    written = write_report(result, tmp_path)
    assert [p.name for p in written] == ["report.md", "latency_vs_throughput.png", "pareto.png"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Teacher vs students\n")
    header = next(line for line in report.splitlines() if line.startswith("| model | kind |"))
    assert header.count("|") == 15 and "speed-up vs teacher" in header and "server RSS MB" in header
    teacher, student = result["models"]
    # the teacher's own speed-up is exactly 1 on every axis; rows carry the recorded numbers
    assert f"| {teacher['name']} | teacher | fp32 | 100.00 | {teacher['parameters']:,} |" in report
    assert "1.00x / 1.00x / 1.00x" in report
    assert f"| {student['name']} | textcnn | fp32 |" in report
    assert f"{student['max_throughput_rps']:,.2f}" in report
    assert "## kdserve vs alternatives (tiny-teacher)" in report
    for server in ("kdserve", "naive", "litserve"):
        assert f"\n| {server} | " in report
    assert "- hf skipped: tiny-teacher is not a teacher with its Hugging Face checkpoint" in report
    assert f"Load generator ceiling: **{result['generator_ceiling']['ceiling_rps']:,.0f} req/s**" in report
    assert "![pareto](pareto.png)" in report
    for name in ("latency_vs_throughput.png", "pareto.png"):
        size = (tmp_path / name).stat().st_size
        assert 10_000 < size < 1_000_000, (name, size)
        width, height = png_size(tmp_path / name)
        assert 500 <= width <= 1200 and 400 <= height <= 900


def test_report_cli_rerenders_a_recorded_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", str(RECORDED), "--output", str(tmp_path), "--no-plots"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    assert "| tiny-textcnn | textcnn |" in (tmp_path / "report.md").read_text()
    assert "report.md" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{nope", "unreadable JSON"),
        ('{"kind": "other"}', "not a kdserve bench result"),
        ("[1, 2]", "not a kdserve bench result"),
    ],
)
def test_report_cli_rejects_files_that_are_not_results(
    content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "result.json"
    path.write_text(content)
    assert main(["bench", "report", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdserve: error: ") and "\n" not in err and needle in err


def test_report_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err.strip() == f"kdserve: error: result file not found: {tmp_path / 'none.json'}"


def test_pareto_front_keeps_only_undominated_models() -> None:
    points = [
        ("teacher", 10.0, 0.91),
        ("bilstm", 1.0, 0.88),
        ("textcnn", 0.5, 0.86),
        ("slow-bad", 12.0, 0.80),
        ("tiny-tf", 2.0, 0.87),
        ("int8", 5.0, 0.91),
    ]
    assert [p[0] for p in pareto_front(points)] == ["textcnn", "bilstm", "int8"]


def _sweep(best: float, p50: float, p99: float) -> dict[str, object]:
    return {
        "max_throughput_rps": best,
        "closed_loop": [{"concurrency": 8, "throughput_rps": best}],
        "open_loop": [{"rate": 100.0, "throughput_rps": 100.0, "latency_ms": {"p50": p50, "p99": p99}, "errors": {}}],
        "rss_mb": 100.0,
    }


def test_baseline_rounds_give_medians_and_per_round_ratios(tmp_path: Path) -> None:
    from kdserve.bench.compare import _median_of_rounds

    ours = _median_of_rounds("kdserve", [_sweep(2000, 2.0, 4.0), _sweep(3000, 2.2, 3.0), _sweep(2600, 1.8, 5.0)])
    assert ours["max_throughput_rps"] == 2600 and ours["at_common_rate"]["p99_ms"] == 4.0
    assert (
        ours["at_common_rate"]["p50_ms"] == 2.0 and ours["http"]["max_throughput_rps"] == 2600
    )  # the median round's sweep
    assert ours["round_max_rps"] == [2000, 3000, 2600] and ours["round_p99_ms"] == [4.0, 3.0, 5.0]
    one = _median_of_rounds("naive", [_sweep(1000, 2.0, 4.5)])
    assert one["max_throughput_rps"] == 1000 and one["at_common_rate"]["p99_ms"] == 4.5
    # a recorded result re-rendered with two rounds: medians in the table, each round's numbers after
    result = json.loads(RECORDED.read_text())
    servers = [
        _median_of_rounds("kdserve", [_sweep(2000, 2.0, 4.0), _sweep(2400, 2.0, 3.0)]),
        _median_of_rounds("naive", [_sweep(1000, 2.0, 4.0), _sweep(1000, 2.0, 6.0)]),
    ]
    servers[0].update(
        throughput_ratio=1.0, p99_ratio=1.0, round_throughput_ratios=[1.0, 1.0], round_p99_ratios=[1.0, 1.0]
    )
    servers[1].update(
        throughput_ratio=2.2, p99_ratio=1.43, round_throughput_ratios=[2.0, 2.4], round_p99_ratios=[1.0, 2.0]
    )
    result["baselines"].update(rounds=2, servers=servers)
    write_report(result, tmp_path, with_plots=False)
    report = (tmp_path / "report.md").read_text()
    assert "Each server was swept 2 times, in turn" in report
    assert (
        "| naive | 1,000.00 | 2.00 | 5.00 | 0 | 100.00 | 2.20 | 1.43 | 1,000 / 1,000 | 2.00 / 2.40 | 1.00 / 2.00 |"
        in report
    )


def test_compare_cli_refuses_zero_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "compare",
            "--bundles",
            str(tmp_path),
            "--baselines",
            "naive",
            "--baseline-rounds",
            "0",
            "--no-ceiling",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code != 0 and "--baseline-rounds must be >= 1, got 0" in capsys.readouterr().err
