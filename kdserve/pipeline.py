"""``kdserve pipeline``: the whole job on one dataset, each stage handing files to the next.

teacher checkpoint -> distilled BiLSTM checkpoint -> fp32 + int8 bundles of both -> in-process
batch-1 latency of every bundle -> ``summary.md`` / ``summary.json``: what the student gave up
(accuracy) and gained (size, latency). The folder it leaves is ready for
``kdserve serve --bundles OUTPUT/bundles``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from kdserve.core.data import DatasetSpec

log = logging.getLogger("kdserve.pipeline")

STUDENT = "bilstm"


def _metrics_of(validation: dict[str, Any]) -> dict[str, Any]:
    return {k: validation.get(k) for k in ("accuracy", "macro_f1", "examples")}


def _scored(validation: dict[str, Any]) -> str:
    """``81.92% (852 rows)``: a figure always says which rows it was measured on."""
    return f"{validation['accuracy'] * 100:.2f}% ({validation['examples']:,} rows)"


#: Batch-1 timing per preset: validation texts cycled, iterations and a per-bundle time cap.
LATENCY = {
    "quick": {"texts": 256, "iterations": 200, "max_seconds": 5.0},
    "full": {"texts": 256, "iterations": 1000, "max_seconds": 20.0},
}


def _latency(bundles: list[Path], data: DatasetSpec, preset: str) -> dict[str, dict[str, Any]]:
    """Batch-1 p50 latency (tokenization included) per bundle on the validation texts."""
    from kdserve.bench.model_bench import ModelBenchConfig, run_model_bench

    config = ModelBenchConfig(
        bundles=[str(b) for b in bundles],
        batch_sizes=[1],
        short_data=data.source,
        long_data=None,
        torch_reference=False,
        **LATENCY[preset],
    )
    result = run_model_bench(config)
    return {b["name"]: b for b in result["bundles"]}


def _row(bundle: Path, bench: dict[str, Any]) -> dict[str, Any]:
    from kdserve.bench.common import bundle_size
    from kdserve.core.bundle import read_manifest

    manifest = read_manifest(bundle)
    metrics = manifest.metrics.get(manifest.precision, {})
    cell = bench["onnx"]["short"]["1"]
    return {
        "bundle": manifest.name,
        "kind": manifest.model_kind,
        "precision": manifest.precision,
        "parameters": manifest.parameters,
        "bundle_mb": round(bundle_size(bundle) / 1e6, 2),
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "examples": metrics.get("examples"),
        "split": metrics.get("split", "validation"),
        "p50_ms": cell["total_ms"]["p50"],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _shipped(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The bundle of ``kind`` one would ship: its int8 one when the accuracy gate passed it, else fp32."""
    of_kind = [r for r in rows if r["kind"] == kind]
    return next((r for r in of_kind if r["precision"] == "int8"), of_kind[0] if of_kind else None)


