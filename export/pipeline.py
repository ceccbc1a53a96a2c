"""``export_checkpoint``: the one entry point from a checkpoint folder to verified bundles.

Order of work, each step a gate for the next: inspect the checkpoint (kind, labels, max
length) and load the data -> export fp32 ONNX -> parity with PyTorch on real validation texts
(token ids and logits) -> quantize -> score fp32 and int8 on the validation split -> the
accuracy gate -> manifests, model cards, final checksum verification -> publish. Everything is
built in a staging folder inside the output folder and moved into place at the end, so a
failed export never leaves a half-written bundle behind.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.core.bundle import MODEL_FILE, ROWS_ALONE, BundleModel, Manifest, verify_bundle, write_manifest
from kdserve.core.data import DatasetSpec, LabeledData, load_dataset
from kdserve.core.defaults import DEFAULT_DATA
from kdserve.core.errors import ConfigError
from kdserve.export import onnx_export as ox
from kdserve.export.card import calibration_warning, model_card
from kdserve.export.checks import (
    AccuracyGateError,
    ExportError,
    OutputExistsError,
    Reference,
    accuracy_drop,
    accuracy_gate,
    auc_drops,
    auc_gate,
    check_parity,
    parity_texts,
    worst_auc_drop,
)
from kdserve.export.config import MODE_PRECISION, ExportConfig
from kdserve.train.evaluate import align_labels, align_targets

log = logging.getLogger("kdserve.export")


def _version() -> str:
    from kdserve import __version__

    return __version__


def resolve_data(config: ExportConfig, info: ox.CheckpointInfo) -> DatasetSpec:
    """--data, else the spec the checkpoint records (its training data), else the packaged default."""
    if config.data is not None:
        return config.data
    recorded = info.trained_data
    if recorded and isinstance(recorded.get("source"), str):
        source = recorded["source"]
        if not source.startswith(("package:", "hub:")) and not Path(source).exists():
            raise ConfigError(f"{info.folder} was trained on {source}, which is not found from here; pass --data")
        fields = set(DatasetSpec.__dataclass_fields__)
        return DatasetSpec(**{k: v for k, v in recorded.items() if k in fields})
    log.info("%s records no training data; checking on %s", info.folder, DEFAULT_DATA)
    return DatasetSpec(DEFAULT_DATA)


def _targets(config: ExportConfig, name: str) -> dict[str, Path]:
    precisions = ["fp32"] + [MODE_PRECISION[mode] for mode in config.quantization_modes]
    out = Path(config.output_dir)
    targets = {p: out / f"{name}-{p}" for p in precisions}
    for path in targets.values():
        if path.exists() and not config.overwrite:
            raise OutputExistsError(f"{path} already exists (pass --overwrite to replace it)")
    return targets


def _feeds(model: Any, texts: list[str], inputs: list[str], batch: int = 16) -> list[dict[str, np.ndarray]]:
    """Calibration batches: length-sorted so padding stays small, encoded exactly as served."""
    texts = sorted(texts, key=len)
    feeds = []
    for start in range(0, len(texts), batch):
        encoded = model.encode(texts[start : start + batch])
        feed = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(encoded.input_ids)
        feeds.append(feed)
    return feeds


def _score(
    model: Any, rows: list[tuple[str, Any]], data: LabeledData, batch_size: int
) -> tuple[dict[str, Any], np.ndarray]:
    from kdserve.export.evaluate import score_bundle, score_multi_label, summary
    from kdserve.train.progress import bundle_predict

    if data.problem_type == "multi_label":
        logits = bundle_predict(model, [t for t, _ in rows], batch_size, f"scoring {model.manifest.name}")
        return score_multi_label(model, rows, data, batch_size), logits
    metrics, logits = score_bundle(model, rows, data.labels, batch_size)
    return summary(metrics, data.source, "validation"), logits


def _label_targets(rows: list[tuple[str, Any]], data: LabeledData, model_labels: list[str]) -> np.ndarray:
    """Validation targets in the model's label order: class ids, or an [N, C] target matrix."""
    if data.problem_type == "multi_label":
        return align_targets(rows, data.labels, model_labels)
    return np.asarray(align_labels([y for _, y in rows], data.labels, model_labels), dtype=np.int64)


