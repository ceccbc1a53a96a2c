"""`kdserve export` / `kdserve eval --bundle` from the command line: exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kdserve.cli import main
from kdserve.core.bundle import read_manifest
from tests.conftest import REPO

FAST = ["--parity-texts", "8", "--calibration-examples", "16"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def _one_line_error(err: str) -> None:
    assert err.startswith("kdserve: error: ") and "\n" not in err and "Traceback" not in err, err


def test_export_cli_writes_both_bundles(
    student_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(
        capsys,
        "export",
        "--checkpoint",
        str(student_dirs["bilstm"]),
        "--output",
        str(out),
        "--name",
        "lstm",
        "--quant-preset",
        "avx2",
        *FAST,
    )
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert (
        lines[0].startswith(f"wrote {out / 'lstm-fp32'}: bilstm fp32, ")
        and "validation accuracy 100.00% on 20" in lines[0]
    )
    assert "parity max |diff|" in lines[0]
    assert lines[1].startswith(f"wrote {out / 'lstm-int8'}: bilstm int8, ") and "+0.00 points vs fp32" in lines[1]
    quant = read_manifest(out / "lstm-int8").extra["quantization"]
    assert (quant["preset"], quant["reduce_range"], quant["per_channel"]) == ("avx2", True, True)

    # Existing output without --overwrite: a clear refusal, nothing touched.
    code, _, err = _run(
        capsys, "export", "--checkpoint", str(student_dirs["bilstm"]), "--output", str(out), "--name", "lstm", *FAST
    )
    assert code == 1
    _one_line_error(err)
    assert f"{out / 'lstm-fp32'} already exists (pass --overwrite to replace it)" in err


def _folders(tmp_path: Path, tiny_bert_dir: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    broken = tmp_path / "broken_student"
    broken.mkdir()
    (broken / "student_config.json").write_text("{not json")
    return {
        "missing": (tmp_path / "nope", f"checkpoint folder not found: {tmp_path / 'nope'}"),
        "file": (tmp_path / "file.txt", "is not a folder: give a checkpoint folder"),
        "empty": (tmp_path / "empty", "is not a checkpoint: no student_config.json (student) or config.json (teacher)"),
        "no head": (tiny_bert_dir, "'bert' model without a classification head (BertModel); fine-tune it"),
        "bad json": (broken, "student_config.json: unreadable JSON"),
    }


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no head", "bad json"])
def test_export_cli_rejects_what_is_not_a_checkpoint(
    case: str, tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, needle = _folders(tmp_path, tiny_bert_dir)[case]
    code, _, err = _run(capsys, "export", "--checkpoint", str(folder), "--output", str(tmp_path / "out"))
    assert code == 1
    _one_line_error(err)
    assert needle in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-accuracy-drop", "500"], "max_accuracy_drop must be in [-100, 100] points, got 500.0"),
        (["--parity-tolerance", "0"], "parity_tolerance must be in (0, 1), got 0.0"),
        (["--quantize-ops", "MatMul,Softmax"], "quantize_ops ['MatMul', 'Softmax'] must be a non-empty subset"),
        (["--opset", "9"], "opset must be an integer in [14, 21], got 9"),
        (["--name", "a/b"], "name 'a/b' must be letters, digits"),
    ],
)
def test_export_cli_bad_option_values_exit_2(
    args: list[str], needle: str, student_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "export", "--checkpoint", str(student_dirs["textcnn"]), "--output", str(tmp_path), *args
    )
    assert code == 2
    _one_line_error(err)
    assert needle in err


def test_export_cli_unknown_choice_is_an_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--checkpoint", str(tmp_path), "--output", str(tmp_path), "--quantize", "int4"])
    assert info.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_export_cli_data_whose_labels_the_model_lacks(
    student_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "spam.csv"
    data.write_text("text,label\n" + "".join(f"msg {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    code, _, err = _run(
        capsys,
        "export",
        "--checkpoint",
        str(student_dirs["textcnn"]),
        "--output",
        str(tmp_path / "o"),
        "--data",
        str(data),
    )
    assert code == 1
    _one_line_error(err)
    assert "dataset label(s) 'ham', 'spam' not among the model's labels (negative, positive)" in err


def test_export_cli_recorded_data_that_is_gone(
    student_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "student"
    shutil.copytree(student_dirs["textcnn"], moved)
    recorded = json.loads((moved / "distill_config.json").read_text())
    recorded["data"]["source"] = str(tmp_path / "gone.csv")
    (moved / "distill_config.json").write_text(json.dumps(recorded))
    code, _, err = _run(capsys, "export", "--checkpoint", str(moved), "--output", str(tmp_path / "o"))
    assert code == 2
    _one_line_error(err)
    assert f"was trained on {tmp_path / 'gone.csv'}, which is not found from here; pass --data" in err


def test_eval_bundle_scores_like_the_manifest(
    bundles: dict[str, list[Path]], sentiment_data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundles["transformer"][1]
    code, stdout, err = _run(
        capsys, "eval", "--bundle", str(bundle), "--data", sentiment_data.source, "--output", str(tmp_path / "m.json")
    )
    assert code == 0, err
    assert stdout.splitlines()[0] == f"{bundle} (int8) on {read_manifest(bundle).metrics['int8']['data']} [validation]"
    assert "accuracy 100.00%  macro-F1 100.00%  examples 20" in stdout
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == 1.0


def test_eval_bundle_that_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "eval", "--bundle", str(tmp_path))
    assert code == 1
    _one_line_error(err)
    assert f"{tmp_path} is not a bundle: no manifest.json" in err


BLOCK_HEAVY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'optimum', 'onnxscript'}:
            raise ImportError(f'{name} is blocked in this test')
        return None
sys.meta_path.insert(0, Block())
"""


def test_cli_registration_imports_only_the_standard_library() -> None:
    code = (
        "import sys, kdserve.export.cli; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'onnxruntime', 'optimum', 'transformers', 'numpy', 'onnx', 'tokenizers'}); print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bundle_side_runs_without_torch(bundles: dict[str, list[Path]], sentiment_data: Any) -> None:
    """verify, load, predict and evaluate a bundle with torch, transformers and optimum unimportable."""
    code = (
        BLOCK_HEAVY
        + f"""
from kdserve.core.data import DatasetSpec
from kdserve.core.bundle import BundleModel, verify_bundle
from kdserve.export.evaluate import evaluate_bundle
import kdserve.export.checks, kdserve.export.config, kdserve.export.triton, kdserve.export.card
verify_bundle({str(bundles["bilstm"][1])!r})
print(BundleModel({str(bundles["bilstm"][1])!r}).predict(['good']).shape)
print(evaluate_bundle({str(bundles["bilstm"][1])!r}, DatasetSpec({sentiment_data.source!r})).metrics.accuracy)
"""
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(1,", "2)", "1.0"]


def test_the_summary_names_why_an_int8_attempt_was_refused() -> None:
    from kdserve.export.cli import _refusal

    accuracy = {"precision": "int8", "drop_points": 1.26, "auc_drop_points": 0.1, "max_auc_drop_points": 0.5}
    ranking = {"precision": "int8", "drop_points": 0.09, "auc_drop_points": 0.67, "max_auc_drop_points": 0.5}
    assert _refusal(accuracy) == "int8 refused at -1.26 points"
    assert _refusal({**ranking, "auc_drop_label": "grief"}) == "int8 refused: lost 0.67 ROC-AUC points on 'grief'"
    assert _refusal({"precision": "int8", "drop_points": 2.0}) == "int8 refused at -2.00 points"  # older manifests
