"""The bundle: one folder that the server can run with nothing else, and its reader.

A bundle holds ``model.onnx`` (logits out), ``tokenizer.json`` (Hugging Face ``tokenizers``),
``labels.json``, ``README.md`` (a short model card) and ``manifest.json``, which describes the
model and lists the sha256 and size of every other file. This module imports neither torch
nor transformers: the server, ``kdserve bundle verify``, ``kdserve eval --bundle`` and the
benchmarks all read bundles through it, so there is one reader and one checksum rule.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.defaults import PROBLEM_TYPES
from kdserve.core.errors import KdserveError

FORMAT = "kdserve-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CARD_FILE = "README.md"
MODEL_KINDS = ("teacher", "bilstm", "transformer", "textcnn")
PRECISIONS = ("fp32", "int8", "int8-static")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: ``manifest.extra`` key: true when the bundle runs each text of a batch by itself
#: (``BundleModel.run``); export sets it for dynamic int8 graphs, whose scores move with the batch.
ROWS_ALONE = "rows_alone"


class BundleError(KdserveError):
    """A bundle folder is missing, incomplete, corrupted or inconsistent."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """``manifest.json``. ``files`` maps each file name to {"sha256", "size"}; ``metrics`` maps
    a precision ("fp32", "int8") to its validation metrics (accuracy, macro_f1, examples, data)."""

    name: str
    model_kind: str
    precision: str
    labels: list[str]
    max_length: int
    inputs: list[str]
    output: str = "logits"
    pad_id: int = 0
    parameters: int = 0
    kdserve_version: str = ""
    source_checkpoint: str = ""
    opset: int = 17
    export_seconds: float = 0.0
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Moderation (absent from older manifests, which load as single-label, uncalibrated, no policy):
    # "single_label" (softmax) or "multi_label" (one sigmoid per label).
    problem_type: str = "single_label"
    # {"method", "temperatures": [T] or [T_c per label], "fit_rows", "report_rows", "ece_before", ...}
    calibration: dict[str, Any] = field(default_factory=dict)
    # {"target", "benign_labels", "thresholds": {label: t}, "validation": {label: {precision, recall}}}
    policy: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    # sha256 of manifest.json itself with this value blanked (see write_manifest), so an edit to
    # the manifest (a max_length, a label, a file hash) is caught too; "" in older manifests.
    manifest_sha256: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.format != FORMAT:
            problems.append(f"format is {self.format!r}, expected {FORMAT!r}")
        if self.format_version != FORMAT_VERSION:
            problems.append(
                f"format_version {self.format_version} is not supported (this kdserve reads {FORMAT_VERSION})"
            )
        if self.model_kind not in MODEL_KINDS:
            problems.append(f"model_kind {self.model_kind!r} not in {MODEL_KINDS}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} not in {PRECISIONS}")
        if len(self.labels) < 2:
            problems.append("needs at least two labels")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            problems.append(f"max_length must be a positive integer, got {self.max_length!r}")
        if not self.inputs or any(name not in INPUT_NAMES for name in self.inputs):
            problems.append(f"inputs {self.inputs} must be a non-empty subset of {INPUT_NAMES}")
        problems += _moderation_problems(self)
        if problems:
            raise BundleError(f"invalid manifest for {self.name!r}: " + "; ".join(problems))

    @property
    def role(self) -> str:
        return "teacher" if self.model_kind == "teacher" else "student"

    @property
    def checksum(self) -> str:
        """The model file's sha256: what the server reports as "the bundle that answered"."""
        return str(self.files.get(MODEL_FILE, {}).get("sha256", ""))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest") -> Manifest:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise BundleError(f"{where}: {exc}") from None


