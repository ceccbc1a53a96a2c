"""Reliability test helpers: an app served by a real uvicorn (the test keeps the app, to inject
faults into it), a bundle whose ONNX graph fails at run time for long inputs, and the settings
that keep requests queued.

The fixtures that start servers from settings are reused from tests/serve/conftest.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from tests.serve.conftest import serving  # noqa: F401 (re-exported for the reliability tests)


def hold_queue() -> dict[str, Any]:
    """Settings that make every request wait ``max_wait_ms`` for company, even a lone one: tests that
    need requests to sit in the queue (to batch them together or to fill it) pass these."""
    from kdserve.serve.config import Settings

    # adaptive_wait runs a lone request at once; it is a newer setting, absent from older trees
    return {"adaptive_wait": False} if "adaptive_wait" in Settings.model_fields else {}


def error_of(response: Any) -> tuple[int, str, str]:
    """(status, code, message) of an error answer, checking its shape: ``{"error": {"code", "message"}}``,
    or under /v2 the Open Inference Protocol's ``{"error": message, "code"}``."""
    body = response.json()
    if isinstance(body.get("error"), str):
        assert set(body) == {"error", "code"}, body
        return response.status_code, body["code"], body["error"]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


def build_fragile_bundle(source: Path, folder: Path, ok_tokens: int = 8) -> Path:
    """A copy of the bundle at ``source`` whose model.onnx answers inputs of up to ``ok_tokens``
    tokens and fails inside ONNX Runtime for longer ones: logits = Gather(table[ok_tokens + 1, C],
    tokens per row), and a Gather index past the table is a run-time error. A real graph failing for
    some input shapes, with a consistent manifest (checksums match)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kdserve.core.bundle import MODEL_FILE, read_manifest, write_manifest

    shutil.copytree(source, folder)
    manifest = read_manifest(folder)
    classes = len(manifest.labels)
    table = np.zeros((ok_tokens + 1, classes), dtype=np.float32)
    table[:, 0] = np.linspace(2.0, 1.0, ok_tokens + 1)  # always labels[0], more surely the shorter the text
    nodes = [
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], dtype=np.int64))),
        helper.make_node("ReduceSum", ["attention_mask", "axes"], ["tokens"], keepdims=0),
        helper.make_node("Gather", ["table", "tokens"], ["logits"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "fragile",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (folder / MODEL_FILE).write_bytes(model.SerializeToString())
    write_manifest(folder, manifest)  # re-hash: a consistent bundle, broken only at run time
    return folder


def v2_body(texts: list[str]) -> dict[str, Any]:
    """An Open Inference Protocol request with one BYTES input ``text``, as JSON."""
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
