"""Checkpoint -> ONNX: the teacher through Optimum (a mean-pooling one through ``torch.onnx``) + ORTOptimizer
fusions, students through ``torch.onnx``.

Both graphs take int64 ``input_ids`` and ``attention_mask`` [batch, sequence] (+ all-zero
``token_type_ids`` for BERT teachers whose graph has them) and return float32 ``logits``
[batch, num_labels], with batch and sequence dynamic.

Students go through the TorchScript exporter by default (``dynamo=False``). torch 2.13
defaults to the dynamo exporter, which needs the extra ``onnxscript`` package; on the three
students both gave identical logits (max |diff| <= 3e-7 across batch 1-5, length 1-70), but
dynamo took 4-9 s per export against 0.1-0.3 s and names the dynamic axes ``s43``; the
TorchScript path also keeps the deprecation risk pinned with ``torch==2.13.0``.
``--exporter dynamo`` selects the other one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.errors import ConfigError
from kdserve.export.checks import CheckpointKindError, ExportError, Reference

STUDENT_CONFIG = "student_config.json"
TRAINING_CONFIGS = ("training_config.json", "distill_config.json")
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class CheckpointInfo:
    """What an export needs to know about a checkpoint folder before loading any weights."""

    folder: Path
    kind: str  # teacher | bilstm | transformer | textcnn
    labels: tuple[str, ...]
    trained_max_length: int | None  # from training_config.json / distill_config.json
    trained_data: dict[str, Any] | None  # the DatasetSpec the checkpoint was trained on
    max_positions: int | None  # a position-embedding limit on max_length (BERT-style models)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointKindError(f"{path}: unreadable JSON ({exc})") from None


def inspect_checkpoint(folder: str | Path) -> CheckpointInfo:
    """Detect the checkpoint's kind: ``student_config.json`` -> a student, a ``config.json``
    of a ``*ForSequenceClassification`` model -> a teacher. Raises CheckpointKindError otherwise."""
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointKindError(f"checkpoint folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointKindError(f"{folder} is not a folder: give a checkpoint folder (teacher or student)")
    max_positions: int | None = None
    if (folder / STUDENT_CONFIG).is_file():
        saved = _read_json(folder / STUDENT_CONFIG)
        kind = saved.get("kind") if isinstance(saved, dict) else None
        if kind not in ("bilstm", "transformer", "textcnn"):
            raise CheckpointKindError(f"{folder / STUDENT_CONFIG}: unknown student kind {kind!r}")
        if kind == "transformer":
            max_positions = int(saved.get("config", {}).get("max_position_embeddings", 512))
    elif (folder / "config.json").is_file():
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise CheckpointKindError(f"{folder / 'config.json'}: expected a JSON object")
        architectures = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
            raise CheckpointKindError(
                f"{folder} holds a {config.get('model_type', 'transformers')!r} model without a classification head "
                f"({', '.join(map(str, architectures)) or 'no architectures'}); "
                "fine-tune it with `kdserve train teacher` first"
            )
        kind = "teacher"
        max_positions = config.get("max_position_embeddings")
    else:
        raise CheckpointKindError(
            f"{folder} is not a checkpoint: no {STUDENT_CONFIG} (student) or config.json (teacher)"
        )
    for name in ("tokenizer.json", "labels.json"):
        if not (folder / name).is_file():
            raise CheckpointKindError(f"{folder} has no {name}: it was not written by kdserve train/distill")
    labels = _read_json(folder / "labels.json")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise CheckpointKindError(f"{folder / 'labels.json'}: expected a list of at least two label names")
    trained_max_length, trained_data = None, None
    for name in TRAINING_CONFIGS:
        if (folder / name).is_file():
            recorded = _read_json(folder / name)
            if isinstance(recorded, dict):
                trained_max_length = recorded.get("max_length")
                trained_data = recorded.get("data") if isinstance(recorded.get("data"), dict) else None
            break
    return CheckpointInfo(folder, kind, tuple(labels), trained_max_length, trained_data, max_positions)


def resolve_max_length(info: CheckpointInfo, requested: int | None) -> int:
    """The bundle's truncation length: the request, else what training used, else 128; never past
    the model's position embeddings. A length other than the training one is allowed (the
    parity check compares at the exported length) but logged."""
    max_length = requested or info.trained_max_length or DEFAULT_MAX_LENGTH
    if info.max_positions is not None and max_length > info.max_positions:
        raise ConfigError(
            f"max_length {max_length} exceeds the model's {info.max_positions} position embeddings ({info.folder})"
        )
    if info.trained_max_length and max_length != info.trained_max_length:
        logging.getLogger("kdserve.export").warning(
            "exporting with max_length %d; %s was trained with %d", max_length, info.folder, info.trained_max_length
        )
    return int(max_length)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter chatter (deprecation notices, tracer warnings, Optimum/transformers info);
    the parity check, not the warnings, is what says whether an export is right."""
    loggers = [logging.getLogger(n) for n in ("optimum", "transformers", "torch.onnx", "onnxruntime", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def checkpoint_pooling(folder: Path) -> str:
    """The pooling a teacher checkpoint's config.json records (kdserve.train.pooling): "cls" or "mean"."""
    from kdserve.train.pooling import CONFIG_KEY

    config = _read_json(folder / "config.json")
    return str(config.get(CONFIG_KEY) or "cls") if isinstance(config, dict) else "cls"


def _export_teacher_graph(folder: Path, raw: Path, opset: int, pooling: str) -> None:
    """Write the un-optimized ``raw/model.onnx`` (and its config.json, which ORTOptimizer reads):
    Optimum's ``main_export`` for the [CLS] head; for a mean-pooling teacher, which Optimum's
    text-classification task does not know, ``torch.onnx`` of the checkpoint's own forward with
    the same inputs and output (ORT's optimizer fuses its attention as it does Optimum's graph:
    6 Attention, 12 SkipLayerNormalization, 6 BiasGelu nodes for MiniLM)."""
    if pooling == "cls":
        from optimum.exporters.onnx import main_export

        main_export(
            str(folder),
            raw,
            task="text-classification",
            opset=opset,
            do_validation=False,
            library_name="transformers",
            local_files_only=True,
        )
        return
    import torch

    from kdserve.train.checkpoint import load_classifier

    model, _ = load_classifier(str(folder))
    model.eval()

    class LogitsOnly(torch.nn.Module):  # a traceable module whose one output is the logits tensor
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    # A padded row and a full one, so no trace specialises on "no padding".
    ids = (torch.arange(12).reshape(2, 6) % (int(model.config.vocab_size) - 1)) + 1
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "config.json", raw / "config.json")
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(),
            (ids, mask, torch.zeros_like(ids)),
            str(raw / "model.onnx"),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch_size"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def export_teacher(folder: Path, out_file: Path, opset: int, optimization: str) -> dict[str, Any]:
    """The teacher's graph (``_export_teacher_graph``), then ORTOptimizer at ``optimization``
    (O1/O2: Attention, SkipLayerNormalization, BiasGelu fusions for CPU). Returns export facts."""
    pooling = checkpoint_pooling(folder)
    with tempfile.TemporaryDirectory(dir=out_file.parent, prefix=".optimum-") as tmp:
        raw = Path(tmp) / "raw"
        try:
            with quiet():
                _export_teacher_graph(folder, raw, opset, pooling)
        except Exception as exc:  # Optimum raises ValueError/KeyError/RuntimeError for unsupported models
            tool = "Optimum" if pooling == "cls" else "torch.onnx"
            raise ExportError(f"{tool} cannot export {folder}: {_first_line(exc)}") from None
        path = raw / "model.onnx"
        if optimization != "none":
            from optimum.onnxruntime import ORTOptimizer
            from optimum.onnxruntime.configuration import OptimizationConfig

            level = int(optimization[1:])
            try:
                with quiet():
                    optimizer = ORTOptimizer.from_pretrained(raw)
                    optimizer.optimize(
                        OptimizationConfig(optimization_level=level, optimize_for_gpu=False), Path(tmp) / "opt"
                    )
            except Exception as exc:
                raise ExportError(f"ORTOptimizer {optimization} failed on {folder}: {_first_line(exc)}") from None
            path = Path(tmp) / "opt" / "model_optimized.onnx"
        extra_files = [p.name for p in path.parent.iterdir() if p.name.endswith((".onnx_data", ".onnx.data"))]
        if extra_files:
            raise ExportError(
                f"{folder}: the ONNX graph is over 2 GB (external data {extra_files}); bundles hold one file"
            )
        shutil.move(str(path), out_file)
    exporter = "optimum" if pooling == "cls" else "torch.onnx-torchscript"
    return {"exporter": exporter, "optimization": optimization, "pooling": pooling}


def load_student(folder: Path) -> Any:
    from kdserve.train.students import load_student as _load

    model, _ = _load(folder)
    return model.eval()


def export_student(model: Any, out_file: Path, opset: int, exporter: str) -> dict[str, Any]:
    """A student (eval mode) to ONNX with dynamic batch and sequence axes: ``torch.onnx.export``,
    or for ``exporter="auto"`` and a BiLSTM, the one-LSTM-op graph of export/bilstm_graph.py."""
    import torch

    if exporter == "auto":
        if model.kind == "bilstm":
            from kdserve.export.bilstm_graph import build_bilstm_graph

            try:
                return build_bilstm_graph(model, out_file, opset)
            except Exception as exc:  # onnx.checker's ValidationError, or an unexpected module layout
                raise ExportError(f"cannot build the BiLSTM graph: {_first_line(exc)}") from None
        exporter = "torchscript"

    vocab = int(model.config.vocab_size)
    length = min(8, int(getattr(model.config, "max_position_embeddings", 8)))
    # A padded row and a full one, so no trace specialises on "no padding".
    ids = (torch.arange(2 * length).reshape(2, length) % (vocab - 1)) + 1
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0
    ids = ids * mask
    names = ["input_ids", "attention_mask"]
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            if exporter == "torchscript":
                axes = {
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "logits": {0: "batch"},
                }
                torch.onnx.export(
                    model,
                    (ids, mask),
                    str(out_file),
                    dynamo=False,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_axes=axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
            else:
                from torch.export import Dim

                shapes = {
                    "input_ids": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC},
                    "attention_mask": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC},
                }
                program = torch.onnx.export(
                    model,
                    (ids, mask),
                    dynamo=True,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_shapes=shapes,
                    opset_version=opset,
                )
                program.save(str(out_file), external_data=False)  # type: ignore[union-attr]
    except Exception as exc:  # the exporters raise many types (TorchExportError, RuntimeError, ...)
        raise ExportError(
            f"torch.onnx ({exporter}) cannot export the {model.kind} student: {_first_line(exc)}"
        ) from None
    return {"exporter": f"torch.onnx-{exporter}", "optimization": "none"}


