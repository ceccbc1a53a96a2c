"""The CLI turns every bad input into one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------ flags generated from the config fields


class _Captured(Exception):
    """Raised by a stand-in for a stage's run function: the config the CLI built, before any training."""


def _capture(monkeypatch: pytest.MonkeyPatch, target: str, argv: list[str]) -> Any:
    def run(config: Any, *_: Any) -> Any:
        raise _Captured(config)

    monkeypatch.setattr(target, run)
    with pytest.raises(_Captured) as exc:
        main(argv)
    return exc.value.args[0]


def test_teacher_flags_override_only_what_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdserve.core.data import DatasetSpec

    target = "kdserve.train.teacher.train_teacher"
    quick = _capture(monkeypatch, target, ["train", "teacher", "--output", "o"])
    # the quick preset's values, the field defaults for the rest, the default dataset
    assert (quick.preset, quick.epochs, quick.lr, quick.max_length, quick.max_train_examples) == (
        "quick",
        2,
        1e-4,
        64,
        10_000,
    )
    assert quick.freeze_word_embeddings is True and quick.seed == 13 and quick.evals_per_epoch == 1
    assert quick.data == DatasetSpec("package:rotten_tomatoes")
    given = _capture(
        monkeypatch,
        target,
        ["train", "teacher", "--preset", "full", "--output", "o", "--epochs", "1", "--no-freeze-word-embeddings"]
        + ["--data", "d.csv", "--text-column", "body", "--data-seed", "7", "--metric-for-best", "macro_f1"],
    )
    assert (given.preset, given.epochs, given.max_length, given.evals_per_epoch) == ("full", 1, 128, 4)
    assert given.freeze_word_embeddings is False and given.metric_for_best == "macro_f1"
    assert given.data == DatasetSpec("d.csv", text_column="body", seed=7)


def test_distill_flags_override_preset_and_student_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    target = "kdserve.train.distill.distill"
    base = ["distill", "--no-teacher", "--output", "o"]
    textcnn = _capture(monkeypatch, target, [*base, "--student", "textcnn"])
    assert (textcnn.student, textcnn.teacher, textcnn.no_teacher) == ("textcnn", None, True)
    assert (textcnn.epochs, textcnn.n_iter, textcnn.lr, textcnn.batch_size, textcnn.glove) == (3, 4, 1e-3, 64, True)
    assert textcnn.student_options == {} and textcnn.cache_dir == "runs/cache" and textcnn.vocab_size == 30_000
    given = _capture(
        monkeypatch,
        target,
        [*base, "--student", "bilstm", "--lr", "0.002", "--teacher-embeddings", "--static-channel"]
        + ["--student-option", "hidden_size=150", "--student-option", "dropout=0.2", "--vector-vocab", "100"]
        + ["--alpha", "linear:1:0:2", "--vocab-size", "5000", "--ema-decay", "0.99"],
    )
    assert given.lr == 0.002 and given.glove is False  # --teacher-embeddings replaces the preset's GloVe
    assert given.teacher_embeddings and given.static_channel and given.vector_vocab == 100
    assert given.student_options == {"hidden_size": 150, "dropout": 0.2}
    assert (given.alpha, given.vocab_size, given.ema_decay) == ("linear:1:0:2", 5000, 0.99)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["distill", "--student", "bilstm", "--no-teacher", "--output", "o", "--epochs", "0"], "epochs must be >= 1"),
        (["distill", "--student", "bilstm", "--output", "o"], "a teacher checkpoint is required"),
        (
            ["distill", "--student", "bilstm", "--no-teacher", "--output", "o", "--vocab-size", "9"],
            "vocab_size must be >= 10",
        ),
        (
            ["distill", "--student", "bilstm", "--no-teacher", "--output", "o", "--student-option", "wide"],
            "--student-option wants KEY=VALUE, got 'wide'",
        ),
        (["train", "teacher", "--output", "o", "--data-seed", "1", "--validation-fraction", "2"], "between 0 and 1"),
        (["export", "--checkpoint", "c", "--output", "o", "--quantize-ops", "Foo"], "quantize_ops ['Foo']"),
        (
            ["export", "--checkpoint", "c", "--output", "o", "--text-column", "t"],
            "--data is required with --text-column",
        ),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 0 and err.startswith("kdserve: error: ") and message in err, err


def test_a_badly_typed_flag_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--student", "bilstm", "--output", "o", "--epochs", "two"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --epochs: invalid int value: 'two'" in err and "Traceback" not in err


def _option_fields(cls: Any, overrides: Any = None) -> list[tuple[str, str | None]]:
    """(flag, help) of every field declared with option(), nested dataclasses included."""
    import dataclasses
    import typing

    from kdserve.core.options import METADATA_KEY

    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str | None]] = []
    for field in dataclasses.fields(cls):
        if METADATA_KEY not in field.metadata:
            continue
        spec = dataclasses.replace(field.metadata[METADATA_KEY], **(overrides or {}).get(field.name, {}))
        kind = next((a for a in typing.get_args(hints[field.name]) if a is not type(None)), hints[field.name])
        if dataclasses.is_dataclass(kind):
            out += _option_fields(kind, spec.nested)
        else:
            out.append((spec.flag or "--" + field.name.replace("_", "-"), spec.help))
    return out


@pytest.mark.parametrize(
    ("command", "config"),
    [
        (["train", "teacher"], "kdserve.train.teacher:TeacherConfig"),
        (["distill"], "kdserve.train.distill:DistillConfig"),
        (["export"], "kdserve.export.config:ExportConfig"),
        (["bench", "model"], "kdserve.bench.model_bench:ModelBenchConfig"),
        (["bench", "footprint"], "kdserve.bench.footprint:FootprintConfig"),
        (["bench", "ab"], "kdserve.bench.ab:ABConfig"),
    ],
)
def test_help_lists_every_option_field(
    command: list[str], config: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    fields = _option_fields(cls)
    assert len(fields) >= 8
    for flag, help_text in fields:
        assert f" {flag}" in text or (flag == "--bundles" and " bundles " in text), flag
        if help_text and "{default}" not in help_text:
            # argparse wraps long words at hyphens too: compare without any white space
            assert "".join(help_text.split()) in "".join(text.split()), flag


def test_bench_flags_build_their_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    ab = _capture(monkeypatch, "kdserve.bench.ab.run_ab", ["bench", "ab", "--target", "http://h:1"])
    assert (ab.limit, ab.agreement, ab.label_names, ab.timeout_s, ab.seed) == (1000, True, None, 30.0, 0)
    ab = _capture(
        monkeypatch,
        "kdserve.bench.ab.run_ab",
        ["bench", "ab", "--target", "http://h:1", "--limit", "0", "--no-agreement", "--label-names", "neg,pos"]
        + ["--timeout", "5", "--seed", "3"],
    )
    assert (ab.limit, ab.agreement, ab.label_names, ab.timeout_s, ab.seed) == (None, False, ["neg", "pos"], 5.0, 3)
    model = _capture(
        monkeypatch,
        "kdserve.bench.model_bench.run_model_bench",
        ["bench", "model", "a", "b", "--batch-sizes", "1,4", "--long-data", "none", "--no-torch"],
    )
    assert (model.bundles, model.batch_sizes, model.long_data, model.torch_reference) == (
        ["a", "b"],
        [1, 4],
        None,
        False,
    )
    assert model.short_data == "package:rotten_tomatoes" and model.iterations == 100