def _moderation_problems(manifest: Manifest) -> list[str]:
    """What is wrong with the manifest's problem_type, calibration and policy blocks."""
    problems = []
    if manifest.problem_type not in PROBLEM_TYPES:
        problems.append(f"problem_type {manifest.problem_type!r} not in {PROBLEM_TYPES}")
    temperatures = manifest.calibration.get("temperatures") if isinstance(manifest.calibration, dict) else None
    if temperatures is not None:
        wanted = len(manifest.labels) if manifest.problem_type == "multi_label" else 1
        if (
            not isinstance(temperatures, list)
            or len(temperatures) != wanted
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1e6 for t in temperatures)
        ):
            problems.append(f"calibration temperatures must be {wanted} positive number(s), got {temperatures!r}")
    thresholds = manifest.policy.get("thresholds", {}) if isinstance(manifest.policy, dict) else None
    if not isinstance(thresholds, dict) or any(
        name not in manifest.labels or not isinstance(t, (int, float)) or isinstance(t, bool)
        for name, t in thresholds.items()
    ):
        problems.append(f"policy thresholds must map labels to numbers, got {thresholds!r}")
    benign = manifest.policy.get("benign_labels", []) if isinstance(manifest.policy, dict) else None
    if not isinstance(benign, list) or any(b not in manifest.labels for b in benign):
        problems.append(f"policy benign_labels {benign!r} must be labels of the bundle")
    return problems