def bundle_tokenizer(folder: Path, out_file: Path) -> int:
    """Copy the checkpoint's ``tokenizer.json`` with padding and truncation cleared (sentence-
    transformers folders store Fixed(128) padding; BundleModel truncates to max_length itself).
    Returns the pad id."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:
        raise CheckpointKindError(f"{folder / 'tokenizer.json'}: unreadable tokenizer ({_first_line(exc)})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(out_file))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        for token in ("<pad>", "<PAD>"):
            pad_id = tokenizer.token_to_id(token)
            if pad_id is not None:
                break
    return int(pad_id or 0)


def teacher_reference(folder: Path, max_length: int) -> tuple[Reference, int]:
    """(texts -> (HF tokenizer ids, PyTorch logits), parameter count) for a teacher checkpoint."""
    import torch

    from kdserve.train.checkpoint import load_classifier
    from kdserve.train.common import pad_batch

    model, tokenizer = load_classifier(str(folder))
    model.eval()
    with_types = "token_type_ids" in tokenizer.model_input_names

    def reference(texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        batch = pad_batch(ids, tokenizer.pad_token_id, with_types)
        with torch.inference_mode():
            logits = model(**batch).logits.float().numpy()
        return [list(map(int, row)) for row in ids], logits

    return reference, int(sum(p.numel() for p in model.parameters()))


def student_reference(folder: Path, model: Any, max_length: int) -> tuple[Reference, int]:
    """(texts -> (training-tokenizer ids, PyTorch logits), parameter count) for a student."""
    import torch

    from kdserve.train.common import pad_batch
    from kdserve.train.student_tokenizers import encode_batch, load_tokenizer, pad_token_id
    from kdserve.train.students import count_parameters

    tokenizer = load_tokenizer(folder)
    pad = pad_token_id(tokenizer)

    def reference(texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        ids = encode_batch(tokenizer, texts, max_length)
        batch = pad_batch(ids, pad, with_token_types=False)
        with torch.inference_mode():
            logits = model(batch["input_ids"], batch["attention_mask"]).float().numpy()
        return ids, logits

    return reference, count_parameters(model)


def onnx_facts(path: Path) -> dict[str, Any]:
    """Input names (graph order), the default-domain opset and the node count of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {
        "inputs": [i.name for i in model.graph.input if i.name not in initializers],
        "outputs": [o.name for o in model.graph.output],
        "opset": int(opset),
        "nodes": len(model.graph.node),
    }
