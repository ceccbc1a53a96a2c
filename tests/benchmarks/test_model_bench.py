"""``kdserve bench model`` on tiny real bundles: result structure, timings, torch reference, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdserve.bench.model_bench import ModelBenchConfig, run_model_bench
from kdserve.cli import main


def test_model_bench_times_tokenization_and_model_separately(tiny_bundles: Path, text_files: dict[str, Path]) -> None:
    config = ModelBenchConfig(
        [str(tiny_bundles / "tiny-textcnn")],
        batch_sizes=[1, 4],
        short_data=str(text_files["short"]),
        long_data=str(text_files["long"]),
        texts=40,
        warmup=2,
        iterations=15,
        max_seconds=30,
        torch_reference=False,
    )
    result = run_model_bench(config)
    assert result["kind"] == "model"
    assert result["machine"]["usable_cores"] >= 1 and result["machine"]["versions"]["onnxruntime"]
    assert result["threads"]["intra_op_threads"] == 0 and "usable_cores" in result["threads"]
    assert result["texts"]["short"]["count"] == 40 and result["texts"]["long"]["mean_chars"] > 200
    (bundle,) = result["bundles"]
    assert bundle["name"] == "tiny-textcnn" and bundle["precision"] == "fp32" and bundle["accuracy"] == 1.0
    assert bundle["parameters"] > 0 and bundle["bundle_bytes"] > 1000
    assert set(bundle["onnx"]) == {"short", "long"} and set(bundle["onnx"]["short"]) == {"1", "4"}
    for cells in bundle["onnx"].values():
        for size, cell in cells.items():
            assert cell["batch_size"] == int(size) and cell["iterations"] == 15
            for part in ("tokenize_ms", "model_ms", "total_ms"):
                assert cell[part]["count"] == 15 and cell[part]["min"] > 0
            # total is tokenization + model, iteration by iteration
            assert cell["total_ms"]["mean"] == pytest.approx(
                cell["tokenize_ms"]["mean"] + cell["model_ms"]["mean"], abs=2e-4
            )
            assert cell["examples_per_s"] == pytest.approx(int(size) * 1000 / cell["total_ms"]["mean"], rel=1e-3)
    long_cell, short_cell = bundle["onnx"]["long"]["4"], bundle["onnx"]["short"]["4"]
    assert long_cell["mean_tokens"] == 32 and long_cell["truncated_fraction"] == 1.0  # max_length 32
    assert short_cell["mean_tokens"] < 12 and short_cell["truncated_fraction"] == 0.0
    assert bundle["torch"] is None and bundle["torch_note"] == "disabled (--no-torch)"


def test_torch_reference_runs_the_source_checkpoint(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from tokenizers import Tokenizer

    from kdserve.core.bundle import read_manifest, write_manifest
    from kdserve.train.students import BiLSTMConfig, BiLSTMStudent, save_student

    bundle = tmp_path / "with-source"
    shutil.copytree(tiny_bundles / "tiny-bilstm", bundle)
    vocab = Tokenizer.from_file(str(bundle / "tokenizer.json")).get_vocab_size()
    config = BiLSTMConfig(vocab, 2, embedding_dim=16, hidden_size=8, classifier_hidden=16, dropout=0.0)
    save_student(BiLSTMStudent(config), config, tmp_path / "student")
    manifest = read_manifest(bundle)
    manifest.source_checkpoint = str(tmp_path / "student")
    write_manifest(bundle, manifest)
    config_ = ModelBenchConfig(
        [str(bundle)],
        batch_sizes=[2],
        short_data=str(text_files["short"]),
        long_data=None,
        texts=10,
        warmup=1,
        iterations=5,
        threads=1,
    )
    (result,) = run_model_bench(config_)["bundles"]
    assert result["torch_note"].startswith(f"student {tmp_path / 'student'}")
    cell = result["torch"]["short"]["2"]
    assert cell["iterations"] == 5 and cell["model_ms"]["min"] > 0


def test_missing_checkpoint_is_a_note_not_a_failure(tiny_bundles: Path, text_files: dict[str, Path]) -> None:
    config = ModelBenchConfig(
        [str(tiny_bundles / "tiny-bilstm")],
        batch_sizes=[1],
        short_data=str(text_files["short"]),
        long_data=None,
        texts=5,
        warmup=0,
        iterations=2,
    )
    (result,) = run_model_bench(config)["bundles"]
    assert result["torch"] is None
    assert result["torch_note"] in (
        "source checkpoint tests/bundles.py not found on this machine",
        "torch is not installed",
    )


def test_bench_model_cli_writes_json_report_and_plot(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "model",
            str(tiny_bundles / "tiny-textcnn"),
            str(tiny_bundles / "tiny-bilstm"),
            "--batch-sizes",
            "1,8",
            "--short-data",
            str(text_files["short"]),
            "--long-data",
            "none",
            "--texts",
            "16",
            "--iterations",
            "5",
            "--warmup",
            "1",
            "--no-torch",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert [b["name"] for b in result["bundles"]] == ["tiny-textcnn", "tiny-bilstm"]
    report = (out / "report.md").read_text()
    assert "| tiny-bilstm | fp32 | short | 8 |" in report and "tokenize p50 ms" in report
    assert (out / "model_latency.png").stat().st_size > 10_000
    assert str(out / "result.json") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--batch-sizes", "0"], 2, "--batch-sizes must be integers >= 1"),
        (["--batch-sizes", "one"], 2, "comma-separated integers"),
        (["--short-data", "none", "--long-data", "none"], 2, "need short or long texts"),
    ],
)
def test_bench_model_bad_settings_are_one_line(
    args: list[str], code: int, needle: str, tiny_bundles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "model", str(tiny_bundles / "tiny-textcnn"), *args]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdserve: error: ") and "\n" not in err and needle in err


def test_bench_model_missing_bundle_is_one_line(
    tmp_path: Path, text_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "model", str(tmp_path / "nope"), "--short-data", str(text_files["short"])]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"kdserve: error: bundle folder not found: {tmp_path / 'nope'}"


def test_bench_model_missing_data_is_one_line(
    tiny_bundles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "bench",
                "model",
                str(tiny_bundles / "tiny-textcnn"),
                "--short-data",
                str(tmp_path / "x.csv"),
                "--long-data",
                "none",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdserve: error: ") and "\n" not in err and "x.csv" in err