def write_manifest(folder: str | Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``folder`` (except the manifest) into ``manifest.files`` and write it atomically."""
    folder = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE):
        files[path.name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    for required in (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE):
        if required not in files:
            raise BundleError(f"{folder}: cannot write a manifest without {required}")
    manifest.files = files
    manifest.manifest_sha256 = ""
    raw = (json.dumps(manifest.to_dict(), indent=2) + "\n").encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    raw = raw.replace(_self_entry(""), _self_entry(digest), 1)
    manifest.manifest_sha256 = digest
    tmp = folder / (MANIFEST_FILE + ".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, folder / MANIFEST_FILE)
    return manifest


def _self_entry(digest: str) -> bytes:
    """The top-level ``manifest_sha256`` line as ``json.dumps(indent=2)`` writes it."""
    return f'\n  "manifest_sha256": "{digest}"'.encode()


def _check_manifest_checksum(folder: Path) -> None:
    """Compare manifest.json's bytes (own hash blanked) with its ``manifest_sha256``; a manifest
    that cannot be parsed is left to ``read_manifest``, which names the problem."""
    path = folder / MANIFEST_FILE
    try:
        raw = path.read_bytes()
        claimed = json.loads(raw.decode("utf-8")).get("manifest_sha256", "")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return
    if claimed == "":
        return  # written before the self-checksum existed
    if (
        not isinstance(claimed, str)
        or hashlib.sha256(raw.replace(_self_entry(claimed), _self_entry(""), 1)).hexdigest() != claimed
    ):
        raise BundleError(f"{path}: sha256 does not match its manifest_sha256 (corrupted or modified)")


def read_manifest(folder: str | Path) -> Manifest:
    """Parse ``manifest.json`` without checking file hashes (see ``verify_bundle``)."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BundleError(f"bundle folder not found: {folder}")
    if not path.is_file():
        raise BundleError(f"{folder} is not a bundle: no {MANIFEST_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return Manifest.from_dict(data, where=str(path))


def verify_bundle(folder: str | Path) -> Manifest:
    """Check manifest.json's own checksum, then that every listed file exists with its recorded
    size and sha256; name the first file that does not."""
    folder = Path(folder)
    _check_manifest_checksum(folder)
    manifest = read_manifest(folder)
    for required in (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE):
        if required not in manifest.files:
            raise BundleError(f"{folder / MANIFEST_FILE}: lists no {required}")
    for name, entry in manifest.files.items():
        path = folder / name
        if Path(name).name != name:
            raise BundleError(f"{folder / MANIFEST_FILE}: file name {name!r} must not contain a path")
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry.get("size"):
            raise BundleError(f"{path}: size {path.stat().st_size} != {entry.get('size')} in the manifest (corrupted)")
        if sha256_file(path) != entry.get("sha256"):
            raise BundleError(f"{path}: sha256 does not match the manifest (corrupted or modified)")
    labels_path = folder / LABELS_FILE
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{labels_path}: unreadable JSON ({exc})") from None
    if labels != manifest.labels:
        raise BundleError(f"{labels_path}: labels {labels} differ from the manifest's {manifest.labels}")
    return manifest


def read_verified(folder: Path, name: str, manifest: Manifest) -> bytes:
    """The bytes of ``folder/name``, checked against the manifest's size and sha256 in memory."""
    path = folder / name
    entry = manifest.files.get(name)
    if entry is None:
        raise BundleError(f"{folder / MANIFEST_FILE}: lists no {name}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise BundleError(f"{path}: sha256 does not match the manifest (corrupted or modified)")
    return data


def check_output_width(model: BundleModel) -> None:
    """The graph's ``manifest.output`` must give one score per manifest label: a width that differs
    would pass every checksum and then fail (or mislabel) every request. A static width is read off
    the graph; a symbolic one is measured with one single-token inference (what ``kdserve bundle
    verify`` does)."""
    manifest, where = model.manifest, model.folder / MODEL_FILE
    outputs = {o.name: o for o in model.session.get_outputs()}
    if manifest.output not in outputs:
        raise BundleError(f"{where}: no output named {manifest.output!r} (graph outputs: {', '.join(outputs)})")
    shape = outputs[manifest.output].shape
    width = shape[-1] if shape and isinstance(shape[-1], int) else None
    if width is None:
        probe = Encoded(np.full((1, 1), manifest.pad_id, dtype=np.int64), np.ones((1, 1), dtype=np.int64), [1], [False])
        try:
            logits = model.run(probe)
        except Exception as exc:  # ONNX Runtime's own error types
            raise BundleError(f"{where}: a one-token inference failed ({str(exc).strip().splitlines()[0]})") from None
        width = logits.shape[-1] if logits.ndim == 2 else None
        if width is None:
            raise BundleError(
                f"{where}: output {manifest.output!r} has shape {list(logits.shape)}, expected [batch, C]"
            )
    if width != len(manifest.labels):
        raise BundleError(
            f"{where}: output {manifest.output!r} has {width} columns but the manifest lists "
            f"{len(manifest.labels)} labels ({', '.join(manifest.labels)})"
        )


@dataclass
class Encoded:
    """A padded batch. ``input_ids``/``attention_mask`` are int64 [B, L]; ``lengths`` are token
    counts after truncation; ``truncated[i]`` says text i lost tokens to ``max_length``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    lengths: list[int]
    truncated: list[bool]


class BundleModel:
    """A bundle ready to run: its ONNX Runtime session and its tokenizer. Thread-safe for ``run``
    (ONNX Runtime sessions are); ``encode`` uses a tokenizer that is never reconfigured after load."""

    def __init__(
        self,
        folder: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        graph_optimization: str = "all",
        verify: bool = True,
        intra_op_spinning: bool = True,
        rows_alone: bool | None = None,
    ) -> None:
        """``rows_alone``: run each text of a batch in its own ONNX Runtime call (None: as the
        manifest's ``extra.rows_alone`` says; see ``run``)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.manifest = verify_bundle(self.folder) if verify else read_manifest(self.folder)
        try:
            tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        except Exception as exc:  # the Rust error types are not exported
            raise BundleError(f"{self.folder / TOKENIZER_FILE}: unreadable tokenizer ({exc})") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.manifest.max_length)
        self.tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        if not intra_op_spinning:
            # idle intra-op threads sleep instead of busy-waiting for the next op (see serve's Settings)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if graph_optimization not in levels:
            raise BundleError(f"graph_optimization must be one of {', '.join(levels)}, got {graph_optimization!r}")
        options.graph_optimization_level = levels[graph_optimization]
        # The bytes handed to ONNX Runtime are the bytes hashed: verifying the file and then letting
        # ONNX Runtime open it again by name would leave a window for a swap in between.
        model_bytes = read_verified(self.folder, MODEL_FILE, self.manifest)
        try:
            self.session = ort.InferenceSession(
                model_bytes, options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"{self.folder / MODEL_FILE}: ONNX Runtime cannot load it ({exc})") from None
        del model_bytes
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(self.manifest.inputs):
            raise BundleError(
                f"{self.folder / MODEL_FILE}: inputs {names} differ from the manifest's {self.manifest.inputs}"
            )
        check_output_width(self)
        self.rows_alone = bool(self.manifest.extra.get(ROWS_ALONE, False)) if rows_alone is None else rows_alone

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenize, truncate to the bundle's ``max_length`` (special tokens kept) and right-pad with ``pad_id``."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        lengths = [max(len(e.ids), 1) for e in encodings]
        width = max(lengths) if lengths else 1
        ids = np.full((len(encodings), width), self.manifest.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            # An empty text has no token at all for word-level tokenizers: one pad token, unmasked,
            # gives the model a defined input (the students pool position 0 then).
            n = len(encoding.ids)
            if n:
                ids[row, :n] = encoding.ids
            mask[row, : max(n, 1)] = 1
        return Encoded(ids, mask, lengths, [bool(e.overflowing) for e in encodings])

    def run(self, encoded: Encoded, rows_alone: bool | None = None) -> np.ndarray:
        """Logits float32 [B, C] for an encoded batch. With ``rows_alone`` (None: the model's
        setting) each row runs by itself, cut to its own length: exactly the call
        ``run(encode([text]))`` makes, so a text's logits do not depend on the rest of the batch
        (a dynamic int8 graph scales activations over the whole batch tensor;
        kdserve.export.invariance measures what that moves)."""
        if (self.rows_alone if rows_alone is None else rows_alone) and len(encoded.lengths) > 1:
            return np.vstack(
                [
                    self._logits(encoded.input_ids[row : row + 1, :n], encoded.attention_mask[row : row + 1, :n])
                    for row, n in enumerate(encoded.lengths)
                ]
            )
        return self._logits(encoded.input_ids, encoded.attention_mask)

    def _logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.manifest.inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {k: v for k, v in feeds.items() if k in self.manifest.inputs}
        (logits,) = self.session.run([self.manifest.output], feeds)
        return np.asarray(logits, dtype=np.float32)

    @property
    def temperatures(self) -> list[float]:
        """The manifest's calibration temperatures; [] when the bundle is uncalibrated."""
        return list(self.manifest.calibration.get("temperatures") or [])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated scores [B, C] from ``run``'s logits: softmax(logits / T) for single-label,
        sigmoid(logits / T_c) per label for multi-label (T = 1 in an uncalibrated bundle)."""
        return calibrated_scores(logits, self.manifest.problem_type, self.temperatures)

    def flags(self, probabilities: np.ndarray) -> list[list[str]]:
        """Per row, the labels whose score reaches the bundle's default policy threshold (benign
        labels never flag); [] per row when the bundle has no policy."""
        mask = policy_mask(probabilities, self.labels, self.manifest.policy)
        return [[name for name, hit in zip(self.labels, row) if hit] for row in mask]

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Logits [N, C] in input order, in length-sorted batches (little padding)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.run(self.encode([texts[i] for i in chunk]))
        return out


def policy_mask(probabilities: np.ndarray, labels: Sequence[str], policy: dict[str, Any]) -> np.ndarray:
    """bool [N, C]: each score at or above its label's threshold in ``policy`` (a manifest's policy
    block); a benign label, or one without a threshold, never flags."""
    thresholds = (policy or {}).get("thresholds") or {}
    benign = set((policy or {}).get("benign_labels") or [])
    limits = [np.inf if name in benign else float(thresholds.get(name, np.inf)) for name in labels]
    return np.asarray(probabilities) >= np.asarray(limits, dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [B, C] logits, numerically stable."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def calibrated_scores(logits: np.ndarray, problem_type: str, temperatures: Sequence[float]) -> np.ndarray:
    """softmax(logits / T) (single-label) or sigmoid(logits / T_c) (multi-label), in float64;
    no temperatures means T = 1. The same formula as ``kdserve.core.calibration``, kept here so
    the reader depends on nothing but numpy."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(temperatures, dtype=np.float64) if len(temperatures) else np.ones(1)
    if problem_type == "multi_label":
        scaled = z / (t if t.size == z.shape[-1] else t[0])
        return np.exp(-np.logaddexp(0.0, -scaled))  # sigmoid without overflow
    return softmax(z / t[0])