def _moderate(
    config: ExportConfig, manifest: Manifest, logits: np.ndarray, targets: np.ndarray, seed: int
) -> dict[str, Any]:
    """Fit this bundle's calibration and policy on its own validation logits (so the int8 bundle's
    come from the int8 model's scores) into ``manifest``; returns its moderation metrics summary."""
    from kdserve.core.calibration import Policy, calibrate_and_choose, calibrated_probabilities
    from kdserve.core.moderation import moderation_metrics

    policy = Policy.parse(config.policy) if config.policy else None
    calibration, block = calibrate_and_choose(
        logits, targets, manifest.labels, manifest.problem_type, policy, config.benign_labels, config.calibrate, seed
    )
    manifest.calibration, manifest.policy = calibration, block
    warning = calibration_warning(calibration)
    if warning:
        log.warning("%s: %s", manifest.name, warning)
    probs = calibrated_probabilities(logits, manifest.problem_type, calibration["temperatures"])
    thresholds = None
    if manifest.problem_type == "multi_label":
        chosen = block.get("thresholds", {})
        thresholds = [chosen.get(name, 0.5) for name in manifest.labels]
    scores = moderation_metrics(probs, targets, manifest.labels, manifest.problem_type, thresholds)
    return {
        name: {
            "roc_auc": c.roc_auc,
            "average_precision": c.average_precision,
            "recall_at_precision_0.9": c.recall_at_precision,
        }
        for name, c in scores.per_category.items()
    }


def _invariance(config: ExportConfig, folder: Path, manifest: Manifest, rows: list[tuple[str, Any]]) -> None:
    """``extra.batch_invariance`` of the staged bundle in ``folder``, decided under ``manifest``'s
    (just fitted) policy."""
    from kdserve.export.invariance import batch_invariance

    texts = [t for t, _ in rows[: config.invariance_texts]]
    block = batch_invariance(folder, texts, manifest, config.batch_size)
    manifest.extra["batch_invariance"] = block
    log.info(
        "%s: %d texts alone vs in batches of %d: max |logit diff| %.3g, %d decisions changed%s",
        manifest.name,
        len(texts),
        config.batch_size,
        block["max_abs_logit_diff"],
        block["decisions_changed"],
        " (served one text per call)" if block["served_alone"] else "",
    )


def _finish(folder: Path, manifest: Manifest, triton_note: str = "") -> Manifest:
    """Write README.md from the finished manifest, hash everything, then re-verify from disk."""
    (folder / "README.md").write_text(model_card(manifest, (folder / MODEL_FILE).stat().st_size, triton_note))
    write_manifest(folder, manifest)
    return verify_bundle(folder)


def _export_fp32(
    info: ox.CheckpointInfo, config: ExportConfig, folder: Path, max_length: int
) -> tuple[Reference, int, dict[str, Any], float]:
    """Write ``folder/model.onnx``; returns (PyTorch reference, parameters, export facts, export seconds)."""
    if info.kind == "teacher":
        start = time.perf_counter()
        facts = ox.export_teacher(info.folder, folder / MODEL_FILE, config.opset, config.optimization)
        seconds = time.perf_counter() - start
        reference, parameters = ox.teacher_reference(info.folder, max_length)
    else:
        model = ox.load_student(info.folder)
        start = time.perf_counter()
        facts = ox.export_student(model, folder / MODEL_FILE, config.opset, config.exporter)
        seconds = time.perf_counter() - start
        reference, parameters = ox.student_reference(info.folder, model, max_length)
    return reference, parameters, facts, seconds


def _quantize(
    config: ExportConfig, mode: str, src: Path, dst: Path, fp32_model: Any, data: LabeledData
) -> tuple[dict[str, Any], float]:
    """Write the int8 graph ``dst`` from ``src``; returns (quantization facts, seconds)."""
    from kdserve.export import quantize

    preset = config.resolved_quant_preset
    start = time.perf_counter()
    if mode == "static":
        pool = [t for t, _ in data.train if t.strip()]
        sample = random.Random(0).sample(pool, min(config.calibration_examples, len(pool)))
        feeds = _feeds(fp32_model, sample, fp32_model.manifest.inputs)
        facts = quantize.quantize_static_int8(src, dst, preset, config.quantize_ops, feeds, config.calibration_method)
    else:
        facts = quantize.quantize_dynamic_int8(src, dst, preset, config.quantize_ops)
    return facts, time.perf_counter() - start


