"""Teacher labelling of a transfer set, cached on disk.

Labelling a million augmented sentences with a 6-layer teacher is the slowest step of
distillation on a CPU, and every student and every rerun needs the same logits. So the
teacher runs once per (teacher weights, texts, max length, problem type) and the logits are kept
as a plain ``.npy`` (never a pickle) under a key that changes when any of them changes.

A bundle teacher labels on one of three engines (``LABEL_ENGINES``): ``inline`` (this process,
the default), ``local`` (worker processes, one a core) or ``ray`` (Ray Data actors, a local
instance or the cluster at ``RAY_ADDRESS``). The last two are ``kdserve.bulk.label``'s: labelling
is an engine below training, the same one ``kdserve classify`` backfills with. All three run
exactly ``BundleModel.predict``'s batches, so the logits are identical and the cache key leaves
the engine out: a transfer set labelled on a cluster is reused by a laptop rerun, and back. A
teacher whose rows run alone also keeps every text's logits (``kdserve.train.row_store``), so a
new transfer set labels only the texts no earlier set had.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdserve.core.errors import ConfigError, KdserveError

if TYPE_CHECKING:
    from _hashlib import HASH  # what hashlib.sha256() returns

log = logging.getLogger("kdserve.train")

#: batches per ``predict_logits`` call when a bar is shown: a bar step every few seconds on a CPU
CHUNK_BATCHES = 4
#: who runs the teacher: this process, local worker processes, or Ray Data (``kdserve.bulk.label``)
LABEL_ENGINES = ("inline", "local", "ray")


def needs_bundle_message(engine: str, teacher: str | Path, several: bool = False) -> str:
    """The fix for a checkpoint teacher on an engine that runs bundles (local, ray)."""
    fix = "give its exported bundle as the --teacher" if several else "add --teacher-bundle BUNDLE"
    return (
        f"--label-engine {engine} labels with an exported bundle and teacher {teacher} is a checkpoint: "
        f"{fix} (from `kdserve export`), or use --label-engine inline"
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows_alone(folder: Path) -> bool:
    """Whether ``folder`` is a bundle whose manifest runs each text alone (``ROWS_ALONE``)."""
    from kdserve.core.bundle import MANIFEST_FILE, ROWS_ALONE

    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # a checkpoint, or no readable manifest: BundleModel refuses the latter anyway
    return bool(manifest.get("extra", {}).get(ROWS_ALONE, False)) if isinstance(manifest, dict) else False


def teacher_digest(teacher_folder: str | Path, max_length: int, problem_type: str = "single_label") -> HASH:
    """sha256 fed with all that identifies a teacher's logits but the texts: its weight files (or
    an ONNX bundle's model.onnx), max_length and, for multi-label, the problem type: per-category
    sigmoid logits must never be read back as a softmax teacher's; and a bundle that runs rows
    alone, whose logits are not its batched ones. Other keys are unchanged, so existing caches
    stay valid. Hashing the weights is the costly part, so ``teacher_logits`` does it once."""
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
    if _rows_alone(folder):  # the same model.onnx gives other logits when rows run alone
        digest.update(b"rows_alone\0")
    return digest


def texts_key(teacher: HASH, texts: Sequence[str]) -> str:
    """The cache key of ``texts`` (exact, in order) labelled by the teacher ``teacher_digest`` names;
    with no texts, the teacher's own key (its per-text store's, ``kdserve.train.row_store``)."""
    digest = teacher.copy()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def cache_key(
    teacher_folder: str | Path, texts: Sequence[str], max_length: int, problem_type: str = "single_label"
) -> str:
    """The transfer-set cache key: ``texts_key`` of ``teacher_digest``."""
    return texts_key(teacher_digest(teacher_folder, max_length, problem_type), texts)


def checkpoint_predict(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int,
    device: Any,
    desc: str = "teacher labelling",
) -> tuple[np.ndarray, float]:
    """``predict_logits`` of a PyTorch teacher with a bar (rate, ETA) on a terminal.

    With a bar, the texts go to ``predict_logits`` in chunks of whole batches taken from its own
    longest-first order (token lengths, stable sort), so inside each chunk that order is unchanged
    and every batch holds exactly the texts it holds in one call: the logits are identical. Off a
    terminal it is the single call.
    """
    from kdserve.train.batching import sorted_batches
    from kdserve.train.evaluate import predict_logits
    from kdserve.train.progress import counter, interactive

    if not interactive() or len(texts) <= batch_size:
        return predict_logits(model, tokenizer, texts, max_length, batch_size, device)
    start = time.perf_counter()
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    batches = sorted_batches(lengths, batch_size)
    out: np.ndarray | None = None
    progress = counter(len(texts), desc, "text")
    try:
        for first in range(0, len(batches), CHUNK_BATCHES):
            rows = [i for batch in batches[first : first + CHUNK_BATCHES] for i in batch]
            logits, _ = predict_logits(model, tokenizer, [texts[i] for i in rows], max_length, batch_size, device)
            if out is None:
                out = np.zeros((len(texts), logits.shape[1]), dtype=logits.dtype)
            out[rows] = logits
            progress.update(len(rows))
    finally:
        progress.close()
    assert out is not None  # len(texts) > batch_size >= 1
    return out, len(texts) / max(time.perf_counter() - start, 1e-9)


def teacher_logits(
    teacher_folder: str | Path,
    texts: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    device: str = "auto",
    problem_type: str = "single_label",
    desc: str = "teacher labelling",
    engine: str = "inline",
    workers: int = 0,
) -> np.ndarray:
    """Teacher logits [N, C] for ``texts``, from the cache when it holds them.

    ``teacher_folder`` is a checkpoint (PyTorch) or an exported bundle (ONNX Runtime, columns in
    the bundle's label order, which is the checkpoint's), with a progress bar named ``desc`` on a
    terminal: on a CPU the bundle labels several
    times faster, and with an fp32 bundle the logits match PyTorch within the export's parity
    tolerance. A bundle runs on ``engine`` (``LABEL_ENGINES``; ``workers`` processes or actors for
    local and ray, 0: one a core), with identical logits on each; a checkpoint runs inline only.
    """
    if engine not in LABEL_ENGINES:
        raise ConfigError(f"label engine must be one of {', '.join(LABEL_ENGINES)}, got {engine!r}")
    bundle_teacher = (Path(teacher_folder) / "manifest.json").is_file()
    if engine != "inline" and not bundle_teacher:
        raise ConfigError(needs_bundle_message(engine, teacher_folder))
    teacher = teacher_digest(teacher_folder, max_length, problem_type) if cache_dir else None
    target = Path(cache_dir) / texts_key(teacher, texts) if cache_dir and teacher else None
    if target is not None and (target / "logits.npy").is_file():
        logits = np.load(target / "logits.npy", allow_pickle=False)
        if logits.shape[0] == len(texts):
            log.info("teacher logits for %d texts from cache %s", len(texts), target)
            return logits
        log.warning("cache %s holds %d rows for %d texts; relabelling", target, logits.shape[0], len(texts))

    start = time.perf_counter()
    labelled = len(texts)
    if bundle_teacher:
        from kdserve.core.bundle import read_manifest

        bundle_length = read_manifest(teacher_folder).max_length
        if bundle_length != max_length:
            raise KdserveError(f"{teacher_folder}: bundle max_length {bundle_length} != {max_length}")

        def label(batch: list[str]) -> np.ndarray:
            return _bundle_logits(teacher_folder, batch, batch_size, desc, engine, workers)

        if cache_dir and teacher and _rows_alone(Path(teacher_folder)):  # batch-independent: reuse is exact
            from kdserve.train.row_store import label_with_store

            store = Path(cache_dir) / f"rows-{texts_key(teacher, [])}"
            logits, labelled, reused = label_with_store(store, texts, label)
            log.info("teacher row store %s: %d of %d texts labelled before", store, reused, len(texts))
        else:
            logits = label(list(texts))
        rate = labelled / max(time.perf_counter() - start, 1e-9)
    else:
        from kdserve.train.checkpoint import load_classifier
        from kdserve.train.common import resolve_device

        model, tokenizer = load_classifier(str(teacher_folder))
        torch_device = resolve_device(device)
        model.to(torch_device)
        logits, rate = checkpoint_predict(model, tokenizer, texts, max_length, batch_size, torch_device, desc)
    log.info(
        "teacher labelled %d texts in %.0f s (%.0f texts/s, %s engine)",
        labelled,
        time.perf_counter() - start,
        rate,
        engine,
    )
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
                    "label_engine": engine,  # provenance only: not in the key, every engine gives these logits
                }
            )
            + "\n"
        )
    return logits


def _bundle_logits(
    bundle: str | Path, texts: list[str], batch_size: int, desc: str, engine: str, workers: int
) -> np.ndarray:
    """A bundle's logits on ``engine``: ``BundleModel.predict``'s batches on each, so the same bits."""
    if engine == "inline":
        from kdserve.core.bundle import BundleModel
        from kdserve.train.progress import bundle_predict

        return bundle_predict(BundleModel(bundle), texts, batch_size, desc)
    # train -> bulk: labelling is an engine below training (docs/ARCHITECTURE.md); imported here so
    # that `import kdserve.train` never loads the engines (nor Ray)
    from kdserve.bulk.label import label_texts, label_texts_ray
    from kdserve.train.progress import counter

    run = label_texts if engine == "local" else label_texts_ray
    progress = counter(len(texts), desc, "text")
    try:
        return run(bundle, texts, batch_size=batch_size, workers=workers, progress=progress.update)
    finally:
        progress.close()
