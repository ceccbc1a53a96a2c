"""Baseline (b): LitServe serving the same ONNX bundle, with its dynamic batching.

``LitAPI.setup`` loads the session and tokenizer; requests are decoded one by one, batched by
LitServe (``--max-batch-size``, ``--batch-timeout`` seconds), run with one ``session.run`` per
batch and answered one by one. LitServe answers ``GET /ready`` (its health check, moved to the
path the harness polls) only once the worker has finished ``setup``.

Run: ``python -m kdserve.bench.baselines.litserve_app BUNDLE_DIR --port 8002``.
"""

# No `from __future__ import annotations`: LitServe builds its FastAPI endpoint from the real
# annotation objects of decode_request/encode_response, and strings would turn the body into a query.
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from pydantic import BaseModel

from kdserve.bench.baselines._args import parse


class ClassifyRequest(BaseModel):
    text: str


class BundleAPI(ls.LitAPI):
    def __init__(self, folder: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/classify")
        self.folder = Path(folder)

    def setup(self, device: str) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.manifest["max_length"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def decode_request(self, request: ClassifyRequest) -> str:
        # LitServe reads this annotation: the body is validated as ClassifyRequest (422 otherwise).
        return request.text

    def predict(self, texts: Any) -> list[dict[str, Any]]:
        """texts: one string (no batching) or a list of B strings -> B {label, score} dicts."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        encodings = self.tokenizer.encode_batch(batch)
        width = max(max(len(e.ids) for e in encodings), 1)
        ids = np.full((len(batch), width), self.manifest.get("pad_id", 0), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : max(len(encoding.ids), 1)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        logits = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = self.manifest["labels"]
        out = [{"label": labels[int(p.argmax())], "score": float(p.max())} for p in probs]
        return out[0] if single else out  # type: ignore[return-value]

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.manifest["name"], "results": [output]}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(
        __doc__.splitlines()[0],
        "bundle folder (default $BUNDLE)",
        argv,
        {
            "max-batch-size": (int, 32, "LitServe max_batch_size"),
            "batch-timeout": (float, 0.005, "LitServe batch_timeout, seconds"),
        },
    )
    api = BundleAPI(args.folder, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, healthcheck_path="/ready")
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False, num_api_servers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
