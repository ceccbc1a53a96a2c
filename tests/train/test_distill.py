from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError, DataError
from kdserve.train.distill import DistillConfig, distill
from tests.conftest import write_sentiment_csv

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> tuple[Path, Path]:
    """A tiny BERT teacher fine-tuned on the separable sentiment CSV; returns (teacher, data)."""
    from kdserve.train.teacher import TeacherConfig, train_teacher

    root = tmp_path_factory.mktemp("distill")
    data = write_sentiment_csv(root / "sentiment.csv", 300)
    train_teacher(
        TeacherConfig(
            data=DatasetSpec(str(data), validation_fraction=0.2),
            output_dir=str(root / "teacher"),
            model=str(tiny_bert_dir),
            epochs=3,
            lr=3e-3,
            batch_size=16,
            max_length=32,
            seed=1,
            device="cpu",
        )
    )
    return root / "teacher", data


def _config(tmp_path: Path, teacher: Path | None, data: Path, **overrides: object) -> DistillConfig:
    values: dict[str, object] = {
        "teacher": None if teacher is None else str(teacher),
        "data": DatasetSpec(str(data), validation_fraction=0.2),
        "output_dir": str(tmp_path / "student"),
        "student": "bilstm",
        "epochs": 3,
        "lr": 3e-3,
        "batch_size": 32,
        "max_length": 32,
        "augment": "mask+ngram",
        "n_iter": 3,
        "glove": False,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
        "device": "cpu",
    }
    values.update(overrides)
    return DistillConfig(**values)  # type: ignore[arg-type]


def test_bilstm_distils_reproducibly_and_writes_a_checkpoint(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    teacher, data = tiny_teacher
    first = distill(_config(tmp_path / "a", teacher, data))
    second = distill(_config(tmp_path / "b", teacher, data))
    assert first["validation"]["accuracy"] >= 0.9, first["history"]
    assert first["transfer_examples"] > first["train_examples"]  # augmentation added copies
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]
    out = tmp_path / "a" / "student"
    for name in [
        "model.safetensors",
        "student_config.json",
        "tokenizer.json",
        "labels.json",
        "metrics.json",
        "distill_config.json",
    ]:
        assert (out / name).is_file(), name
    assert json.loads((out / "student_config.json").read_text())["kind"] == "bilstm"


