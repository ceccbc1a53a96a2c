"""Exactly-once after a real ``kill -9`` mid-run, and bad input: one line, non-zero exit, no partial shard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kdserve.cli import main
from tests.bulk.conftest import texts, write_input


def _command(bundle: Path, source: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "kdserve", "classify", "--bundle", str(bundle), "--input", str(source),
        "--output", str(out), "--workers", "1", "--threads", "1", "--shard-rows", "100", "--batch-size", "16",
    ]  # fmt: skip


def _visible(out: Path) -> list[str]:
    """What a dataset reader of ``out`` sees: names not starting with _ or ."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(("_", ".")))


def test_kill_9_half_way_then_rerun_is_exactly_once(bilstm: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", texts(4000), ids=[f"post-{i}" for i in range(4000)])
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run([*_command(bilstm, source, reference), "--id-column", "post_id"], check=True, capture_output=True)

    # The whole job's process group (parent and workers) dies at once, as in a container kill.
    proc = subprocess.Popen(
        [*_command(bilstm, source, out), "--id-column", "post_id"], start_new_session=True, stderr=subprocess.PIPE
    )
    manifests = out / "_manifests"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifests.is_dir() and len(list(manifests.glob("part-*.json"))) >= 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed half way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(manifests.glob("part-*.json")))
    assert 20 <= committed < 40

    rerun = subprocess.run([*_command(bilstm, source, out), "--id-column", "post_id"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({committed * 100:,} already committed" in rerun.stdout
    table = pq.read_table(out).sort_by("row").to_pydict()
    expected = pq.read_table(reference).sort_by("row").to_pydict()
    assert len(table["id"]) == 4000 and len(set(table["id"])) == 4000
    assert table["id"] == [f"post-{i}" for i in range(4000)]
    assert table["label"] == expected["label"]
    assert table["score"] == expected["score"]
    assert not list((out / "_tmp").iterdir())


def _bad_cases(tmp_path: Path, bundle: Path) -> dict[str, tuple[list[str], str, int]]:
    """name -> (classify args after --bundle, text the one error line must contain, exit code)."""
    (tmp_path / "no_text.csv").write_text("body,id\nhello,1\n")
    (tmp_path / "bytes.csv").write_bytes(b"text\nthe movie was good .\n\xff\xfe bad\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "the plot was dull ."}\n{"text": "oops"\n')
    write_input(tmp_path / "a.csv", texts(5), text_column="text")
    write_input(tmp_path / "b.csv", texts(5), text_column="content")
    (tmp_path / "mixed.jsonl").write_text('{"text": "the film was good ."}\n{"body": "the film was bad ."}\n')
    (tmp_path / "good.csv").write_text("text\nthe film was good .\n")
    corrupt = tmp_path / "corrupt"
    import shutil

    shutil.copytree(bundle, corrupt)
    model = corrupt / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    other = tmp_path / "other_job"
    other.mkdir()
    (other / "report.csv").write_text("x\n")
    return {
        "missing text column": ([str(bundle), "--input", str(tmp_path / "no_text.csv")], "no text column", 1),
        "not utf-8": ([str(bundle), "--input", str(tmp_path / "bytes.csv")], "bytes.csv line 3: not valid UTF-8", 1),
        "unreadable parquet": ([str(bundle), "--input", str(tmp_path / "broken.parquet")], "not a readable Parquet", 1),
        "bad json": ([str(bundle), "--input", str(tmp_path / "bad.jsonl")], "bad.jsonl line 2: invalid JSON", 1),
        "missing file": ([str(bundle), "--input", str(tmp_path / "nope.csv")], "input not found", 1),
        "mixed schemas": (
            [str(bundle), "--input", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
            "mixed schemas",
            1,
        ),
        "mixed records": ([str(bundle), "--input", str(tmp_path / "mixed.jsonl")], "line 2: no 'text' field", 1),
        "corrupt bundle": ([str(corrupt), "--input", str(tmp_path / "good.csv")], "sha256 does not match", 1),
        "foreign output": (
            [str(bundle), "--input", str(tmp_path / "good.csv"), "--output", str(other)],
            "holds no _job.json",
            2,
        ),
        "bad shard size": ([str(bundle), "--input", str(tmp_path / "good.csv"), "--shard-rows", "0"], "shard-rows", 2),
    }


def test_bad_input_is_one_line_and_leaves_no_shard(
    bilstm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (args, message, code) in _bad_cases(tmp_path, bilstm).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        argv = ["classify", "--bundle", *args]
        if "--output" not in argv:
            argv += ["--output", str(out)]
        assert main(argv) == code, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("kdserve: error: "), (name, err)
        assert message in err, (name, err)
        if out.exists():
            assert _visible(out) == [], name
