"""Baseline (a): the FastAPI app the ONNX Runtime and FastAPI docs lead a user to write.

One ``InferenceSession`` with default options, the bundle's ``tokenizers`` tokenizer, and one
``session.run`` per request in a plain ``def`` endpoint (FastAPI runs it in its thread pool, as
its docs advise for blocking code). No batching, no admission control. Access logging is off so
that the comparison is about serving, not about writing log lines.

Run: ``python -m kdserve.bench.baselines.naive_fastapi BUNDLE_DIR --port 8001 [--intra-op-threads N]``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer

from kdserve.bench.baselines._args import parse


class ClassifyRequest(BaseModel):
    text: str


def build_app(folder: str | Path, intra_op_threads: int = 0) -> FastAPI:
    """``intra_op_threads`` 0 keeps ONNX Runtime's default, as the docs' example does; another
    number is for asking how much of kdserve's margin a thread setting alone would give."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    labels: list[str] = manifest["labels"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=manifest["max_length"])
    input_names = [i.name for i in session.get_inputs()]
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        encoding = tokenizer.encode(request.text)
        ids = np.array([encoding.ids or [manifest.get("pad_id", 0)]], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        logits = session.run(None, {name: feeds[name] for name in input_names})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return {"model": manifest["name"], "results": [{"label": labels[best], "score": float(probs[best])}]}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(
        __doc__.splitlines()[0],
        "bundle folder (default $BUNDLE)",
        argv,
        {"intra-op-threads": (int, 0, "ONNX Runtime intra-op threads (default 0: its default)")},
    )
    uvicorn.run(
        build_app(args.folder, args.intra_op_threads),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