def test_student_options_shape_the_saved_student(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    teacher, data = tiny_teacher
    result = distill(
        _config(
            tmp_path, teacher, data, student="textcnn", epochs=1, student_options={"num_filters": 7, "widths": [2, 3]}
        )
    )
    saved = json.loads((tmp_path / "student" / "student_config.json").read_text())["config"]
    assert (saved["num_filters"], saved["widths"]) == (7, [2, 3])
    vocab, classes = saved["vocab_size"], saved["num_classes"]
    # embedding + two convolutions (7 filters of widths 2 and 3) + the linear layer over 14 features
    dim = saved["embedding_dim"]
    assert result["parameters"] == vocab * dim + (2 * dim * 7 + 7) + (3 * dim * 7 + 7) + (14 * classes + classes)


def test_teacher_embeddings_initialise_a_word_level_student(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    from safetensors.numpy import load_file

    from kdserve.train.teacher_vectors import teacher_word_vectors

    teacher, data = tiny_teacher
    config = DistillConfig.from_preset(
        "quick",
        "textcnn",
        teacher=str(teacher),
        data=DatasetSpec(str(data), validation_fraction=0.2),
        output_dir=str(tmp_path / "student"),
        teacher_embeddings=True,
        epochs=1,
        n_iter=1,
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
        max_length=32,
    )
    assert config.glove is False  # the teacher's vectors replace the preset's GloVe
    result = distill(config)
    saved = json.loads((tmp_path / "student" / "student_config.json").read_text())["config"]
    assert saved["embedding_dim"] == 32  # the tiny teacher's width
    assert result["validation"]["accuracy"] >= 0.9
    # training moved the vectors, but the words the data never shows keep their teacher start
    from tokenizers import Tokenizer

    words = [
        Tokenizer.from_file(str(tmp_path / "student" / "tokenizer.json")).id_to_token(i)
        for i in range(saved["vocab_size"])
    ]
    start, _ = teacher_word_vectors(teacher, words, seed=config.seed)
    weights = load_file(str(tmp_path / "student" / "model.safetensors"))["embedding.weight"]
    assert weights.shape == start.shape and not weights[0].any()
    assert np.corrcoef(weights.ravel(), start.ravel())[0, 1] > 0.5


def test_word_vectors_of_another_width_are_a_clear_error(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    teacher, data = tiny_teacher
    with pytest.raises(ConfigError, match="embedding_dim 16 does not match the 32-d word vectors"):
        distill(
            _config(
                tmp_path,
                teacher,
                data,
                student="textcnn",
                epochs=1,
                n_iter=1,
                teacher_embeddings=True,
                student_options={"embedding_dim": 16},
            )
        )


def test_glove_initialises_a_word_level_student(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from kdserve.train.glove import load_glove

    teacher, data = tiny_teacher
    distill(_config(tmp_path, teacher, data, student="textcnn", epochs=1, glove=True, lr=1e-9))
    saved = json.loads((tmp_path / "student" / "student_config.json").read_text())["config"]
    assert saved["embedding_dim"] == 50
    tokenizer = Tokenizer.from_file(str(tmp_path / "student" / "tokenizer.json"))
    start, hits = load_glove([tokenizer.id_to_token(i) for i in range(saved["vocab_size"])], seed=3)
    assert hits > 10  # "movie", "film", "good"...: GloVe knows the tiny corpus's words
    weights = load_file(str(tmp_path / "student" / "model.safetensors"))["embedding.weight"]
    np.testing.assert_allclose(weights, start, atol=1e-5)  # lr ~0: still the GloVe start


def test_vector_vocab_gives_unseen_words_their_glove_vectors(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from kdserve.train.glove import glove_words, load_glove

    teacher, data = tiny_teacher
    plain = distill(_config(tmp_path / "plain", teacher, data, student="textcnn", epochs=1, n_iter=1, glove=True))
    wide = distill(
        _config(
            tmp_path / "wide",
            teacher,
            data,
            student="textcnn",
            epochs=1,
            n_iter=1,
            glove=True,
            vector_vocab=2000,
            lr=1e-9,
        )
    )
    before = Tokenizer.from_file(str(tmp_path / "plain" / "student" / "tokenizer.json"))
    after = Tokenizer.from_file(str(tmp_path / "wide" / "student" / "tokenizer.json"))
    # the training words keep their ids (the same texts train the same vocabulary first)
    assert all(after.token_to_id(w) == i for w, i in before.get_vocab().items())
    unseen = [w for w in glove_words(2000) if w.isalpha() and before.token_to_id(w) is None]
    assert len(unseen) > 1000 and all(after.token_to_id(w) is not None for w in unseen)
    assert before.encode(f"a {unseen[0]} film").ids[1] == 1  # [UNK] before, its own id after
    assert after.encode(f"a {unseen[0]} film").ids[1] == after.token_to_id(unseen[0])
    assert wide["parameters"] - plain["parameters"] == 50 * (after.get_vocab_size() - before.get_vocab_size())
    weights = load_file(str(tmp_path / "wide" / "student" / "model.safetensors"))["embedding.weight"]
    row = after.token_to_id(unseen[0])
    expected, _ = load_glove([unseen[0]] * 2)
    np.testing.assert_allclose(weights[row], expected[1], atol=1e-5)  # the pretrained vector, not a random one


@pytest.mark.parametrize(("schedule", "ends"), [("constant", [3e-3, 3e-3]), ("linear", [1.5e-3, 0.0])])
def test_lr_schedule(tmp_path: Path, tiny_teacher: tuple[Path, Path], schedule: str, ends: list[float]) -> None:
    teacher, data = tiny_teacher
    result = distill(_config(tmp_path, teacher, data, epochs=2, lr_schedule=schedule))
    assert [h["lr_at_end"] for h in result["history"]] == pytest.approx(ends, abs=1e-12)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_the_saved_epoch_is_the_best_by_the_chosen_metric(
    tmp_path: Path, tiny_teacher: tuple[Path, Path], metric: str
) -> None:
    teacher, data = tiny_teacher
    result = distill(_config(tmp_path, teacher, data, epochs=3, lr=1e-2, metric_for_best=metric))
    scores = [h[f"validation_{metric}"] for h in result["history"]]
    assert result["best_epoch"] == 1 + scores.index(max(scores)) and result["metric_for_best"] == metric
    assert result["validation"][metric] == max(scores)


def test_evals_per_epoch_keeps_the_best_pass_without_changing_training(
    tmp_path: Path, tiny_teacher: tuple[Path, Path]
) -> None:
    from kdserve.core.data import load_dataset
    from kdserve.train.distill import predict_student
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer
    from kdserve.train.students import load_student

    teacher, data = tiny_teacher
    once = distill(_config(tmp_path / "once", teacher, data, epochs=2, lr=1e-2))
    thrice = distill(_config(tmp_path / "thrice", teacher, data, epochs=2, lr=1e-2, evals_per_epoch=3))
    # evaluating mid-epoch neither consumes randomness nor touches the weights
    assert [h["train_loss"] for h in thrice["history"]] == [h["train_loss"] for h in once["history"]]
    assert [e["at"] for e in once["evaluations"]] == [1.0, 2.0]
    ats = [e["at"] for e in thrice["evaluations"]]
    assert len(ats) == 6 and ats == sorted(ats) and ats[2] == 1.0 and ats[5] == 2.0 and 0 < ats[0] < 1
    ends = [e["validation_accuracy"] for e in thrice["evaluations"] if e["at"] in (1.0, 2.0)]
    assert ends == [h["validation_accuracy"] for h in once["history"]]
    scores = [e["validation_accuracy"] for e in thrice["evaluations"]]
    assert thrice["validation"]["accuracy"] == max(scores)
    assert thrice["best_at"] == ats[scores.index(max(scores))] and thrice["best_epoch"] == -(-thrice["best_at"] // 1)
    # the folder holds the best pass's weights, not the last
    folder = tmp_path / "thrice" / "student"
    model, _ = load_student(folder)
    rows = load_dataset(DatasetSpec(str(data), validation_fraction=0.2)).validation
    logits = predict_student(
        model, encode_batch(load_tokenizer(folder), [t for t, _ in rows], 32), 64, torch.device("cpu")
    )
    assert float((logits.argmax(-1) == np.array([y for _, y in rows])).mean()) == pytest.approx(max(scores))


def test_weight_average_is_what_is_evaluated_and_saved_and_training_is_unchanged(
    tmp_path: Path, tiny_teacher: tuple[Path, Path]
) -> None:
    from safetensors.numpy import load_file

    teacher, data = tiny_teacher
    plain = distill(_config(tmp_path / "plain", teacher, data, epochs=2, lr=1e-2, evals_per_epoch=2))
    averaged = distill(_config(tmp_path / "ema", teacher, data, epochs=2, lr=1e-2, evals_per_epoch=2, ema_decay=0.9))
    assert [h["train_loss"] for h in averaged["history"]] == [h["train_loss"] for h in plain["history"]]
    # each pass keeps the raw weights' accuracy next to the average's: the same as the plain run's
    assert [e["raw_validation_accuracy"] for e in averaged["evaluations"]] == [
        e["validation_accuracy"] for e in plain["evaluations"]
    ]
    assert "raw_validation_accuracy" not in plain["evaluations"][0]
    saved = load_file(str(tmp_path / "ema" / "student" / "model.safetensors"))
    last = load_file(str(tmp_path / "plain" / "student" / "model.safetensors"))
    assert saved.keys() == last.keys()
    assert any(not np.array_equal(saved[k], last[k]) for k in saved)  # averaged, not the trained weights


def test_static_channel_keeps_one_copy_of_the_vectors_fixed(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    from safetensors.numpy import load_file

    from kdserve.train.glove import load_glove
    from kdserve.train.student_tokenizers import load_tokenizer

    teacher, data = tiny_teacher
    result = distill(_config(tmp_path, teacher, data, epochs=1, glove=True, static_channel=True, vector_vocab=300))
    folder = tmp_path / "student"
    config = json.loads((folder / "student_config.json").read_text())["config"]
    assert config["embedding_dim"] == 100 and result["validation"]["accuracy"] >= 0.75
    table = load_file(str(folder / "model.safetensors"))["embedding.weight"]
    tokenizer = load_tokenizer(folder)
    words = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
    start, _ = load_glove(words, seed=3)  # the run's seed: words GloVe lacks get the same random rows
    start[0] = 0.0  # the padding row
    np.testing.assert_array_equal(table[:, 50:], start)  # the fixed half: exactly the start, weight decay undone
    assert not np.allclose(table[:, :50], start)  # the tuned half moved
    with pytest.raises(ConfigError, match="static_channel needs a word-level student"):
        _config(tmp_path, teacher, data, static_channel=True)  # glove off: no vectors to keep


def test_augment_seed_fixes_the_transfer_set_while_the_seed_varies_training(
    tmp_path: Path, tiny_teacher: tuple[Path, Path]
) -> None:
    teacher, data = tiny_teacher
    first = distill(_config(tmp_path / "a", teacher, data, epochs=1, seed=3))
    second = distill(
        _config(
            tmp_path / "b", teacher, data, epochs=1, seed=4, augment_seed=3, cache_dir=str(tmp_path / "a" / "cache")
        )
    )
    assert len(list((tmp_path / "a" / "cache").iterdir())) == 1  # one transfer set, labelled once
    assert first["transfer_examples"] == second["transfer_examples"]
    assert first["history"][0]["train_loss"] != second["history"][0]["train_loss"]  # another init and order


def test_teacher_logits_come_from_the_cache_on_a_rerun(
    tmp_path: Path, tiny_teacher: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, data = tiny_teacher
    distill(_config(tmp_path, teacher, data, epochs=1))
    assert len(list((tmp_path / "cache").glob("*/logits.npy"))) == 1

    def no_teacher(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher ran although its logits were cached")

    monkeypatch.setattr("kdserve.train.checkpoint.load_classifier", no_teacher)
    distill(_config(tmp_path, teacher, data, epochs=1, output_dir=str(tmp_path / "again")))


def test_no_teacher_baseline_uses_gold_labels_only(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    _, data = tiny_teacher
    result = distill(_config(tmp_path, None, data, no_teacher=True))  # type: ignore[arg-type]
    assert result["teacher"] is None and result["transfer_examples"] == result["train_examples"]
    assert all(h["alpha"] == 1.0 for h in result["history"])


@pytest.mark.parametrize("student", ["textcnn", "transformer"])
def test_other_students_train(tmp_path: Path, tiny_teacher: tuple[Path, Path], student: str) -> None:
    teacher, data = tiny_teacher
    extra = {"intermediate_weight": 1.0, "lr": 1e-3} if student == "transformer" else {}
    result = distill(_config(tmp_path, teacher, data, student=student, student_layers=1, **extra))
    assert result["validation"]["accuracy"] >= 0.75, result["history"]


def test_teacher_with_other_labels_is_refused(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    teacher, _ = tiny_teacher
    other = tmp_path / "spam.csv"
    other.write_text("text,label\n" + "".join(f"msg {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    with pytest.raises(DataError, match="teacher labels"):
        distill(_config(tmp_path, teacher, other))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"student": "gru"}, "unknown student"),
        ({"augment": "everything"}, "unknown augment level"),
        ({"alpha": "sometimes"}, "bad alpha schedule"),
        ({"teacher_path": None}, "teacher checkpoint is required"),
        ({"intermediate_weight": 1.0}, "needs the transformer student"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"student_options": {"hidden": 8}}, "unknown bilstm student option.s. hidden; choose from"),
        ({"student_options": {"hidden_size": 0}}, "hidden_size"),
        ({"student_options": {"embedding_dim": 100}, "glove": True}, "GloVe vectors are 50-d"),
        ({"student": "transformer", "student_options": {"hidden_size": 64}}, "initialised from the teacher"),
        ({"teacher_embeddings": True, "glove": True}, "teacher_embeddings replaces GloVe"),
        ({"teacher_embeddings": True, "student": "transformer"}, "teacher_embeddings is for the BiLSTM and TextCNN"),
        ({"vector_vocab": -1, "glove": True}, "vector_vocab must be >= 0"),
        ({"evals_per_epoch": 0}, "evals_per_epoch must be >= 1"),
        ({"ema_decay": 1.0}, "ema_decay must be in"),
        ({"vector_vocab": 100}, "vector_vocab needs a word-level student with pretrained vectors"),
        ({"vector_vocab": 100, "student": "transformer"}, "vector_vocab needs a word-level student"),
    ],
)
def test_config_validation(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        teacher = overrides.pop("teacher_path", tmp_path)
        _config(tmp_path, teacher, tmp_path / "x.csv", **overrides)  # type: ignore[arg-type]


@pytest.mark.slow
def test_real_teacher_to_bilstm_on_packaged_sentences_beats_chance(tmp_path: Path) -> None:
    """MiniLM fine-tuned on 800 real sentences, distilled into a GloVe BiLSTM: above chance, reproducible."""
    from kdserve.train.teacher import TeacherConfig, train_teacher

    spec = DatasetSpec("package:rotten_tomatoes")
    train_teacher(
        TeacherConfig.from_preset(
            "quick", data=spec, output_dir=str(tmp_path / "teacher"), max_train_examples=800, epochs=1
        )
    )
    runs = [
        distill(
            DistillConfig.from_preset(
                "quick",
                "bilstm",
                teacher=str(tmp_path / "teacher"),
                data=spec,
                output_dir=str(tmp_path / name),
                max_train_examples=800,
                n_iter=2,
                augment="mask+ngram",
                cache_dir=str(tmp_path / "cache"),
            )
        )
        for name in ("a", "b")
    ]
    assert runs[0]["validation"]["accuracy"] > 0.55, runs[0]["history"]
    assert runs[0]["validation"]["accuracy"] == runs[1]["validation"]["accuracy"]


def test_an_exported_teacher_bundle_labels_like_the_checkpoint(tmp_path: Path, tiny_teacher: tuple[Path, Path]) -> None:
    """ONNX Runtime labelling (the fast path on a CPU) gives the PyTorch teacher's logits."""
    import numpy as np

    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint
    from kdserve.train.transfer import teacher_logits

    teacher, data = tiny_teacher
    fp32 = export_checkpoint(
        ExportConfig(
            checkpoint=str(teacher),
            output_dir=str(tmp_path / "bundles"),
            name="t",
            quantization="none",
            data=DatasetSpec(str(data), validation_fraction=0.2),
        )
    )[0]
    texts = ["the movie was very good .", "the plot was dull", "", "the acting was awful . " * 20]
    from_torch = teacher_logits(teacher, texts, 32, None, device="cpu")
    from_onnx = teacher_logits(fp32, texts, 32, str(tmp_path / "cache"))
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4, rtol=0)
    assert len(list((tmp_path / "cache").glob("*/logits.npy"))) == 1
    with pytest.raises(Exception, match="max_length 32 != 16"):
        teacher_logits(fp32, texts, 16, None)


def test_no_teacher_preset_needs_no_teacher_argument(tmp_path: Path) -> None:
    """`kdserve distill --no-teacher` passes teacher=None, which the preset must keep (it was dropped once)."""
    config = DistillConfig.from_preset(
        "quick", "bilstm", data=DatasetSpec("x.csv"), output_dir=str(tmp_path), no_teacher=True, teacher=None
    )
    assert config.teacher is None and config.no_teacher
    with pytest.raises(ConfigError, match="a teacher checkpoint is required"):
        DistillConfig.from_preset("quick", "bilstm", data=DatasetSpec("x.csv"), output_dir=str(tmp_path))