def _stage_quantized(
    config: ExportConfig,
    staging: Path,
    base: Manifest,
    staged: dict[str, tuple[Path, Manifest]],
    metrics: dict[str, Any],
    fp32_model: Any,
    fp32_logits: np.ndarray,
    rows: list[tuple[str, Any]],
    data: LabeledData,
    targets: np.ndarray,
    all_logits: dict[str, np.ndarray] | None = None,
) -> AccuracyGateError | None:
    """Quantize in each of ``config.quantization_modes`` until one passes the accuracy gate (or
    --force keeps it); stage that bundle (its manifest made from ``base``) beside the fp32 one
    in ``staged``, each attempt's scores in ``metrics`` and its verdict in the fp32 manifest.
    Returns the gate's refusal when no mode passed, else None."""
    fp32_dir, fp32_manifest = staged["fp32"]
    refusals: list[str] = []
    attempts: list[dict[str, Any]] = []
    for number, mode in enumerate(config.quantization_modes):
        precision = MODE_PRECISION[mode]
        q_dir = staging / precision
        q_dir.mkdir()
        for file in ("tokenizer.json", "labels.json"):
            shutil.copyfile(fp32_dir / file, q_dir / file)
        try:
            quant, seconds = _quantize(config, mode, fp32_dir / MODEL_FILE, q_dir / MODEL_FILE, fp32_model, data)
        except ExportError as exc:
            if number == 0:
                raise
            # a fallback that cannot run (e.g. --quantize-ops LSTM only has no static form) leaves
            # the first mode's refusal standing; the export itself has not failed
            refusals.append(f"{mode} int8 could not be made: {exc}")
            break
        q_manifest = replace(
            base,
            name=f"{base.name.removesuffix('-fp32')}-{precision}",
            precision=precision,
            export_seconds=round(seconds, 3),
            extra={
                **base.extra,
                "quantization": quant,
                "graph_nodes": ox.onnx_facts(q_dir / MODEL_FILE)["nodes"],
                ROWS_ALONE: mode == "dynamic" and config.dynamic_int8_rows == "alone",
            },
        )
        write_manifest(q_dir, q_manifest)
        metrics[precision], q_logits = _score(BundleModel(q_dir, verify=False), rows, data, config.batch_size)
        if all_logits is not None:
            all_logits[precision] = q_logits
        drops = auc_drops(fp32_logits, q_logits, targets, base.labels, base.problem_type)
        forced = passed = False
        try:
            _, forced = accuracy_gate(
                metrics["fp32"], metrics[precision], config.max_accuracy_drop, config.force, precision
            )
            _, auc_forced = auc_gate(drops, config.max_auc_drop, config.force, precision)
            forced = forced or auc_forced
            passed = not forced
        except AccuracyGateError as exc:
            refusals.append(str(exc))
        worst, worst_drop = worst_auc_drop(drops)
        gate = {
            "drop_points": accuracy_drop(metrics["fp32"], metrics[precision]),
            "max_drop_points": config.max_accuracy_drop,
            "auc_drop_points": round(worst_drop, 4),
            "auc_drop_label": worst,
            "max_auc_drop_points": config.max_auc_drop,
            "passed": passed,
            "forced": forced,
        }
        attempts.append({"precision": precision, **gate})
        fp32_manifest.extra["accuracy_gate"] = gate
        if len(config.quantization_modes) > 1:
            fp32_manifest.extra["quantization_attempts"] = attempts
        if passed or forced:
            q_manifest.extra.update(
                {
                    "accuracy_gate": gate,
                    "vs_fp32": {
                        "max_abs_logit_diff": float(np.abs(q_logits - fp32_logits).max()),
                        "argmax_agreement": float((q_logits.argmax(-1) == fp32_logits.argmax(-1)).mean()),
                    },
                }
            )
            if len(attempts) > 1:
                q_manifest.extra["quantization_attempts"] = attempts
            staged[precision] = (q_dir, q_manifest)
            return None
        shutil.rmtree(q_dir)
        if number + 1 < len(config.quantization_modes):
            log.info("%s; trying %s int8 next", refusals[-1], config.quantization_modes[number + 1])
    return AccuracyGateError("; then ".join(refusals)) if refusals else None


