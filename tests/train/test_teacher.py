from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError
from kdserve.train.teacher import PRESETS, TeacherConfig, layerwise_param_groups, train_teacher
from tests.conftest import write_sentiment_csv

torch = pytest.importorskip("torch")


def _config(tmp_path: Path, model: Path, **overrides: object) -> TeacherConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_sentiment_csv(tmp_path / "sentiment.csv", 400)
    values: dict[str, object] = {
        "data": DatasetSpec(str(data), validation_fraction=0.25),
        "output_dir": str(tmp_path / "teacher"),
        "model": str(model),
        "epochs": 3,
        "lr": 3e-3,
        "batch_size": 16,
        "max_length": 32,
        "warmup_ratio": 0.1,
        "seed": 7,
        "device": "cpu",
    }
    values.update(overrides)
    return TeacherConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("lr", -1.0, "lr must be in"),
        ("head_lr", 0.0, "head_lr must be in"),
        ("head_lr", 2.0, "head_lr must be in"),
        ("max_length", 4, "max_length must be in"),
        ("layer_decay", 1.5, "layer_decay"),
        ("max_train_examples", 0, "max_train_examples"),
        ("metric_for_best", "loss", "unknown metric"),
        ("evals_per_epoch", 0, "evals_per_epoch must be >= 1"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TeacherConfig(data=DatasetSpec("x.csv"), output_dir=str(tmp_path), **{field: value})  # type: ignore[arg-type]


def test_presets_apply_and_overrides_win(tmp_path: Path) -> None:
    quick = TeacherConfig.from_preset("quick", data=DatasetSpec("x.csv"), output_dir=str(tmp_path), lr=None, epochs=5)
    assert quick.preset == "quick" and quick.epochs == 5
    assert quick.lr == PRESETS["quick"]["lr"] and quick.max_train_examples == PRESETS["quick"]["max_train_examples"]
    assert TeacherConfig.from_preset("full", data=DatasetSpec("x.csv"), output_dir="o").max_train_examples is None
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        TeacherConfig.from_preset("fast", data=DatasetSpec("x.csv"), output_dir="o")


def test_layerwise_learning_rates_follow_the_decay(tiny_bert_dir: Path) -> None:
    from kdserve.train.checkpoint import load_classifier

    model, _ = load_classifier(str(tiny_bert_dir), labels=("neg", "pos"))
    groups = layerwise_param_groups(model, lr=1.0, decay=0.5, weight_decay=0.01)
    lr_of = {}
    for group in groups:
        for param in group["params"]:
            lr_of[id(param)] = (group["lr"], group["weight_decay"])
    named = dict(model.named_parameters())
    # L = 2 layers: embeddings 0.5^2, layer 1 (index 0) 0.5^1, layer 2 (index 1) 0.5^0, head 1.
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == (0.25, 0.01)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == (0.5, 0.01)
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == (1.0, 0.01)
    assert lr_of[id(named["classifier.weight"])] == (1.0, 0.01)
    assert lr_of[id(named["bert.encoder.layer.1.output.LayerNorm.weight"])] == (1.0, 0.0)
    assert lr_of[id(named["classifier.bias"])] == (1.0, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(named)
    # --head-lr moves the pooler and classifier alone; the encoder keeps its decayed rates.
    fast_head = {
        id(p): g["lr"] for g in layerwise_param_groups(model, 1.0, 0.5, 0.01, head_lr=20.0) for p in g["params"]
    }
    assert fast_head[id(named["classifier.weight"])] == fast_head[id(named["bert.pooler.dense.bias"])] == 20.0
    assert fast_head[id(named["bert.encoder.layer.1.output.dense.weight"])] == 1.0
    assert fast_head[id(named["bert.embeddings.word_embeddings.weight"])] == 0.25


def test_tiny_teacher_learns_and_is_reproducible(tmp_path: Path, tiny_bert_dir: Path) -> None:
    first = train_teacher(_config(tmp_path / "a", tiny_bert_dir))
    second = train_teacher(_config(tmp_path / "b", tiny_bert_dir))
    assert first["validation"]["accuracy"] >= 0.95, first["history"]
    timing = "examples_per_s"
    assert {k: v for k, v in first["validation"].items() if k != timing} == {
        k: v for k, v in second["validation"].items() if k != timing
    }
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]
    out = tmp_path / "a" / "teacher"
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "labels.json",
        "metrics.json",
        "training_config.json",
    ]:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")), "weights must be safetensors, never pickle"
    assert json.loads((out / "labels.json").read_text()) == ["negative", "positive"]
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["lr"] == 3e-3 and saved["data"]["source"].endswith("sentiment.csv")


