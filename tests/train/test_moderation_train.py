"""Moderation training (issue #18): multi-label losses and dev scores on hand-computed inputs, a
tiny multi-label teacher trained, distilled into a BiLSTM, exported and reloaded (PyTorch and ONNX
Runtime agree), ``kdserve eval`` on multi-label data, and a Chinese teacher -> TextCNN end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError, DataError
from kdserve.core.metrics import Metrics
from kdserve.train.distill import DistillConfig, distill
from kdserve.train.evaluate import DevScores, score_dev
from kdserve.train.teacher import TeacherConfig, train_teacher

torch = pytest.importorskip("torch")

LABELS = ("praise", "complaint")


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --- losses and dev scores on fixed inputs -------------------------------------------------------


def test_multi_label_hard_loss_is_bce_against_soft_targets() -> None:
    from kdserve.train.losses import multi_label_hard_loss

    loss = multi_label_hard_loss(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.5, 1.0]]))
    # mean(-(0.5 log s(0) + 0.5 log(1 - s(0))), -log s(2)) = (log 2 + log(1 + e^-2)) / 2
    assert loss.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="must match the logits"):
        multi_label_hard_loss(torch.zeros(2, 2), torch.zeros(2))


def test_sigmoid_soft_loss_is_bce_at_temperature_times_t_squared() -> None:
    from kdserve.train.losses import sigmoid_soft_loss

    # T = 2: student 2/2 = 1 against the teacher's sigmoid(0 / 2) = 0.5, times T^2 = 4
    expected = 4 * 0.5 * (-math.log(_sigmoid(1)) - math.log(1 - _sigmoid(1)))
    assert sigmoid_soft_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), 2.0).item() == pytest.approx(expected, 1e-6)


def test_distillation_loss_multi_label_mixes_hard_and_soft_and_ignores_unlabelled_rows() -> None:
    from kdserve.train.losses import distillation_loss, logit_mse, multi_label_hard_loss

    student = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    teacher = torch.tensor([[2.0, -2.0], [0.0, 1.0]])
    gold = torch.tensor([[1.0, 0.25], [0.0, 0.0]])
    has = torch.tensor([True, False])
    got = distillation_loss(student, teacher, gold, 0.5, 1.0, "mse", has_label=has, multi_label=True)
    want = 0.5 * multi_label_hard_loss(student[:1], gold[:1]) + 0.5 * logit_mse(student, teacher)
    assert got.item() == pytest.approx(want.item(), abs=1e-7)
    with pytest.raises(ValueError, match="multi-label soft loss must be one of mse, bce"):
        distillation_loss(student, teacher, None, 0.0, 1.0, "kl", multi_label=True)
    with pytest.raises(ValueError, match="single-label soft loss"):
        distillation_loss(student, teacher, None, 0.0, 1.0, "bce")


def test_score_dev_multi_label_matches_hand_computed_values() -> None:
    logits = np.array([[2.0, -2.0], [-2.0, 2.0], [0.5, 0.5], [-1.0, -1.0]])
    targets = [(1.0, 0.0), (0.0, 1.0), (0.0, 1.0), (1.0, 0.0)]
    scores = score_dev(logits, targets, LABELS, "multi_label", metric_for_best="macro_auc")
    assert isinstance(scores, DevScores)
    # praise: positives score s(2), s(-1); negatives s(-2), s(0.5): 3 of 4 pairs ranked right
    assert scores.moderation["per_category"]["praise"]["roc_auc"] == pytest.approx(0.75)
    assert scores.macro_auc == pytest.approx((0.75 + 1.0) / 2)
    # praise AP: ranks pos, neg, pos, neg -> 0.5 * 1 + 0.5 * 2/3
    assert scores.macro_ap == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2)
    # at 0.5: rows 0 and 1 exact; praise F1 0.5 (1 of 2 predicted, 1 of 2 true), complaint F1 1
    assert scores.accuracy == 0.5 and scores.macro_f1 == pytest.approx(0.75) and scores.micro_f1 == pytest.approx(0.75)
    assert scores.threshold == 0.5 and scores.examples == 4
    # at 0.25, row 3's praise (s(-1) = 0.269) is caught too
    assert score_dev(logits, targets, LABELS, "multi_label", threshold=0.25).accuracy == 0.5


def test_score_dev_single_label_is_unchanged_unless_a_moderation_metric_picks() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    plain = score_dev(logits, [0, 1, 1], ("neg", "pos"))
    assert isinstance(plain, Metrics) and plain.accuracy == pytest.approx(2 / 3)
    ranked = score_dev(logits, [0, 1, 1], ("neg", "pos"), metric_for_best="macro_auc")
    assert isinstance(ranked, DevScores) and ranked.accuracy == pytest.approx(2 / 3)
    # pos: positive rows score softmax 0.73, 0.27 against the negative's 0.12 -> AUC 1
    assert ranked.moderation["per_category"]["pos"]["roc_auc"] == 1.0
    assert ranked.classification is not None and ranked.classification["confusion_matrix"] == [[1, 0], [1, 1]]


def test_configs_reject_a_soft_loss_of_the_wrong_problem_type(tmp_path: Path) -> None:
    multi = DatasetSpec("x.csv", problem_type="multi_label", label_columns=("a", "b"))
    with pytest.raises(ConfigError, match="multi_label student's soft loss must be one of mse, bce"):
        DistillConfig(None, multi, str(tmp_path), student="bilstm", no_teacher=True, soft="kl")
    with pytest.raises(ConfigError, match="single_label student's soft loss"):
        DistillConfig(None, DatasetSpec("x.csv"), str(tmp_path), student="bilstm", no_teacher=True, soft="bce")
    with pytest.raises(ConfigError, match="dev_threshold"):
        TeacherConfig(data=multi, output_dir=str(tmp_path), dev_threshold=1.0)


def test_cache_key_separates_problem_types_and_keeps_single_label_keys(tmp_path: Path) -> None:
    from kdserve.train.transfer import cache_key

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    single = cache_key(tmp_path, ["a"], 16)
    assert cache_key(tmp_path, ["a"], 16, "single_label") == single
    assert cache_key(tmp_path, ["a"], 16, "multi_label") != single


def test_cache_key_separates_a_bundle_run_rows_alone(tmp_path: Path) -> None:
    """The same model.onnx gives other logits when each text runs alone: another cache entry."""
    from kdserve.train.transfer import cache_key

    (tmp_path / "model.onnx").write_bytes(b"graph")
    plain = cache_key(tmp_path, ["a"], 16)
    (tmp_path / "manifest.json").write_text(json.dumps({"extra": {"rows_alone": False}}))
    assert cache_key(tmp_path, ["a"], 16) == plain
    (tmp_path / "manifest.json").write_text(json.dumps({"extra": {"rows_alone": True}}))
    assert cache_key(tmp_path, ["a"], 16) != plain
    (tmp_path / "manifest.json").write_text("[not a manifest")
    assert cache_key(tmp_path, ["a"], 16) == plain


# --- a tiny multi-label teacher, student, bundle ---------------------------------------------------


def write_multi_label_csv(path: Path, n: int = 320, seed: int = 0) -> Path:
    """praise words, complaint words, both or neither (words of the tiny BERT's vocabulary), with
    soft targets (annotator shares) on some rows and a little label noise."""
    rng = random.Random(seed)
    good, bad = ["great", "excellent", "wonderful"], ["boring", "dull", "awful"]
    subjects = ["the movie", "the film", "the plot", "the acting"]
    lines = ["text,praise,complaint"]
    for i in range(n):
        praise, complaint = i % 4 in (1, 3), i % 4 in (2, 3)
        words = [rng.choice(good)] * praise + [rng.choice(bad)] * complaint or ["quite"]
        soft = rng.choice([1.0, 1.0, 0.75])  # a quarter of the annotators disagreed on some rows
        p = soft if praise else 1 - soft if rng.random() < 0.2 else 0.0
        c = soft if complaint else 0.0
        lines.append(f"{rng.choice(subjects)} was {' and '.join(words)} .,{p},{c}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def multi_label_teacher(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSpec]:
    root = tmp_path_factory.mktemp("ml_teacher")
    spec = DatasetSpec(
        str(write_multi_label_csv(root / "ml.csv")),
        validation_fraction=0.25,
        problem_type="multi_label",
        label_columns=LABELS,
    )
    config = TeacherConfig(
        data=spec,
        output_dir=str(root / "teacher"),
        model=str(tiny_bert_dir),
        epochs=5,
        lr=3e-3,
        batch_size=16,
        max_length=32,
        seed=7,
        device="cpu",
        metric_for_best="macro_auc",
    )
    result = train_teacher(config)
    assert result["problem_type"] == "multi_label" and result["metric_for_best"] == "macro_auc"
    return root / "teacher", spec


def test_multi_label_teacher_trains_and_records_its_problem_type(multi_label_teacher: tuple[Path, Any]) -> None:
    folder, _ = multi_label_teacher
    metrics = json.loads((folder / "metrics.json").read_text())
    validation = metrics["validation"]
    assert validation["problem_type"] == "multi_label" and validation["threshold"] == 0.5
    assert validation["macro_auc"] > 0.9, metrics["history"]  # the words decide the labels
    assert set(validation["moderation"]["per_category"]) == set(LABELS)
    assert metrics["evaluations"][-1]["validation_macro_f1"] > 0.5
    assert json.loads((folder / "config.json").read_text())["problem_type"] == "multi_label_classification"
    saved = json.loads((folder / "training_config.json").read_text())
    assert saved["data"]["problem_type"] == "multi_label" and saved["data"]["label_columns"] == list(LABELS)


@pytest.mark.parametrize("soft", ["bce", "mse"])
def test_bilstm_distilled_from_a_multi_label_teacher_exports_and_matches_pytorch(
    multi_label_teacher: tuple[Path, DatasetSpec], tmp_path: Path, soft: str
) -> None:
    from kdserve.core.bundle import BundleModel
    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint
    from kdserve.train.common import pad_batch
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer
    from kdserve.train.students import load_student

    teacher, spec = multi_label_teacher
    result = distill(
        DistillConfig(
            teacher=str(teacher),
            data=spec,
            output_dir=str(tmp_path / "student"),
            student="bilstm",
            epochs=3,
            lr=3e-3,
            batch_size=32,
            max_length=32,
            augment="mask",
            n_iter=1,
            glove=False,
            student_options={"embedding_dim": 16, "hidden_size": 16, "classifier_hidden": 16},
            soft=soft,  # type: ignore[arg-type]
            temperature=2.0,
            alpha="constant:0.5",  # the dataset's soft targets through the hard (BCE) term
            cache_dir=str(tmp_path / "cache"),
            metric_for_best="macro_ap",
            seed=3,
            device="cpu",
        )
    )
    assert result["problem_type"] == "multi_label" and result["transfer_examples"] > result["train_examples"]
    assert result["validation"]["macro_auc"] > 0.85, result["history"]
    info = json.loads(next((tmp_path / "cache").glob("*/info.json")).read_text())
    assert info["problem_type"] == "multi_label"
    if soft == "mse":
        return  # export is the same path for either loss: checked once

    written = export_checkpoint(
        ExportConfig(
            checkpoint=str(tmp_path / "student"),
            output_dir=str(tmp_path / "bundles"),
            name="ml",
            parity_texts=16,
            calibration_examples=32,
            quant_preset="avx512_vnni",
            batch_size=16,
            policy="precision=0.9",
        )
    )
    fp32 = BundleModel(written[0])
    m = fp32.manifest
    assert m.problem_type == "multi_label" and len(m.calibration["temperatures"]) == 2
    assert set(m.policy["thresholds"]) == set(LABELS)
    texts = ["the movie was great .", "the plot was dull and awful .", "the film was quite .", "great and boring"]
    student, _ = load_student(tmp_path / "student")
    batch = pad_batch(encode_batch(load_tokenizer(tmp_path / "student"), texts, 32), 0, False)
    with torch.inference_mode():
        logits = student(batch["input_ids"], batch["attention_mask"]).double().numpy()
    expected = 1 / (1 + np.exp(-logits / np.array(m.calibration["temperatures"])))
    assert np.abs(fp32.probabilities(fp32.predict(texts)) - expected).max() < 1e-5


def test_no_teacher_baseline_trains_on_the_soft_targets(multi_label_teacher: tuple[Path, Any], tmp_path: Path) -> None:
    _, spec = multi_label_teacher
    result = distill(
        DistillConfig(
            teacher=None,
            data=spec,
            output_dir=str(tmp_path / "baseline"),
            student="textcnn",
            no_teacher=True,
            epochs=4,
            lr=3e-3,
            max_length=32,
            glove=False,
            student_options={"embedding_dim": 16, "num_filters": 8},
            seed=3,
            device="cpu",
        )
    )
    assert result["teacher"] is None and result["transfer_examples"] == result["train_examples"]
    assert result["validation"]["macro_auc"] > 0.8, result["history"]


def test_a_single_label_teacher_is_refused_for_multi_label_data(
    multi_label_teacher: tuple[Path, DatasetSpec], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from kdserve.train.checkpoint import load_classifier, save_classifier

    _, spec = multi_label_teacher
    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=LABELS)  # a softmax head, same names
    save_classifier(model, tokenizer, LABELS, tmp_path / "softmax")
    config = DistillConfig(
        teacher=str(tmp_path / "softmax"), data=spec, output_dir=str(tmp_path / "s"), student="bilstm", glove=False
    )
    with pytest.raises(DataError, match="is single_label but the data is multi_label"):
        distill(config)


def test_kdserve_eval_reports_moderation_metrics_on_multi_label_data(
    multi_label_teacher: tuple[Path, DatasetSpec], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdserve.cli import main

    teacher, spec = multi_label_teacher
    data = ["--data", spec.source, "--problem-type", "multi_label", "--label-columns", ",".join(LABELS)]
    data += ["--validation-fraction", "0.25"]
    out = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(teacher), *data, "--threshold", "0.4", "--output", str(out), "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "exact match" in printed and "praise" in printed
    saved = json.loads(out.read_text())
    assert saved["moderation"]["per_category"]["praise"]["threshold"] == 0.4
    assert saved["moderation"]["problem_type"] == "multi_label"
    assert main(["eval", "--checkpoint", str(teacher), *data, "--threshold", "policy"]) == 2
    assert "use it with --bundle" in capsys.readouterr().err


# --- Chinese: a teacher from a BertConfig, a TextCNN student, a bundle ---------------------------

ZH_POSITIVE = ["这部电影太好看了", "演员的表演很精彩", "剧情很棒值得一看", "我非常喜欢这个故事"]
ZH_NEGATIVE = ["这部电影太难看了", "剧情很无聊浪费时间", "演员很差真是糟糕", "我非常讨厌这个故事"]


@pytest.mark.slow
def test_chinese_teacher_to_textcnn_student_to_bundle(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from kdserve.core.bundle import BundleModel
    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint

    chars = sorted({c for text in ZH_POSITIVE + ZH_NEGATIVE for c in text})
    vocab_dir = tmp_path / "zh_bert"
    vocab_dir.mkdir()
    (vocab_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n")
    tokenizer = BertTokenizerFast(
        vocab_file=str(vocab_dir / "vocab.txt")
    )  # splits CJK characters, as bert-base-chinese
    assert tokenizer.tokenize(ZH_POSITIVE[0]) == list(ZH_POSITIVE[0])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(chars) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(vocab_dir, safe_serialization=True)
    tokenizer.save_pretrained(vocab_dir)

    rng = random.Random(0)
    rows = ["text,label"] + [
        f"{rng.choice(ZH_POSITIVE if i % 2 == 0 else ZH_NEGATIVE)},{'positive' if i % 2 == 0 else 'negative'}"
        for i in range(160)
    ]
    (tmp_path / "zh.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = DatasetSpec(str(tmp_path / "zh.csv"), validation_fraction=0.25)
    teacher = train_teacher(
        TeacherConfig(
            data=spec,
            output_dir=str(tmp_path / "teacher"),
            model=str(vocab_dir),
            epochs=10,
            lr=3e-3,
            batch_size=16,
            max_length=32,
            seed=7,
            device="cpu",
        )
    )
    assert teacher["validation"]["accuracy"] > 0.9, teacher["history"]
    student = distill(
        DistillConfig(
            teacher=str(tmp_path / "teacher"),
            data=spec,
            output_dir=str(tmp_path / "student"),
            student="textcnn",
            epochs=8,
            lr=1e-2,
            max_length=32,
            augment="mask",
            n_iter=1,
            glove=False,
            student_options={"embedding_dim": 16, "num_filters": 8},
            cache_dir=str(tmp_path / "cache"),
            seed=3,
            device="cpu",
        )
    )
    assert student["validation"]["accuracy"] > 0.9, student["history"]
    written = export_checkpoint(
        ExportConfig(
            checkpoint=str(tmp_path / "student"),
            output_dir=str(tmp_path / "bundles"),
            name="zh",
            quantization="none",
            parity_texts=16,
            batch_size=16,
        )
    )
    bundle = BundleModel(written[0])
    assert len(bundle.encode(["剧情很无聊"]).input_ids[0].nonzero()[0]) == 5  # one token a character
    predicted = bundle.predict(["我非常喜欢这部电影", "真是糟糕，浪费时间"]).argmax(axis=1)
    assert [bundle.labels[i] for i in predicted] == ["positive", "negative"]
