"""Export with calibration and a policy: a tiny multi-label TextCNN trained with BCE, exported,
calibrated and reloaded gives the same calibrated scores in PyTorch and ONNX Runtime; single-label
students get one temperature; --calibrate none and an unknown benign label."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel
from kdserve.core.errors import DataError
from tests.export.conftest import MAX_LENGTH, _record_training

ML_LABELS = ("hate", "threat", "neither")


def _multi_label_csv(path: Path, n: int = 240) -> Path:
    """hate words, threat words, both or neither, with a few label-noise rows so scores are not 0/1."""
    rng = random.Random(0)
    hate, threat, calm = ["vermin", "scum", "filth"], ["kill", "hurt", "destroy"], ["lovely", "sunny", "nice"]
    lines = ["text,hate,threat,neither"]
    for i in range(n):
        h, t = i % 4 in (1, 3), i % 4 in (2, 3)
        words = [rng.choice(hate)] * h + [rng.choice(threat)] * t + [rng.choice(calm)] * (not (h or t))
        if rng.random() < 0.1:  # noise: the label says otherwise
            h = not h
        lines.append(f"you are {' and '.join(words)} today,{int(h)},{int(t)},{int(not (h or t))}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def multi_label_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import torch

    from kdserve.core.data import DatasetSpec, load_dataset
    from kdserve.train.common import pad_batch
    from kdserve.train.student_tokenizers import encode_batch, save_tokenizer, train_word_tokenizer
    from kdserve.train.students import TextCNNConfig, TextCNNStudent, save_student

    root = tmp_path_factory.mktemp("ml")
    spec = DatasetSpec(
        str(_multi_label_csv(root / "ml.csv")), problem_type="multi_label", label_columns=("hate", "threat", "neither")
    )
    data = load_dataset(spec)
    assert data.labels == ML_LABELS
    tokenizer = train_word_tokenizer([t for t, _ in data.train], vocab_size=100)
    config = TextCNNConfig(tokenizer.get_vocab_size(), len(ML_LABELS), embedding_dim=16, num_filters=8, dropout=0.0)
    torch.manual_seed(0)
    model = TextCNNStudent(config)
    batch = pad_batch(encode_batch(tokenizer, [t for t, _ in data.train], MAX_LENGTH), 0, False)
    targets = torch.tensor([y for _, y in data.train], dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(80):  # one sigmoid per category, binary cross-entropy
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(batch["input_ids"], batch["attention_mask"]), targets
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = root / "student"
    save_student(model.eval(), config, folder)
    save_tokenizer(tokenizer, folder)
    (folder / "labels.json").write_text(json.dumps(list(ML_LABELS)))
    _record_training(folder, spec, "distill_config.json")
    return folder, data


def test_multi_label_export_calibrates_and_matches_pytorch(
    multi_label_student: tuple[Path, Any], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    import torch

    from kdserve.export.pipeline import export_checkpoint
    from kdserve.train.common import pad_batch
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer
    from kdserve.train.students import load_student

    folder, data = multi_label_student
    written = export_checkpoint(export_config(folder, tmp_path, name="ml", policy="precision=0.9"))
    fp32, int8 = (BundleModel(path) for path in written)
    m = fp32.manifest
    assert m.problem_type == "multi_label"
    assert len(m.calibration["temperatures"]) == 3 and m.calibration["fit_rows"] + m.calibration["report_rows"] == 24
    assert m.policy["benign_labels"] == ["neither"] and set(m.policy["thresholds"]) == {"hate", "threat"}
    assert set(m.metrics["fp32"]["moderation"]) == set(ML_LABELS)
    # int8's temperatures were fitted on the int8 model's own logits
    assert int8.manifest.calibration["temperatures"] != [] and int8.manifest.policy["target"] == "precision=0.9"
    card = (written[0] / "README.md").read_text()
    assert "## Calibration" in card and "## Default policy" in card and "recall at precision 0.90" in card
    assert "a perfectly calibrated model with these scores would show" in card

    texts = [t for t, _ in data.validation]
    student, _ = load_student(folder)
    batch = pad_batch(encode_batch(load_tokenizer(folder), texts, MAX_LENGTH), 0, False)
    with torch.inference_mode():
        torch_logits = student(batch["input_ids"], batch["attention_mask"]).double().numpy()
    temperatures = np.array(m.calibration["temperatures"])
    expected = 1 / (1 + np.exp(-torch_logits / temperatures))
    assert np.abs(fp32.probabilities(fp32.predict(texts)) - expected).max() < 1e-5
    flags = fp32.flags(fp32.probabilities(fp32.predict(["you are vermin and kill today"])))
    assert "neither" not in flags[0]


def test_single_label_student_gets_one_temperature_and_a_policy(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    written = export_checkpoint(
        export_config(student_dirs["textcnn"], tmp_path, name="s", policy="f1", benign_labels=("negative",))
    )
    model = BundleModel(written[0])
    m = model.manifest
    assert m.problem_type == "single_label" and len(m.calibration["temperatures"]) == 1
    assert list(m.policy["thresholds"]) == ["positive"]
    logits = model.predict(["the movie was great ."])
    shifted = logits.astype(np.float64) / m.calibration["temperatures"][0]
    assert np.allclose(model.probabilities(logits), np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True))


def test_calibrate_none_and_unknown_benign_label(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    written = export_checkpoint(export_config(student_dirs["textcnn"], tmp_path, name="n", calibrate="none"))
    m = BundleModel(written[0]).manifest
    assert m.calibration["temperatures"] == [1.0] and m.policy == {}
    assert m.calibration["ece_before"] == m.calibration["ece_after"]
    with pytest.raises(DataError, match="'NOT' are not labels"):
        export_checkpoint(
            export_config(
                student_dirs["textcnn"],
                tmp_path / "x",
                name="b",
                policy="f1",
                benign_labels=("NOT",),
                quantization="none",
            )
        )


def test_a_temperature_that_worsens_held_out_ece_is_called_out() -> None:
    from kdserve.core.bundle import Manifest
    from kdserve.export.card import calibration_warning, moderation_section

    worse = {"method": "temperature", "temperatures": [1.21], "fit_rows": 662, "report_rows": 662}
    worse.update(ece_before=0.0273, ece_after=0.0409, brier_before=0.243, brier_after=0.2433)
    assert calibration_warning(worse) == (
        "the fitted temperature made the held-out ECE worse (0.0273 -> 0.0409 on 662 rows): the fit half and the"
        " report half disagree by more than the temperature corrects; score calibration on more validation rows,"
        " or export with --calibrate none"
    )
    assert calibration_warning({**worse, "ece_after": 0.0200}) is None  # it helped
    assert calibration_warning({**worse, "ece_after": 0.0273}) is None  # no change is no warning
    assert calibration_warning({**worse, "method": "none"}) is None  # --calibrate none: nothing was fitted
    manifest = Manifest(
        name="m",
        model_kind="bilstm",
        precision="fp32",
        labels=["NOT", "OFF"],
        max_length=8,
        inputs=["input_ids"],
        calibration=worse,
    )
    card = "\n".join(moderation_section(manifest))
    assert "**Note:** The fitted temperature made the held-out ECE worse (0.0273 -> 0.0409 on 662 rows)" in card