def _trade_off(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """One plain sentence: what the student gave up (accuracy) and gained (speed, size) against the teacher."""
    same_rows = teacher["examples"] == student["examples"]
    rows = f"the same {student['examples']:,} {student['split']} rows" if same_rows else "different rows (see above)"
    drop = (teacher["accuracy"] - student["accuracy"]) * 100
    verb = f"gives up {drop:.2f} accuracy points" if drop > 0 else f"gains {-drop:.2f} accuracy points"
    speed = teacher["p50_ms"] / student["p50_ms"] if student["p50_ms"] else float("nan")
    size = teacher["bundle_mb"] / student["bundle_mb"] if student["bundle_mb"] else float("nan")
    return (
        f"Trade-off: {student['bundle']} {verb} against {teacher['bundle']} "
        f"({_pct(student['accuracy'])} vs {_pct(teacher['accuracy'])} on {rows}) "
        f"and is {speed:.1f}x faster at batch 1 (p50 {student['p50_ms']:.3f} vs {teacher['p50_ms']:.3f} ms) "
        f"in a {size:.0f}x smaller bundle ({student['bundle_mb']:.1f} vs {teacher['bundle_mb']:.1f} MB)."
    )


def summary_markdown(
    rows: list[dict[str, Any]],
    data: str,
    seconds: dict[str, float],
    refused: dict[str, str],
    checkpoints: dict[str, dict[str, Any]] | None = None,
    latency: dict[str, Any] | None = None,
) -> str:
    """``summary.md``: every figure with the rows it was measured on.

    ``rows`` are the bundles (``_row``); ``checkpoints`` maps a stage name to the PyTorch
    checkpoint's best validation metrics as training printed them (``accuracy``, ``macro_f1``,
    ``examples``), so the reader sees the checkpoint and its bundles side by side, each with its
    row count; ``latency`` is the timing setup (``LATENCY[preset]``).
    """
    # the int8 teacher when it passed its accuracy gate, else the fp32 one
    teacher = _shipped(rows, "teacher") or rows[0]
    lines = [
        f"# kdserve pipeline on {data}",
        "",
        "Accuracy and macro-F1 of each bundle on the validation rows named beside them; batch-1 p50 is the "
        "in-process model time per text, tokenization included.",
        "",
        f"| bundle | parameters | size (MB) | accuracy | macro-F1 | scored on | batch-1 p50 (ms) "
        f"| speed-up vs {teacher['bundle']} |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        speedup = teacher["p50_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        scored = f"{r['examples']:,} {r['split']} rows" if r.get("examples") else "n/a"
        lines.append(
            f"| {r['bundle']} | {r['parameters']:,} | {r['bundle_mb']:.1f} | {_pct(r['accuracy'])} | "
            f"{_pct(r['macro_f1'])} | {scored} | {r['p50_ms']:.3f} | {speedup:.1f}x |"
        )
    if checkpoints:
        lines += ["", "Training's best validation pass (PyTorch checkpoints, the figures printed while training):", ""]
        for name, m in checkpoints.items():
            lines.append(
                f"- {name}: accuracy {_pct(m.get('accuracy'))}, macro-F1 {_pct(m.get('macro_f1'))} "
                f"on {m.get('examples', 0):,} validation rows"
            )
        bundle_rows = {r["examples"] for r in rows}
        if any(m.get("examples") not in bundle_rows for m in checkpoints.values()):
            lines += ["", "Training and the bundles were scored on different rows: compare each with its row count."]
    student = next((_shipped(rows, kind) for kind in dict.fromkeys(r["kind"] for r in rows) if kind != "teacher"), None)
    if student is not None and teacher["kind"] == "teacher":
        lines += ["", _trade_off(teacher, student)]
    if refused:
        lines += ["", *(f"No int8 bundle of the {name}: {why}" for name, why in refused.items())]
    if latency:
        lines += [
            "",
            f"Latency: batch 1 in this process, {latency['texts']} validation texts cycled, up to "
            f"{latency['iterations']} calls or {latency['max_seconds']:g} s per bundle; p50 of those calls.",
        ]
    lines += ["", "Stage wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), ""]
    return "\n".join(lines)


def run_pipeline(
    preset: str,
    data: DatasetSpec,
    output: str | Path,
    teacher_model: str | None = None,
    max_train_examples: int | None = None,
) -> dict[str, Any]:
    """Run every stage into ``output``; returns the summary also written as ``summary.json``.

    ``teacher_model`` (a folder or hub id; default the embedded MiniLM) and ``max_train_examples``
    override the preset for teacher and student alike.
    """
    from kdserve.export.checks import AccuracyGateError
    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint
    from kdserve.train.distill import DistillConfig, distill
    from kdserve.train.teacher import TeacherConfig, train_teacher

    out = Path(output)
    seconds: dict[str, float] = {}

    def stage(number: int, text: str) -> float:
        print(f"[{number}/4] {text}", flush=True)
        return time.perf_counter()

    start = stage(1, f"fine-tuning the teacher ({preset} preset) on {data.source} -> {out / 'teacher'}")
    teacher = train_teacher(
        TeacherConfig.from_preset(
            preset,
            data=data,
            output_dir=str(out / "teacher"),
            model=teacher_model,
            max_train_examples=max_train_examples,
        )
    )
    seconds["teacher"] = time.perf_counter() - start
    print(f"      teacher validation accuracy {_scored(teacher['validation'])}", flush=True)

    start = stage(2, f"distilling a {STUDENT} student ({preset} preset) -> {out / STUDENT}")
    student = distill(
        DistillConfig.from_preset(
            preset,
            STUDENT,
            teacher=str(out / "teacher"),
            data=data,
            output_dir=str(out / STUDENT),
            cache_dir=str(out / "cache"),
            max_train_examples=max_train_examples,
        )
    )
    seconds["distill"] = time.perf_counter() - start
    print(f"      {STUDENT} validation accuracy {_scored(student['validation'])}", flush=True)

    start = stage(3, f"exporting both to fp32 + int8 bundles -> {out / 'bundles'}")
    bundles: list[Path] = []
    refused: dict[str, str] = {}
    for name in ("teacher", STUDENT):
        try:
            config = ExportConfig.from_preset(
                preset,
                checkpoint=str(out / name),
                output_dir=str(out / "bundles"),
                name=name,
                data=data,
                overwrite=True,
            )
            # every validation row, the rows training scored: the same model on the same rows must
            # print the same number in the training lines and in the summary (the quick export
            # preset alone caps scoring at 1,000 rows)
            bundles += export_checkpoint(dataclasses.replace(config, max_eval_examples=None))
        except AccuracyGateError as exc:
            # The gate kept a lossy int8 model out and wrote the fp32 bundle: go on with that one and
            # say so, rather than lose the whole run (kdserve export --force would ship the int8).
            refused[name] = str(exc)
            bundles += exc.written
            print(f"      {name}: int8 refused by the accuracy gate, fp32 bundle kept ({exc})", flush=True)
    seconds["export"] = time.perf_counter() - start

    start = stage(4, "timing every bundle in process (batch 1, tokenization included)")
    bench = _latency(bundles, data, preset)
    seconds["latency"] = time.perf_counter() - start

    from kdserve.core.bundle import read_manifest

    rows = [_row(b, bench[read_manifest(b).name]) for b in bundles]
    checkpoints = {"teacher": _metrics_of(teacher["validation"]), STUDENT: _metrics_of(student["validation"])}
    summary = {
        "data": data.source,
        "preset": preset,
        "rows": rows,
        "checkpoints": checkpoints,
        "latency_setup": LATENCY[preset],
        "stage_seconds": seconds,
        "int8_refused": refused,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = summary_markdown(rows, data.source, seconds, refused, checkpoints, LATENCY[preset])
    (out / "summary.md").write_text(text)
    print(text)
    print(f"serve them: kdserve serve --bundles {out / 'bundles'}")
    return summary
