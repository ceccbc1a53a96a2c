"""The CLI turns every bad input into one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdserve.cli import main
from tests.conftest import write_sentiment_csv


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra CLI args, text the error line must contain)."""
    (tmp_path / "no_col.csv").write_text("body,label\nhello,1\n")
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "train.csv").write_text("text,label\nnice,pos\nbad,neg\nfine,pos\nawful,neg\n")
    (tmp_path / "val.csv").write_text("text,label\nok,pos\nwhat,neutral\n")
    (tmp_path / "bytes.csv").write_bytes(b"text,label\nok,1\n\xff\xfe bad,0\n")
    return {
        "missing file": (["--data", str(tmp_path / "nope.csv")], "nope.csv"),
        "missing column": (["--data", str(tmp_path / "no_col.csv")], "no text column"),
        "empty dataset": (["--data", str(tmp_path / "empty.csv")], "empty.csv"),
        "unseen label": (
            ["--data", str(tmp_path / "train.csv"), "--validation-data", str(tmp_path / "val.csv")],
            "neutral",
        ),
        "undecodable bytes": (["--data", str(tmp_path / "bytes.csv")], "line 3"),
    }


BAD = ["missing file", "missing column", "empty dataset", "unseen label", "undecodable bytes"]


@pytest.mark.parametrize("case", BAD)
def test_train_teacher_bad_data_is_one_line_and_exit_1(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, needle = _bad_inputs(tmp_path)[case]
    code, err = _run(capsys, "train", "teacher", "--output", str(tmp_path / "out"), *args)
    assert code == 1
    assert err.startswith("kdserve: error: ") and "\n" not in err and "Traceback" not in err
    assert needle in err, err
    if case == "missing column":
        assert "body" in err  # the columns that do exist are listed


@pytest.mark.parametrize("case", BAD)
def test_eval_bad_data_is_one_line_and_exit_1(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path
) -> None:
    args, needle = _bad_inputs(tmp_path)[case]
    code, err = _run(capsys, "eval", "--checkpoint", str(tiny_bert_dir), *args)
    assert code == 1 and "\n" not in err and needle in err, err


def test_bad_config_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_sentiment_csv(tmp_path / "s.csv", 20)
    code, err = _run(capsys, "train", "teacher", "--data", str(data), "--output", str(tmp_path), "--lr", "-1")
    assert code == 2 and "lr must be in (0, 1)" in err


def test_missing_model_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_sentiment_csv(tmp_path / "s.csv", 20)
    code, err = _run(
        capsys,
        "train",
        "teacher",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "o"),
        "--model",
        str(tmp_path / "nomodel"),
    )
    assert code == 1 and "model folder not found" in err and "nomodel" in err


def test_eval_rejects_a_dataset_whose_labels_the_model_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path
) -> None:
    from kdserve.train.checkpoint import load_classifier, save_classifier

    model, tok = load_classifier(str(tiny_bert_dir), labels=("spam", "ham"))
    save_classifier(model, tok, ("spam", "ham"), tmp_path / "ckpt")
    data = write_sentiment_csv(tmp_path / "s.csv", 20)
    code, err = _run(capsys, "eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(data))
    assert code == 1 and "not among the model's labels" in err


@pytest.mark.parametrize("stage", ["export", "serve", "bench"])
def test_later_stages_give_usage_errors_not_tracebacks(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Bare stage commands miss a required input: one clear line and exit 2, never a traceback."""
    try:
        code = main([stage])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "required" in err or "invalid choice" in err or "usage:" in err, err


def test_unknown_preset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "teacher", "--preset", "fast", "--output", "x"])
    assert exc.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err


def test_eval_writes_json_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path
) -> None:
    import json

    from kdserve.train.checkpoint import load_classifier, save_classifier

    model, tok = load_classifier(str(tiny_bert_dir), labels=("negative", "positive"))
    save_classifier(model, tok, ("negative", "positive"), tmp_path / "ckpt")
    data = write_sentiment_csv(tmp_path / "s.csv", 60)
    code = main(
        ["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(data), "--output", str(tmp_path / "m.json")]
    )
    out = capsys.readouterr().out
    assert code == 0 and "macro-F1" in out and "confusion matrix" in out
    payload = json.loads((tmp_path / "m.json").read_text())
    assert payload["examples"] == 6 and payload["extra"]["split"] == "validation"
    assert sum(map(sum, payload["confusion_matrix"])) == 6


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdserve",
            "eval",
            "--checkpoint",
            str(tmp_path),
            "--data",
            str(tmp_path / "missing.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"kdserve: error: dataset file not found: {tmp_path / 'missing.csv'}"]


def test_serve_help_needs_no_torch() -> None:
    """``kdserve serve --help`` must work in a serve-only install: torch made unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from kdserve.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: kdserve serve" in proc.stdout
