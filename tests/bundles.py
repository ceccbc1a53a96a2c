"""Tiny real bundles for serve and benchmark tests, built without the export stage.

A word-level TextCNN or BiLSTM with tiny dimensions is trained for a few dozen steps on a
separable synthetic sentiment set (so its answers are meaningful: "great" -> positive), exported
with ``torch.onnx.export`` and written as a bundle through ``kdserve.core.bundle``. Building one takes
about a second; every call with the same arguments gives byte-identical weights.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

GOOD = ["good", "great", "excellent", "wonderful"]
BAD = ["bad", "awful", "terrible", "boring", "dull"]
SUBJECTS = ["the movie", "the film", "the plot", "the acting"]


def sentiment_texts(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """n (text, label) pairs, label 1 = positive, alternating classes."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        adverb = rng.choice(["very ", "really ", "quite ", ""])
        rows.append((f"{rng.choice(SUBJECTS)} was {adverb}{rng.choice(GOOD if positive else BAD)} .", int(positive)))
    return rows


def build_tiny_bundle(
    folder: Path,
    name: str = "tiny-textcnn",
    kind: str = "textcnn",
    labels: tuple[str, ...] = ("negative", "positive"),
    seed: int = 0,
    train_steps: int = 60,
    max_length: int = 32,
    precision: str = "fp32",
    model_kind: str | None = None,
) -> Path:
    """Train, export and write a bundle into ``folder`` (created); returns ``folder``.

    ``train_steps=0`` leaves the random initialisation (seeded). With two labels the model is
    trained to put text with a positive word on ``labels[1]``. ``model_kind="teacher"`` labels the
    bundle as a teacher in its manifest (the network stays tiny): routing tests need one.
    """
    import torch

    from kdserve.core.bundle import LABELS_FILE, MODEL_FILE, Manifest, write_manifest
    from kdserve.train.common import pad_batch
    from kdserve.train.student_tokenizers import encode_batch, save_tokenizer, train_word_tokenizer
    from kdserve.train.students import BiLSTMConfig, BiLSTMStudent, TextCNNConfig, TextCNNStudent, count_parameters

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = sentiment_texts(200, seed)
    tokenizer = train_word_tokenizer([t for t, _ in rows], vocab_size=100)
    torch.manual_seed(seed)
    vocab = tokenizer.get_vocab_size()
    model: torch.nn.Module
    if kind == "textcnn":
        model = TextCNNStudent(TextCNNConfig(vocab, len(labels), embedding_dim=16, num_filters=8, dropout=0.0))
    elif kind == "bilstm":
        model = BiLSTMStudent(
            BiLSTMConfig(vocab, len(labels), embedding_dim=16, hidden_size=8, classifier_hidden=16, dropout=0.0)
        )
    else:
        raise ValueError(f"tiny bundles are textcnn or bilstm, not {kind!r}")
    ids = encode_batch(tokenizer, [t for t, _ in rows], max_length)
    targets = torch.tensor([y % len(labels) for _, y in rows])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(train_steps):
        index = [(step * 32 + j) % len(rows) for j in range(32)]
        batch = pad_batch([ids[i] for i in index], 0, with_token_types=False)
        loss = torch.nn.functional.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    example = pad_batch(ids[:2], 0, with_token_types=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and LSTM tracer notices
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(folder / MODEL_FILE),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    save_tokenizer(tokenizer, folder)
    (folder / LABELS_FILE).write_text(json.dumps(list(labels)) + "\n")
    (folder / "README.md").write_text(f"# {name}\n\nA tiny test bundle.\n")
    manifest = Manifest(
        name=name,
        model_kind=model_kind or kind,
        precision=precision,
        labels=list(labels),
        max_length=max_length,
        inputs=["input_ids", "attention_mask"],
        parameters=count_parameters(model),
        source_checkpoint="tests/bundles.py",
        created="2026-01-01T00:00:00Z",
        metrics={precision: {"accuracy": 1.0, "macro_f1": 1.0, "examples": 0, "data": "synthetic"}},
    )
    write_manifest(folder, manifest)
    return folder


def write_batch_dependent_graph(folder: Path) -> None:
    """model.onnx: logits = mean over tokens of DequantizeLinear(DynamicQuantizeLinear(table[ids])),
    the activation quantization of a dynamic int8 graph: its scale comes from the whole batch. The
    manifest is left as it was (re-hash it with ``write_manifest`` after)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()

    table = np.random.default_rng(0).normal(size=(vocab, 2)).astype(np.float32)
    table[5] *= 40.0  # one token with a large activation stretches its batchmates' scale
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),
        helper.make_node("DynamicQuantizeLinear", ["emb"], ["q", "scale", "zero"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["deq"]),
        helper.make_node("ReduceMean", ["deq"], ["logits"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "batch-dependent",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "model.onnx").write_bytes(model.SerializeToString())
