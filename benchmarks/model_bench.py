"""In-process latency and throughput of bundles with ONNX Runtime (and PyTorch eager as a reference).

For each bundle, text set (short: SST-2-like sentences; long: IMDB reviews) and batch size:
``warmup`` untimed iterations, then up to ``iterations`` timed ones (stopping early after
``max_seconds``). One iteration takes the next ``batch_size`` texts from a fixed, seeded
sample, tokenizes them (``BundleModel.encode``: timed as ``tokenize_ms``) and runs the model
(``BundleModel.run``: ``model_ms``); ``total_ms`` is their sum per iteration, and
``examples_per_s`` is examples over the summed total time. Thread settings are recorded with
the numbers, because on a CPU they change them more than anything else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdserve.bench.common import bundle_size, machine_info, sample_texts
from kdserve.bench.configs import DEFAULT_LONG as DEFAULT_LONG
from kdserve.bench.configs import DEFAULT_SHORT as DEFAULT_SHORT
from kdserve.bench.configs import ModelBenchConfig as ModelBenchConfig
from kdserve.bench.stats import summarize


def _time_cells(
    texts: Sequence[str],
    batch_size: int,
    config: ModelBenchConfig,
    encode: Callable[[Sequence[str]], Any],
    run: Callable[[Any], Any],
) -> dict[str, Any]:
    """Warm-up, then timed iterations of encode + run over consecutive batches of ``texts``."""

    def batch(i: int) -> list[str]:
        start = (i * batch_size) % len(texts)
        chosen = list(texts[start : start + batch_size])
        while len(chosen) < batch_size:  # wrap around the sample
            chosen += texts[: batch_size - len(chosen)]
        return chosen

    for i in range(config.warmup):
        run(encode(batch(i)))
    tokenize_ns: list[int] = []
    model_ns: list[int] = []
    tokens: list[int] = []
    widths: list[int] = []
    truncated = 0
    budget_end = time.perf_counter_ns() + int(config.max_seconds * 1e9)
    for i in range(config.iterations):
        chosen = batch(config.warmup + i)
        t0 = time.perf_counter_ns()
        encoded = encode(chosen)
        t1 = time.perf_counter_ns()
        run(encoded)
        t2 = time.perf_counter_ns()
        tokenize_ns.append(t1 - t0)
        model_ns.append(t2 - t1)
        tokens.extend(encoded.lengths)
        widths.append(int(encoded.input_ids.shape[1]))
        truncated += sum(encoded.truncated)
        if t2 > budget_end:
            break
    totals = [a + b for a, b in zip(tokenize_ns, model_ns)]
    n = len(totals)
    return {
        "batch_size": batch_size,
        "iterations": n,
        "tokenize_ms": summarize(tokenize_ns, 1e-6),
        "model_ms": summarize(model_ns, 1e-6),
        "total_ms": summarize(totals, 1e-6),
        "examples_per_s": round(n * batch_size / (sum(totals) / 1e9), 2),
        "model_examples_per_s": round(n * batch_size / (sum(model_ns) / 1e9), 2),
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "truncated_fraction": round(truncated / len(tokens), 4),
        "padded_width_mean": round(sum(widths) / len(widths), 1),
    }


def _torch_runner(model_dir: Path, source: str, threads: int) -> tuple[Callable[[Any], Any] | None, str]:
    """(run function over an ``Encoded`` batch, note) for the bundle's source checkpoint in PyTorch
    eager, or (None, why not) when torch or the checkpoint is missing."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not source:
        return None, "the manifest names no source checkpoint"
    path = Path(source)
    if not path.is_absolute() and not path.exists():
        path = model_dir / source
    if not path.is_dir():
        return None, f"source checkpoint {source} not found on this machine"
    if threads:
        torch.set_num_threads(threads)
    if (path / "student_config.json").is_file():
        from kdserve.train.students import load_student

        student, _ = load_student(path)

        def run_student(encoded: Any) -> Any:
            with torch.inference_mode():
                return student(torch.from_numpy(encoded.input_ids), torch.from_numpy(encoded.attention_mask))

        return run_student, f"student {path}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if (path / "config.json").is_file():
        from kdserve.train.checkpoint import load_classifier

        teacher, _ = load_classifier(str(path))
        teacher.eval()

        def run_teacher(encoded: Any) -> Any:
            ids = torch.from_numpy(encoded.input_ids)
            with torch.inference_mode():
                return teacher(
                    input_ids=ids,
                    attention_mask=torch.from_numpy(encoded.attention_mask),
                    token_type_ids=torch.zeros_like(ids),
                ).logits

        return run_teacher, f"teacher {path}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    return None, f"{path} is neither a student folder nor a Hugging Face checkpoint"