def _triton_note(manifest: Manifest) -> str:
    from kdserve.export.triton import TRITON_NOTE

    types = " and all-zero `token_type_ids`" if "token_type_ids" in manifest.inputs else ""
    inputs = "`, `".join(i for i in manifest.inputs if i != "token_type_ids")
    note = TRITON_NOTE.format(max_length=manifest.max_length, inputs=inputs, pad_id=manifest.pad_id, types=types)
    if manifest.extra.get(ROWS_ALONE):
        note += (
            "\nThis graph is dynamic int8: it scales activations over the whole batch tensor, padding included,\n"
            "so under Triton's batcher a text's scores depend on its batchmates (`kdserve serve` runs it one\n"
            "text per call; see Limits). For reproducible decisions send one unpadded text per request and\n"
            "remove the `dynamic_batching` block.\n"
        )
    return note


def _publish(config: ExportConfig, staged: dict[str, tuple[Path, Manifest]], targets: dict[str, Path]) -> list[Path]:
    """Move finished bundles into place, or copy them into Triton's layout."""
    from kdserve.export.triton import write_triton_model

    written = []
    for key, (folder, manifest) in staged.items():
        target = targets[key]
        if target.exists():
            shutil.rmtree(target)
        if config.format == "triton":
            written.append(
                write_triton_model(
                    folder,
                    target.parent,
                    target.name,
                    config.triton_max_batch_size,
                    config.triton_queue_delay_us,
                    manifest.inputs,
                    manifest.labels,
                    (folder / "README.md").read_text(),
                )
            )
        else:
            shutil.move(str(folder), target)
            written.append(target)
    return written


def _load_baseline(config: ExportConfig, info: ox.CheckpointInfo) -> BundleModel | None:
    """The production bundle of ``--baseline-bundle``, verified, with the checkpoint's label set."""
    if config.baseline_bundle is None:
        return None
    from kdserve.export.compat import check_same_labels

    baseline = BundleModel(config.baseline_bundle)
    check_same_labels(info.labels, baseline.labels, str(info.folder), config.baseline_bundle)
    return baseline


def _compat_gate(
    config: ExportConfig,
    name: str,
    baseline: BundleModel,
    staged: dict[str, tuple[Path, Manifest]],
    rows: list[tuple[str, int]],
    data: LabeledData,
) -> None:
    """Compare every staged bundle with the baseline on the validation rows and put the report in
    its manifest (and so its model card). When any is refused, nothing is published: the refusal
    is about the model, not its precision, and a half-published pair would be served by mistake.
    The refused reports then go to ``<output>/<name>-compat-refused.json`` for the reviewer."""
    from kdserve.export.compat import CompatGateError, GateThresholds, apply_gate, compare_models

    thresholds = GateThresholds(config.max_negative_flips, config.max_class_f1_drop)
    refusals, reports = [], {}
    for precision, (folder, manifest) in staged.items():
        report = compare_models(
            BundleModel(folder, verify=False),
            baseline,
            rows,
            data.labels,
            data.source,
            "validation",
            config.log_texts,
            batch_size=config.batch_size,
        )
        failures = apply_gate(report, thresholds)
        manifest.extra["compatibility"] = report
        reports[precision] = report
        if failures:
            refusals.append(f"{precision}: " + "; ".join(failures))
    if refusals:
        target = Path(config.output_dir) / f"{name}-compat-refused.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(reports, indent=2) + "\n")
        tmp.replace(target)
        raise CompatGateError(
            f"refused against the baseline {config.baseline_bundle}: {' | '.join(refusals)}; nothing was "
            f"published (report: {target})",
            reports,
        )


