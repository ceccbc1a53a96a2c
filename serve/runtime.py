"""Model runtime, with no HTTP in it: find bundles, pick execution providers, load one ONNX Runtime
session per bundle (``kdserve.core.bundle.BundleModel``) and warm it up at several shapes.

Warm-up matters because ONNX Runtime allocates and plans per input shape: the first request of a
new shape pays for it. Running every (batch size, length) pair once before ``/ready`` says 200
keeps that cost off real requests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdserve.core.bundle import MANIFEST_FILE, BundleError, BundleModel, Encoded, Manifest, read_manifest, verify_bundle

log = logging.getLogger("kdserve.serve.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def discover(root: Path, names: Sequence[str] = ()) -> dict[str, Path]:
    """Bundle name -> folder for every subfolder of ``root`` with a manifest (or just ``names``).

    The name is the folder name; ``names`` that are not there raise ``BundleError`` listing what is."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundles folder not found: {root}")
    found = {}
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        if (p / MANIFEST_FILE).is_file():
            found[p.name] = p
        elif not p.name.startswith("."):
            # a half-copied bundle beside valid ones would otherwise vanish without a trace
            log.warning("skipping %s: no %s, not a bundle", p, MANIFEST_FILE)
    if (root / MANIFEST_FILE).is_file():
        found.setdefault(root.name, root)  # --bundles pointing at one bundle works too
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise BundleError(f"{root}: no bundle named {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        found = {n: found[n] for n in names}
    if not found:
        raise BundleError(f"{root}: no bundles (subfolders with a {MANIFEST_FILE})")
    return found


def verify_all(folders: dict[str, Path]) -> dict[str, Manifest]:
    """Verify every bundle's checksums; the first mismatch raises ``BundleError`` naming the file."""
    manifests = {}
    for name, folder in folders.items():
        manifest = verify_bundle(folder)
        if manifest.name != name:
            log.info("bundle folder %s holds model %r; serving it as %r", folder, manifest.name, name)
        manifests[name] = manifest
    return manifests


def resolve_providers(device: str) -> list[str]:
    """Execution providers for ``device``. CUDA without onnxruntime-gpu (or its provider) falls
    back to the CPU with a warning rather than failing: the service stays up, slower."""
    import onnxruntime as ort

    if device == "cuda":
        available = ort.get_available_providers()
        if CUDA in available:
            return [CUDA, CPU]
        log.warning(
            "device cuda requested but onnxruntime %s offers no %s (available: %s); install the "
            "gpu extra (onnxruntime-gpu) on a machine with a GPU. Falling back to the CPU.",
            ort.__version__,
            CUDA,
            ", ".join(available),
        )
        return [CPU]
    if device != "cpu":
        raise BundleError(f"device must be cpu or cuda, got {device!r}")
    return [CPU]


@dataclass
class LoadedModel:
    """A bundle loaded and warmed. ``status``: loading, warming, ready or failed."""

    name: str
    folder: Path
    model: BundleModel
    providers: list[str]
    intra_op_threads: int = 0  # as the session got it (0: ONNX Runtime's default)
    workers: int = 1  # batch worker threads the server gives it
    status: str = "loading"
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    warmup_shapes: list[tuple[int, int]] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def checksum(self) -> str:
        return self.manifest.checksum


#: model kinds whose graphs gain nothing from a second intra-op thread on a CPU
SEQUENTIAL_KINDS = frozenset({"bilstm"})
#: the most batch workers auto gives one model
MAX_AUTO_WORKERS = 4


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallelism_for(
    model_kind: str, intra_op_threads: int = 0, workers: int = 0, device: str = "cpu"
) -> tuple[int, int]:
    """(intra-op threads, batch workers) for one model; a non-zero request is kept as given.

    Auto (0) for a BiLSTM on the CPU: one intra-op thread, since its LSTM op runs one time step
    after another on matrices too small to split (a second thread only adds hand-offs), and one
    batch worker per core (at most ``MAX_AUTO_WORKERS``), so that batches run side by side
    instead. Anything else: ONNX Runtime's default threads (0: one per core) and one worker."""
    sequential = device == "cpu" and model_kind in SEQUENTIAL_KINDS
    threads = intra_op_threads or (1 if sequential else 0)
    if workers == 0:
        workers = min(cpu_cores(), MAX_AUTO_WORKERS) if sequential and threads == 1 else 1
    return threads, workers


def load_model(
    name: str,
    folder: Path,
    *,
    device: str = "cpu",
    intra_op_threads: int = 0,
    workers: int = 0,
    graph_optimization: str = "all",
    verify: bool = True,
    intra_op_spinning: bool = True,
) -> LoadedModel:
    """Open one bundle; logs when the session did not get the provider it asked for.
    ``intra_op_threads`` and ``workers`` 0 are auto (``parallelism_for``)."""
    providers = resolve_providers(device)
    started = time.perf_counter()
    threads, workers = parallelism_for(read_manifest(folder).model_kind, intra_op_threads, workers, device)
    model = BundleModel(
        folder,
        providers=providers,
        intra_op_threads=threads,
        graph_optimization=graph_optimization,
        verify=verify,
        intra_op_spinning=intra_op_spinning,
    )
    got = model.providers()
    if providers[0] == CUDA and CUDA not in got:
        # ORT creates a CPU-only session when CUDA libraries or the GPU are missing at run time
        log.warning("model %s: CUDA provider could not start (no GPU or CUDA libraries?); running on the CPU", name)
    loaded = LoadedModel(name, Path(folder), model, got, threads, workers, load_seconds=time.perf_counter() - started)
    log.info(
        "model %s loaded from %s (%s, %s, providers %s, intra-op threads %s, batch workers %d) in %.2f s",
        name,
        folder,
        model.manifest.model_kind,
        model.manifest.precision,
        ",".join(got),
        threads or "default",
        workers,
        loaded.load_seconds,
    )
    return loaded


def warm_up(loaded: LoadedModel, batch_sizes: Sequence[int], lengths: Sequence[int]) -> None:
    """Run every (batch size, length) shape once; lengths above the model's limit are capped."""
    loaded.status = "warming"
    manifest = loaded.manifest
    started = time.perf_counter()
    shapes = sorted({(b, min(n, manifest.max_length)) for b in batch_sizes for n in lengths})
    for batch, length in shapes:
        # pad ids, fully unmasked: valid token ids for any vocabulary, and the real shape
        ids = np.full((batch, length), manifest.pad_id, dtype=np.int64)
        mask = np.ones((batch, length), dtype=np.int64)
        loaded.model.run(Encoded(ids, mask, [length] * batch, [False] * batch))
    loaded.warmup_shapes = shapes
    loaded.warmup_seconds = time.perf_counter() - started
    loaded.status = "ready"
    log.info("model %s warmed up at %d shapes in %.2f s", loaded.name, len(shapes), loaded.warmup_seconds)
