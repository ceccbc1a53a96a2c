"""Multi-teacher distillation: the combination math, label checks, per-teacher caching, and a real
distillation from two tiny bundle teachers with production texts added to the transfer set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kdserve.cli import main
from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError, DataError
from kdserve.train.distill import DistillConfig, distill
from kdserve.train.multi_teacher import PROB_FLOOR, check_teachers, combine_logits, label_transfer
from tests.bundles import build_tiny_bundle
from tests.conftest import write_sentiment_csv

LN3 = math.log(3.0)
# teacher A: softmax [0.25, 0.75]; teacher B: softmax [0.5, 0.5]
A = np.array([[0.0, LN3]], dtype=np.float32)
B = np.array([[1.0, 1.0]], dtype=np.float32)


def test_probability_combination_is_the_weighted_mixture_in_log_space() -> None:
    combined = combine_logits([A, B], [0.7, 0.3], "prob")
    expected = np.log([[0.7 * 0.25 + 0.3 * 0.5, 0.7 * 0.75 + 0.3 * 0.5]])  # log [0.325, 0.675]
    np.testing.assert_allclose(combined, expected, rtol=1e-6)
    assert combined.dtype == np.float32
    # weights are normalised: 7:3 is 0.7:0.3; no weights means equal ones
    np.testing.assert_allclose(combine_logits([A, B], [7, 3], "prob"), combined, rtol=1e-6)
    np.testing.assert_allclose(combine_logits([A, B]), np.log([[0.375, 0.625]]), rtol=1e-6)
    # softmax of the stored target is the mixture itself: what the KL/CE soft losses train on
    probs = np.exp(combined) / np.exp(combined).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, [[0.325, 0.675]], rtol=1e-6)


def test_logit_combination_and_the_probability_floor() -> None:
    np.testing.assert_allclose(combine_logits([A, B], [0.7, 0.3], "logit"), [[0.3, 0.7 * LN3 + 0.3]], rtol=1e-6)
    certain = np.array([[0.0, 200.0]], dtype=np.float32)  # softmax underflows to exactly 0 for column 0
    floored = combine_logits([certain, certain], None, "prob")
    assert floored[0, 0] == np.float32(math.log(PROB_FLOOR)) and floored[0, 1] == 0.0


def test_multi_label_probability_combination_averages_sigmoids() -> None:
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, sigmoid(1) = 0.7311
    combined = combine_logits([A, B], [0.7, 0.3], "prob", multi_label=True)
    p = np.array([[0.7 * 0.5 + 0.3 / (1 + math.exp(-1)), 0.7 * 0.75 + 0.3 / (1 + math.exp(-1))]])
    np.testing.assert_allclose(combined, np.log(p / (1 - p)), rtol=1e-6)


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1.0], "1 teacher weights for 2 teachers"), ([1.0, 0.0], "must be positive"), ([1.0, -2.0], "positive")],
)
def test_bad_weights(weights: list[float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        combine_logits([A, B], weights)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("teachers")
    return {
        "bilstm": build_tiny_bundle(root / "bilstm", name="bilstm", kind="bilstm", seed=1),
        "textcnn": build_tiny_bundle(root / "textcnn", name="textcnn", kind="textcnn", seed=0),
        # the same labels in the other column order: columns must be matched by name
        "swapped": build_tiny_bundle(root / "swapped", name="swapped", seed=2, labels=("positive", "negative")),
        "spam": build_tiny_bundle(root / "spam", name="spam", seed=1, labels=("ham", "spam")),
        "data": write_sentiment_csv(root / "sentiment.csv", 300),
    }


def _config(tmp_path: Path, teacher: object, data: Path, **overrides: object) -> DistillConfig:
    values: dict[str, object] = {
        "teacher": teacher,
        "data": DatasetSpec(str(data), validation_fraction=0.2),
        "output_dir": str(tmp_path / "student"),
        "student": "bilstm",
        "epochs": 2,
        "lr": 3e-3,
        "batch_size": 32,
        "max_length": 32,
        "augment": "mask+ngram",
        "n_iter": 1,
        "threads": 1,
        "glove": False,
        "soft": "kl",
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
        "device": "cpu",
        "student_options": {"embedding_dim": 16, "hidden_size": 16, "classifier_hidden": 16},
    }
    values.update(overrides)
    return DistillConfig(**values)  # type: ignore[arg-type]


def test_teachers_with_other_labels_are_named(teachers: dict[str, Path]) -> None:
    with pytest.raises(
        DataError,
        match=r"teachers disagree on labels: .*bilstm has \['negative', 'positive'\], .*spam has \['ham', 'spam'\]",
    ):
        check_teachers([str(teachers["bilstm"]), str(teachers["spam"])], ["negative", "positive"])
    assert check_teachers([str(teachers["bilstm"]), str(teachers["swapped"])], ["negative", "positive"]) == [
        ("negative", "positive"),
        ("positive", "negative"),
    ]


def test_config_keeps_one_teacher_a_string_and_checks_several(tmp_path: Path, teachers: dict[str, Path]) -> None:
    data = teachers["data"]
    assert _config(tmp_path, ["a"], data).teacher == "a"
    config = _config(tmp_path, ["a", "b"], data, teacher_weights=[0.7, 0.3])
    assert (config.teachers, config.primary_teacher, config.teacher_combine) == (["a", "b"], "a", "prob")
    for overrides, message in [
        ({"teacher_weights": [1.0]}, "1 teacher weights for 2 teachers"),
        ({"teacher_bundle": "x"}, "teacher_bundle applies to a single teacher"),
        ({"teacher_combine": "max"}, "teacher_combine must be prob or logit"),
        ({"teacher": ["a", "a"]}, "a teacher is given twice"),
        ({"teacher": None, "no_teacher": True, "transfer_data": ["f.txt"]}, "need a teacher"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, overrides.pop("teacher", ["a", "b"]), data, **overrides)


def test_two_teachers_label_once_each_and_combine_by_label_name(
    tmp_path: Path, teachers: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdserve.core.bundle import BundleModel

    texts = ["the movie was great .", "the plot was dull .", "really awful acting"]
    pair = [str(teachers["bilstm"]), str(teachers["swapped"])]
    config = _config(tmp_path, pair, teachers["data"], teacher_weights=[0.7, 0.3])
    targets = label_transfer(config, texts, ["negative", "positive"])
    first = BundleModel(teachers["bilstm"]).predict(texts)
    second = BundleModel(teachers["swapped"]).predict(texts)[:, [1, 0]]  # its columns are positive, negative
    np.testing.assert_allclose(targets, combine_logits([first, second], [0.7, 0.3], "prob"), rtol=1e-6)
    assert len(list((tmp_path / "cache").glob("*/logits.npy"))) == 2  # one cache entry per teacher

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a teacher ran although its logits were cached")

    monkeypatch.setattr(BundleModel, "predict", no_run)
    logit = label_transfer(
        _config(tmp_path, pair, teachers["data"], teacher_combine="logit"), texts, ["negative", "positive"]
    )
    np.testing.assert_allclose(logit, (first + second) / 2, rtol=1e-6)


def test_distil_from_two_bundles_with_production_texts(tmp_path: Path, teachers: dict[str, Path]) -> None:
    production = tmp_path / "production.txt"
    production.write_text(
        "the acting was truly wonderful .\nthe film was dull\nthe film was dull\nthe plot was bad .\n"
    )
    result = distill(
        _config(
            tmp_path,
            [str(teachers["bilstm"]), str(teachers["textcnn"])],
            teachers["data"],
            teacher_weights=[0.7, 0.3],
            transfer_data=[str(production)],
            epochs=8,
            lr=1e-2,
        )
    )
    # the tiny teachers are imperfect on this data (a few %), so the student is held to a looser bar
    assert result["validation"]["accuracy"] >= 0.75, result["history"]
    added = result["transfer_data"]["added"]
    assert result["transfer_data"]["read"] == 4 and result["transfer_data"]["duplicates"] == 4 - added
    # the augmented transfer set of the 240 training rows, then the new production texts
    from kdserve.core.data import load_dataset
    from kdserve.train.distill import _transfer_set

    config = _config(tmp_path, str(teachers["bilstm"]), teachers["data"])
    assert result["transfer_examples"] == len(_transfer_set(config, load_dataset(config.data).train)) + added > 240
    saved = json.loads((tmp_path / "student" / "distill_config.json").read_text())
    assert saved["teacher"] == [str(teachers["bilstm"]), str(teachers["textcnn"])]
    assert saved["teacher_weights"] == [0.7, 0.3]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, teachers: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student"
    base = ["distill", "--student", "bilstm", "--data", str(teachers["data"]), "--output", str(out), "--no-glove"]
    base += ["--cache-dir", str(tmp_path / "cache"), "--max-length", "32"]
    code, err = _run(capsys, *base, "--teacher", str(teachers["bilstm"]), "--teacher", str(teachers["spam"]))
    assert code == 1 and err.startswith("kdserve: error: teachers disagree on labels") and "\n" not in err

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _run(capsys, *base, "--teacher", str(teachers["bilstm"]), "--transfer-data", str(empty))
    assert code == 1 and err == f"kdserve: error: {empty}: no texts (empty file)"

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\nnot json\n')
    code, err = _run(capsys, *base, "--teacher", str(teachers["bilstm"]), "--transfer-data", str(broken))
    assert code == 1 and err.startswith(f"kdserve: error: {broken} line 2: invalid JSON")

    code, err = _run(capsys, *base, "--teacher", "a", "--teacher", "b", "--teacher-weights", "1")
    assert code == 2 and "1 teacher weights for 2 teachers" in err
    assert not out.exists() and not (tmp_path / "cache").exists()