def export_checkpoint(config: ExportConfig) -> list[Path]:
    """Export ``config.checkpoint``; returns the written bundle folders (fp32 first) or, for
    ``format="triton"``, the Triton model folders. Raises ExportError subclasses on failure;
    when only the accuracy gate fails, the fp32 bundle is still written before the error."""
    started = time.perf_counter()
    info = ox.inspect_checkpoint(config.checkpoint)
    name = config.name or info.folder.resolve().name
    max_length = ox.resolve_max_length(info, config.max_length)
    targets = _targets(config, name)
    spec = resolve_data(config, info)
    data = load_dataset(spec)  # data errors surface before the slow part
    if config.benign_labels is not None:
        from kdserve.core.calibration import resolve_benign

        resolve_benign(list(info.labels), config.benign_labels)  # before the slow part, like the data
    if data.problem_type == "multi_label":
        _label_targets(data.validation, data, list(info.labels))  # label names checked before the slow part
    else:
        align_labels([y for _, y in data.validation], data.labels, info.labels)
    baseline = _load_baseline(config, info)  # a wrong baseline fails before the slow part too
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-staging-", dir=out))
    try:
        fp32_dir = staging / "fp32"
        fp32_dir.mkdir()
        reference, parameters, facts, seconds = _export_fp32(info, config, fp32_dir, max_length)
        pad_id = ox.bundle_tokenizer(info.folder, fp32_dir / "tokenizer.json")
        (fp32_dir / "labels.json").write_text(json.dumps(list(info.labels)) + "\n")
        graph = ox.onnx_facts(fp32_dir / MODEL_FILE)
        if graph["outputs"] != ["logits"]:
            raise ExportError(
                f"{info.folder}: the exported graph's outputs are {graph['outputs']}, expected ['logits']"
            )
        base = Manifest(
            name=f"{name}-fp32",
            model_kind=info.kind,
            precision="fp32",
            labels=list(info.labels),
            max_length=max_length,
            inputs=graph["inputs"],
            pad_id=pad_id,
            parameters=parameters,
            kdserve_version=_version(),
            source_checkpoint=str(info.folder.resolve()),
            opset=graph["opset"],
            export_seconds=round(seconds, 3),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            problem_type=data.problem_type,
            extra={
                **facts,
                "checkpoint_kind": info.kind,
                "graph_nodes": graph["nodes"],
                "data_spec": dict(spec.__dict__),
            },
        )
        write_manifest(fp32_dir, base)
        fp32_model = BundleModel(fp32_dir, verify=False)

        texts = parity_texts([t for t, _ in data.validation], config.parity_texts)
        parity = check_parity(reference, fp32_model, texts, config.parity_tolerance)
        del reference  # frees the PyTorch model before quantizing
        log.info("parity: max |logit diff| %.2e on %d texts", parity.max_abs_diff, parity.texts)
        rows = data.validation[: config.max_eval_examples] if config.max_eval_examples else data.validation
        metrics: dict[str, Any] = {}
        metrics["fp32"], fp32_logits = _score(fp32_model, rows, data, config.batch_size)
        staged = {"fp32": (fp32_dir, replace(base, extra={**base.extra, "parity": parity.to_dict()}))}

        all_logits = {"fp32": fp32_logits}
        y_val = _label_targets(rows, data, list(info.labels))
        gate_error = _stage_quantized(
            config, staging, base, staged, metrics, fp32_model, fp32_logits, rows, data, y_val, all_logits
        )
        for precision, (folder, manifest) in staged.items():
            metrics[precision]["moderation"] = _moderate(config, manifest, all_logits[precision], y_val, spec.seed)
            if config.invariance_texts:
                _invariance(config, folder, manifest, rows)
        if baseline is not None:
            _compat_gate(config, name, baseline, staged, rows, data)
        total = round(time.perf_counter() - started, 3)
        for folder, manifest in staged.values():
            manifest.metrics = metrics
            manifest.extra["pipeline_seconds"] = total
            _finish(folder, manifest, _triton_note(manifest) if config.format == "triton" else "")
        written = _publish(config, staged, targets)
        if gate_error is not None:
            raise AccuracyGateError(f"{gate_error}; the fp32 bundle was written to {written[0]}", written)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
