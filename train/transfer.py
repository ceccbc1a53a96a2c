"""Teacher labelling of a transfer set, cached on disk.

Labelling a million augmented sentences with a 6-layer teacher is the slowest step of
distillation on a CPU, and every student and every rerun needs the same logits. So the
teacher runs once per (teacher weights, texts, max length, problem type) and the logits are kept
as a plain ``.npy`` (never a pickle) under a key that changes when any of them changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdserve.core.errors import KdserveError

log = logging.getLogger("kdserve.train")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(
    teacher_folder: str | Path, texts: Sequence[str], max_length: int, problem_type: str = "single_label"
) -> str:
    """sha256 over the teacher's weight files (or an ONNX bundle's model.onnx), the exact texts in
    order, max_length and, for multi-label, the problem type: per-category sigmoid logits must
    never be read back as a softmax teacher's. Single-label keys are unchanged, so existing caches
    stay valid."""
    folder = Path(teacher_folder)
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("model.onnx"))
    if not weights:
        raise KdserveError(f"{folder}: no *.safetensors weights or model.onnx; is it a teacher checkpoint or bundle?")
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.name.encode() + b"\0" + _file_digest(path).encode())
    digest.update(f"max_length={max_length}\0".encode())
    if problem_type != "single_label":
        digest.update(f"problem_type={problem_type}\0".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def teacher_logits(
    teacher_folder: str | Path,
    texts: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    device: str = "auto",
    problem_type: str = "single_label",
) -> np.ndarray:
    """Teacher logits [N, C] for ``texts``, from the cache when it holds them.

    ``teacher_folder`` is a checkpoint (PyTorch) or an exported bundle (ONNX Runtime, columns in
    the bundle's label order, which is the checkpoint's): on a CPU the bundle labels several
    times faster, and with an fp32 bundle the logits match PyTorch within the export's parity
    tolerance.
    """
    key = cache_key(teacher_folder, texts, max_length, problem_type) if cache_dir else ""
    target = Path(cache_dir) / key if cache_dir else None
    if target is not None and (target / "logits.npy").is_file():
        logits = np.load(target / "logits.npy", allow_pickle=False)
        if logits.shape[0] == len(texts):
            log.info("teacher logits for %d texts from cache %s", len(texts), target)
            return logits
        log.warning("cache %s holds %d rows for %d texts; relabelling", target, logits.shape[0], len(texts))

    start = time.perf_counter()
    if (Path(teacher_folder) / "manifest.json").is_file():
        from kdserve.core.bundle import BundleModel

        bundle = BundleModel(teacher_folder)
        if bundle.manifest.max_length != max_length:
            raise KdserveError(f"{teacher_folder}: bundle max_length {bundle.manifest.max_length} != {max_length}")
        logits = bundle.predict(list(texts), batch_size)
        rate = len(texts) / max(time.perf_counter() - start, 1e-9)
    else:
        from kdserve.train.checkpoint import load_classifier
        from kdserve.train.common import resolve_device
        from kdserve.train.evaluate import predict_logits

        model, tokenizer = load_classifier(str(teacher_folder))
        torch_device = resolve_device(device)
        model.to(torch_device)
        logits, rate = predict_logits(model, tokenizer, texts, max_length, batch_size, torch_device)
    log.info("teacher labelled %d texts in %.0f s (%.0f texts/s)", len(texts), time.perf_counter() - start, rate)
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "logits.tmp.npy"
        np.save(tmp, logits, allow_pickle=False)
        tmp.replace(target / "logits.npy")
        (target / "info.json").write_text(
            json.dumps(
                {
                    "teacher": str(teacher_folder),
                    "texts": len(texts),
                    "max_length": max_length,
                    "problem_type": problem_type,
                }
            )
            + "\n"
        )
    return logits
