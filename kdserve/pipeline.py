"""``kdserve pipeline``: the whole job on one dataset, each stage handing files to the next.

teacher checkpoint -> distilled BiLSTM checkpoint -> fp32 + int8 bundles of both -> in-process
batch-1 latency of every bundle -> ``summary.md`` / ``summary.json``: what the student gave up
(accuracy) and gained (size, latency). The folder it leaves is ready for
``kdserve serve --bundles OUTPUT/bundles``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from kdserve.core.data import DatasetSpec

log = logging.getLogger("kdserve.pipeline")

STUDENT = "bilstm"


def _latency(bundles: list[Path], data: DatasetSpec, preset: str) -> dict[str, dict[str, Any]]:
    """Batch-1 p50 latency (tokenization included) per bundle on the validation texts."""
    from kdserve.bench.model_bench import ModelBenchConfig, run_model_bench

    config = ModelBenchConfig(
        bundles=[str(b) for b in bundles],
        batch_sizes=[1],
        short_data=data.source,
        long_data=None,
        texts=256,
        iterations=200 if preset == "quick" else 1000,
        max_seconds=5.0 if preset == "quick" else 20.0,
        torch_reference=False,
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
        "p50_ms": cell["total_ms"]["p50"],
    }


def _markdown(rows: list[dict[str, Any]], data: str, seconds: dict[str, float], refused: dict[str, str]) -> str:
    # the int8 teacher when it passed its accuracy gate, else the fp32 one
    teacher = next((r for r in rows if r["kind"] == "teacher" and r["precision"] == "int8"), rows[0])
    lines = [
        f"# kdserve pipeline on {data}",
        "",
        f"| bundle | parameters | size (MB) | accuracy | macro-F1 | batch-1 p50 (ms) "
        f"| speed-up vs {teacher['bundle']} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = teacher["p50_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        lines.append(
            f"| {r['bundle']} | {r['parameters']:,} | {r['bundle_mb']:.1f} | {r['accuracy'] * 100:.2f}% | "
            f"{r['macro_f1'] * 100:.2f}% | {r['p50_ms']:.3f} | {speedup:.1f}x |"
        )
    if refused:
        lines += ["", *(f"No int8 bundle of the {name}: {why}" for name, why in refused.items())]
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
    print(f"      teacher validation accuracy {teacher['validation']['accuracy'] * 100:.2f}%", flush=True)

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
    print(f"      {STUDENT} validation accuracy {student['validation']['accuracy'] * 100:.2f}%", flush=True)

    start = stage(3, f"exporting both to fp32 + int8 bundles -> {out / 'bundles'}")
    bundles: list[Path] = []
    refused: dict[str, str] = {}
    for name in ("teacher", STUDENT):
        try:
            bundles += export_checkpoint(
                ExportConfig.from_preset(
                    preset,
                    checkpoint=str(out / name),
                    output_dir=str(out / "bundles"),
                    name=name,
                    data=data,
                    overwrite=True,
                )
            )
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
    summary = {"data": data.source, "preset": preset, "rows": rows, "stage_seconds": seconds, "int8_refused": refused}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = _markdown(rows, data.source, seconds, refused)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"serve them: kdserve serve --bundles {out / 'bundles'}")
    return summary