def test_evals_per_epoch_saves_the_best_pass(tmp_path: Path, tiny_bert_dir: Path) -> None:
    from kdserve.train.evaluate import evaluate_checkpoint

    once = train_teacher(_config(tmp_path / "a", tiny_bert_dir, epochs=2))
    twice = train_teacher(_config(tmp_path / "b", tiny_bert_dir, epochs=2, evals_per_epoch=2))
    assert [h["train_loss"] for h in twice["history"]] == [h["train_loss"] for h in once["history"]]
    ats = [e["at"] for e in twice["evaluations"]]
    assert len(ats) == 4 and ats[1] == 1.0 and ats[3] == 2.0 and 0 < ats[0] < 1 < ats[2] < 2
    scores = [e["validation_accuracy"] for e in twice["evaluations"]]
    assert twice["validation"]["accuracy"] == max(scores) and twice["best_at"] == ats[scores.index(max(scores))]
    saved = evaluate_checkpoint(
        tmp_path / "b" / "teacher",
        DatasetSpec(str(tmp_path / "b" / "sentiment.csv"), validation_fraction=0.25),
        max_length=32,
        device="cpu",
    )
    assert saved.metrics.accuracy == pytest.approx(max(scores))


def test_frozen_word_embeddings_do_not_move(tmp_path: Path, tiny_bert_dir: Path) -> None:
    from safetensors.torch import load_file

    train_teacher(_config(tmp_path, tiny_bert_dir, epochs=1, freeze_word_embeddings=True))
    before = load_file(str(tiny_bert_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "teacher" / "model.safetensors"))
    key = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert torch.equal(before[key], after["bert." + key.removeprefix("bert.")])
    pos = next(k for k in before if k.endswith("position_embeddings.weight"))
    assert not torch.equal(before[pos], after["bert." + pos.removeprefix("bert.")])


def test_max_train_examples_caps_the_training_set(tmp_path: Path, tiny_bert_dir: Path) -> None:
    result = train_teacher(_config(tmp_path, tiny_bert_dir, epochs=1, max_train_examples=50))
    assert result["train_examples"] == 50


def test_packaged_minilm_loads_as_a_classifier() -> None:
    """The one test on the real embedded teacher: it loads offline and classifies."""
    from kdserve.train.checkpoint import DEFAULT_TEACHER, load_classifier

    model, tokenizer = load_classifier(DEFAULT_TEACHER, labels=("a", "b", "c"))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_500_000
    enc = tokenizer(["a fine film", "dreadful"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_real_minilm_fine_tunes_on_packaged_data(tmp_path: Path) -> None:
    """The embedded teacher, the quick recipe on 1,500 packaged sentences: clearly above chance."""
    config = TeacherConfig.from_preset(
        "quick",
        data=DatasetSpec("package:rotten_tomatoes"),
        output_dir=str(tmp_path / "teacher"),
        max_train_examples=1500,
        epochs=1,
    )
    result = train_teacher(config)
    assert result["validation_examples"] == 852
    assert result["validation"]["accuracy"] >= 0.70, result["history"]
    assert result["pooling"] == "mean"  # "auto": the embedded MiniLM was pretrained through mean pooling