def bench_bundle(
    folder: str | Path,
    text_sets: dict[str, list[str]],
    config: ModelBenchConfig,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """All cells of one bundle: ONNX Runtime, and PyTorch eager when its checkpoint is here."""
    from kdserve.core.bundle import BundleModel

    folder = Path(folder)
    loaded = time.perf_counter()
    model = BundleModel(folder, intra_op_threads=config.threads)
    load_s = time.perf_counter() - loaded
    manifest = model.manifest
    metrics = manifest.metrics.get(manifest.precision) or {}
    out: dict[str, Any] = {
        "name": manifest.name,
        "folder": str(folder),
        "model_kind": manifest.model_kind,
        "role": manifest.role,
        "precision": manifest.precision,
        "parameters": manifest.parameters,
        "bundle_bytes": bundle_size(folder),
        "max_length": manifest.max_length,
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "metrics_data": metrics.get("data"),
        "load_seconds": round(load_s, 3),
        "providers": model.providers(),
        "onnx": {},
        "torch": None,
        "torch_note": None,
    }
    for set_name, texts in text_sets.items():
        cells = {}
        for size in config.batch_sizes:
            cells[str(size)] = _time_cells(texts, size, config, model.encode, model.run)
            log(
                f"{manifest.name} onnx {set_name} b={size}: total p50 {cells[str(size)]['total_ms']['p50']} ms "
                f"(tokenize {cells[str(size)]['tokenize_ms']['p50']}), {cells[str(size)]['examples_per_s']:.0f} ex/s"
            )
        out["onnx"][set_name] = cells
    if config.torch_reference:
        runner, note = _torch_runner(folder, manifest.source_checkpoint, config.threads)
        out["torch_note"] = note
        if runner is not None:
            out["torch"] = {}
            for set_name, texts in text_sets.items():
                out["torch"][set_name] = {
                    str(size): _time_cells(texts, size, config, model.encode, runner) for size in config.batch_sizes
                }
            log(f"{manifest.name} torch eager reference: {note}")
        else:
            log(f"{manifest.name}: no PyTorch eager reference ({note})")
    else:
        out["torch_note"] = "disabled (--no-torch)"
    return out


def thread_settings(config: ModelBenchConfig) -> dict[str, Any]:
    """What decides how many cores a run used."""
    import onnxruntime as ort

    from kdserve.bench.common import THREAD_ENV, usable_cores

    return {
        "intra_op_threads": config.threads,
        "intra_op_threads_meaning": "0 = ONNX Runtime default (one per core)",
        "inter_op_threads": 1,
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "env": {name: os.environ.get(name) for name in THREAD_ENV},
        "onnxruntime": ort.__version__,
    }


def run_model_bench(config: ModelBenchConfig, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The ``kdserve bench model`` result: machine, settings, text statistics and every bundle's cells."""
    from kdserve.core.bundle import verify_bundle

    for folder in config.bundles:  # a wrong path fails now, not after minutes of timing the others
        verify_bundle(folder)
    text_sets: dict[str, list[str]] = {}
    for set_name, spec in (("short", config.short_data), ("long", config.long_data)):
        if spec is not None:
            text_sets[set_name] = sample_texts(spec, config.texts, config.seed)
    texts_info = {
        name: {
            "source": spec,
            "count": len(text_sets[name]),
            "mean_chars": round(sum(map(len, text_sets[name])) / len(text_sets[name]), 1),
        }
        for name, spec in (("short", config.short_data), ("long", config.long_data))
        if name in text_sets
    }
    results = [bench_bundle(folder, text_sets, config, log) for folder in config.bundles]
    return {
        "kind": "model",
        "machine": machine_info(),
        "threads": thread_settings(config),
        "config": {k: v for k, v in config.__dict__.items()},
        "texts": texts_info,
        "bundles": results,
    }
