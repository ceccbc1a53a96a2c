"""Baseline (c), teacher only: a Hugging Face ``transformers`` pipeline in FastAPI (PyTorch eager).

The path of least resistance from a fine-tuned checkpoint: ``pipeline("text-classification")``
on the checkpoint folder, called once per request from a plain ``def`` endpoint. Needs torch and
transformers (the ``train`` extra). Access logging is off, as in the other baselines.

Run: ``python -m kdserve.bench.baselines.hf_pipeline_app CHECKPOINT_DIR --port 8003``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from kdserve.bench.baselines._args import parse


class ClassifyRequest(BaseModel):
    text: str


def build_app(folder: str | Path, max_length: int) -> FastAPI:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
    name = Path(folder).name
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        best = classifier(request.text, truncation=True, max_length=max_length)[0]
        return {"model": name, "results": [{"label": best["label"], "score": float(best["score"])}]}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(
        __doc__.splitlines()[0],
        "checkpoint folder (default $CHECKPOINT)",
        argv,
        {"max-length": (int, 128, "truncate inputs to this many tokens, as the bundle does")},
    )
    uvicorn.run(
        build_app(args.folder, args.max_length), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
