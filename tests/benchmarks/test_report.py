"""Reports from a recorded ``kdserve bench compare`` result (tests/benchmarks/data/recorded.json:
a real run on the tiny bundles, kdserve vs the naive, LitServe and skipped-hf baselines)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from benchmarks.plots import pareto_front
from benchmarks.report import write_report
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


@pytest.mark.parametrize(("content", "needle"), [
    ("{nope", "unreadable JSON"),
    ('{"kind": "other"}', "not a kdserve bench result"),
    ("[1, 2]", "not a kdserve bench result"),
])
def test_report_cli_rejects_files_that_are_not_results(content: str, needle: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "result.json"
    path.write_text(content)
    assert main(["bench", "report", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdserve: error: ") and "\n" not in err and needle in err


def test_report_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err.strip() == f"kdserve: error: result file not found: {tmp_path / 'none.json'}"


def test_pareto_front_keeps_only_undominated_models() -> None:
    points = [("teacher", 10.0, 0.91), ("bilstm", 1.0, 0.88), ("textcnn", 0.5, 0.86),
              ("slow-bad", 12.0, 0.80), ("tiny-tf", 2.0, 0.87), ("int8", 5.0, 0.91)]
    assert [p[0] for p in pareto_front(points)] == ["textcnn", "bilstm", "int8"]
