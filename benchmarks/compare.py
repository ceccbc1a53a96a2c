"""The headline tables: teacher vs students, and kdserve vs what a user would pick instead.

``compare`` walks a folder of bundles. For each one it measures model-only batch-1 latency on
short and long texts in process, then starts a server for that bundle alone (a subprocess,
bounded start, always torn down), runs a closed-loop concurrency sweep for its best
throughput, and an open-loop run at one *common* arrival rate for a p99 every model faces
under the same load. The common rate is ``common_rate`` or, by default, half the teacher's
best throughput (the heaviest model, so every model can sustain it). Speed-ups are over the
teacher of the same precision (int8 over int8, fp32 over fp32; the first teacher when none
matches). Each teacher is also timed in process at ``teacher_batch_sizes``: its HTTP throughput as
a fraction of the best of those is what serving costs it.

The closed-loop levels run on ``sweep.generator`` (``builtin`` or ``wrk``; the open-loop run at the
common rate is always built-in, as wrk has no open loop), and the result says which. With
``batch_size`` > 1 every request carries that many texts (``{"texts": [...]}``), and every bundle,
students too, is timed in process at ``teacher_batch_sizes`` plus ``batch_size``: the HTTP texts/s
over the best in-process texts/s is what serving costs a batched caller.

With ``baselines``, one bundle (``baseline_model``, default the teacher) is also served by the
naive FastAPI app, LitServe, and (for a teacher with its checkpoint here) a transformers
pipeline, each under the same sweep, and the ratios to kdserve are reported.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdserve.bench.common import BenchError, machine_info, sample_texts
from kdserve.bench.http_bench import (
    SweepConfig,
    measure_ceiling,
    open_run,
    render_batch_bodies,
    render_bodies,
    sweep,
)
from kdserve.bench.loadgen import Target
from kdserve.bench.model_bench import (
    DEFAULT_LONG,
    DEFAULT_SHORT,
    ModelBenchConfig,
    bench_bundle,
    thread_settings,
)
from kdserve.bench.servers import start_server
from kdserve.core.errors import ConfigError

BASELINES = ("naive", "litserve", "hf")


@dataclass
class CompareConfig:
    """``server`` is what serves each bundle for the headline table: ``kdserve`` (the product) or
    ``naive`` (for a dry run of the harness before the server exists, or a baseline-only table)."""

    bundles_root: str
    models: list[str] = field(default_factory=list)
    server: str = "kdserve"
    server_args: list[str] = field(default_factory=list)
    short_data: str = DEFAULT_SHORT
    long_data: str = DEFAULT_LONG
    http_data: str | None = None
    texts: int = 512
    seed: int = 0
    latency_iterations: int = 200
    latency_seconds: float = 10.0
    threads: int = 0
    #: In-process batch sizes timed for each teacher on the short texts: the best of them is the
    #: ceiling its HTTP throughput is compared with (what batching can reach without HTTP).
    teacher_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    sweep: SweepConfig = field(default_factory=lambda: SweepConfig(rate_fractions=[]))
    common_rate: float | None = None
    baselines: list[str] = field(default_factory=list)
    baseline_model: str | None = None
    #: Rounds of the servers-side-by-side comparison: each round sweeps every server once, in turn
    #: (kdserve, then each baseline), and the table gives each server's median over the rounds, so
    #: that a minute of a slow VM does not decide a ratio. Round 1 of kdserve is its headline row.
    baseline_rounds: int = 1
    #: texts per HTTP request: 1 sends ``{"text": ...}``, more sends ``{"texts": [...]}``
    batch_size: int = 1
    ceiling: bool = True
    start_timeout_s: float = 180.0
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.server not in ("kdserve", "naive", "litserve"):
            raise ConfigError(f"--server must be kdserve, naive or litserve, got {self.server!r}")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; expected {', '.join(BASELINES)}")
        if self.common_rate is not None and not self.common_rate > 0:
            raise ConfigError(f"--common-rate must be > 0, got {self.common_rate}")
        if not self.sweep.concurrency:
            raise ConfigError("compare needs a closed-loop concurrency sweep (its best throughput is a column)")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.baseline_rounds < 1:
            raise ConfigError(f"--baseline-rounds must be >= 1, got {self.baseline_rounds}")
        if not self.teacher_batch_sizes or min(self.teacher_batch_sizes) < 1:
            raise ConfigError(f"teacher batch sizes must be >= 1, got {self.teacher_batch_sizes}")
        if self.texts < 1 or self.latency_iterations < 1 or not self.latency_seconds > 0:
            raise ConfigError("texts and latency iterations must be >= 1 and latency seconds > 0")


def find_bundles(root: str | Path, names: list[str] | None = None) -> list[Path]:
    """Bundle folders under ``root`` (each with a manifest.json), teacher first, then by name."""
    from kdserve.core.bundle import read_manifest

    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"bundles folder not found: {root}")
    found = {}
    for folder in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
        found[read_manifest(folder).name] = folder
    if not found:
        raise BenchError(f"{root} holds no bundles (no */manifest.json)")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise BenchError(f"no bundle named {', '.join(missing)} in {root} (found: {', '.join(found)})")
        found = {n: found[n] for n in names}
    kinds = {name: read_manifest(folder) for name, folder in found.items()}
    order = sorted(found, key=lambda n: (kinds[n].model_kind != "teacher", kinds[n].precision != "fp32", n))
    return [found[n] for n in order]


def _server_kwargs(kind: str, folder: Path, config: CompareConfig) -> dict[str, Any]:
    from kdserve.core.bundle import read_manifest

    manifest = read_manifest(folder)
    name = manifest.name
    if kind == "kdserve":
        # --models takes folder names; server_args tune kdserve (e.g. --max-wait-ms 0) for an experiment
        return {"bundles_root": config.bundles_root, "model": folder.name, "extra": list(config.server_args)}
    if kind == "hf":
        return {
            "checkpoint": _checkpoint_of(folder),
            "model": name,
            "extra": ["--max-length", str(manifest.max_length)],
        }
    return {"bundle": folder, "model": name}


def _checkpoint_of(folder: Path) -> Path | None:
    from kdserve.core.bundle import read_manifest

    source = read_manifest(folder).source_checkpoint
    for candidate in (Path(source), folder / source) if source else ():
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _serve_and_sweep(
    kind: str,
    folder: Path,
    bodies: list[bytes],
    config: CompareConfig,
    log: Callable[[str], None],
    common_rate: float | None,
) -> tuple[dict[str, Any], float]:
    """Start ``kind`` for one bundle, run the closed-loop sweep, then one open-loop run at the common
    rate (half this server's best throughput when none is set yet); returns (result, rate used)."""
    kwargs = _server_kwargs(kind, folder, config)
    closed_only = SweepConfig(**{**config.sweep.__dict__, "rates": [], "rate_fractions": []})
    with start_server(kind, log_dir=config.log_dir, start_timeout_s=config.start_timeout_s, **kwargs) as server:
        log(f"{server.name} ready on {server.url} in {server.startup_s:.1f} s")
        target = Target.parse(server.url, "/classify")
        result = sweep(target, bodies, closed_only, label=server.name, log=log, texts_per_request=config.batch_size)
        rate = common_rate or round(0.5 * (result["max_throughput_rps"] or 2.0), 1)
        result["open_loop"].append(open_run(target, [target.request(b) for b in bodies], rate, config.sweep))
        log(f"{server.name} at {rate:g} req/s: p99 {result['open_loop'][-1]['latency_ms']['p99']} ms")
        result["server"] = kind
        result["startup_s"] = round(server.startup_s or 0.0, 2)
        rss = server.rss_bytes()  # after the load: what the server holds once it has served
        result["rss_mb"] = None if rss is None else round(rss / 1e6, 1)
    return result, rate


def _p99_at(result: dict[str, Any]) -> dict[str, Any] | None:
    runs = result.get("open_loop") or []
    if not runs:
        return None
    run = runs[-1]
    return {
        "rate": run["rate"],
        "achieved_rps": run["throughput_rps"],
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "errors": run["errors"],
    }


def _inprocess_best(
    folder: Path, short: list[str], latency_config: ModelBenchConfig, config: CompareConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    """A teacher's in-process throughput on the short texts at each of ``teacher_batch_sizes``."""
    sized = dataclasses.replace(
        latency_config, batch_sizes=sorted(set(config.teacher_batch_sizes) | {config.batch_size})
    )
    cells = bench_bundle(folder, {"short": short}, sized, log)["onnx"]["short"]
    per_size = {size: c["examples_per_s"] for size, c in cells.items()}
    best = max(per_size, key=lambda k: per_size[k])
    return {"examples_per_s": per_size, "best_batch_size": int(best), "best_examples_per_s": per_size[best]}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def run_compare(config: CompareConfig, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The ``kdserve bench compare`` result (see the module docstring)."""
    from kdserve.core.bundle import read_manifest

    folders = find_bundles(config.bundles_root, config.models or None)
    short = sample_texts(config.short_data, config.texts, config.seed)
    long = sample_texts(config.long_data, config.texts, config.seed)
    same = config.http_data in (None, config.short_data)
    http_texts = short if same else sample_texts(str(config.http_data), config.texts, config.seed)
    bodies = render_batch_bodies(http_texts, config.batch_size) if config.batch_size > 1 else render_bodies(http_texts)
    latency_config = ModelBenchConfig(
        [str(f) for f in folders],
        batch_sizes=[1],
        short_data=config.short_data,
        long_data=config.long_data,
        texts=config.texts,
        seed=config.seed,
        warmup=10,
        iterations=config.latency_iterations,
        max_seconds=config.latency_seconds,
        threads=config.threads,
        torch_reference=False,
    )
    generator = config.sweep.generator
    ceiling = measure_ceiling(log_dir=config.log_dir, generator=generator) if config.ceiling else None
    if ceiling:
        log(f"{generator} ceiling: {ceiling['ceiling_rps']:.0f} req/s against the trivial server")
    rows: list[dict[str, Any]] = []
    common_rate = config.common_rate
    rate_source = "--common-rate" if common_rate else None
    for folder in folders:
        manifest = read_manifest(folder)
        cells = bench_bundle(folder, {"short": short, "long": long}, latency_config, log)
        timed = manifest.role == "teacher" or config.batch_size > 1
        inprocess = _inprocess_best(folder, short, latency_config, config, log) if timed else None
        http, rate = _serve_and_sweep(config.server, folder, bodies, config, log, common_rate)
        if common_rate is None:
            # Bundles come teacher first: half the heaviest model's best is a load every model can take.
            common_rate = rate
            rate_source = f"half of {manifest.name}'s best closed-loop throughput"
        rows.append(
            {
                "name": manifest.name,
                "model_kind": manifest.model_kind,
                "role": manifest.role,
                "precision": manifest.precision,
                "accuracy": cells["accuracy"],
                "macro_f1": cells["macro_f1"],
                "metrics_data": cells["metrics_data"],
                "parameters": cells["parameters"],
                "bundle_bytes": cells["bundle_bytes"],
                "short_b1_ms": cells["onnx"]["short"]["1"]["total_ms"],
                "long_b1_ms": cells["onnx"]["long"]["1"]["total_ms"],
                "short_b1_model_ms": cells["onnx"]["short"]["1"]["model_ms"],
                "long_b1_model_ms": cells["onnx"]["long"]["1"]["model_ms"],
                "max_throughput_rps": http["max_throughput_rps"],
                "max_texts_per_s": http["max_texts_per_s"],
                "best_concurrency": http["best_concurrency"],
                "at_common_rate": _p99_at(http),
                "http": http,
                "inprocess": inprocess,
            }
        )
        if inprocess:
            # texts/s over texts/s: with single-text requests that is req/s over in-process ex/s
            inprocess["http_fraction"] = _ratio(http["max_texts_per_s"], inprocess["best_examples_per_s"])
    teachers = [r for r in rows if r["role"] == "teacher"]
    teacher = teachers[0] if teachers else None
    for row in rows:
        # int8 against int8, fp32 against fp32: a student's gain is not credited with quantization's
        ref = next((t for t in teachers if t["precision"] == row["precision"]), teacher)
        row["speedup_vs"] = ref["name"] if ref else None
        row["speedup"] = (
            None
            if ref is None
            else {
                "short_b1": _ratio(ref["short_b1_ms"]["p50"], row["short_b1_ms"]["p50"]),
                "long_b1": _ratio(ref["long_b1_ms"]["p50"], row["long_b1_ms"]["p50"]),
                "throughput": _ratio(row["max_throughput_rps"], ref["max_throughput_rps"]),
            }
        )
    result: dict[str, Any] = {
        "kind": "compare",
        "machine": machine_info(),
        "threads": thread_settings(latency_config),
        "config": {**{k: v for k, v in config.__dict__.items() if k != "sweep"}, "sweep": config.sweep.__dict__},
        "texts": {"short": config.short_data, "long": config.long_data, "http": config.http_data or config.short_data},
        "generator": generator,
        "batch_size": config.batch_size,
        "common_rate": common_rate,
        "common_rate_source": rate_source,
        "teacher": teacher["name"] if teacher else None,
        "generator_ceiling": ceiling,
        "models": rows,
    }
    if config.baselines:
        result["baselines"] = run_baselines(config, folders, rows, bodies, common_rate, log)
    return result


def run_baselines(
    config: CompareConfig,
    folders: list[Path],
    rows: list[dict[str, Any]],
    bodies: list[bytes],
    common_rate: float | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The same sweep against each baseline serving one bundle; ratios are kdserve / baseline."""
    from kdserve.core.bundle import read_manifest

    names = [read_manifest(f).name for f in folders]
    chosen = config.baseline_model or next((r["name"] for r in rows if r["role"] == "teacher"), names[0])
    if chosen not in names:
        raise BenchError(f"--baseline-model {chosen} is not among the compared bundles ({', '.join(names)})")
    folder = folders[names.index(chosen)]
    reference = next(r for r in rows if r["name"] == chosen)
    ours_runs: list[dict[str, Any]] = [reference["http"]]
    runs: dict[str, list[dict[str, Any]]] = {}  # baseline kind -> its sweeps (the reference may be one of the kinds)
    skipped: dict[str, str] = {}
    for round_ in range(1, config.baseline_rounds + 1):
        if round_ > 1:
            log(f"round {round_} of {config.baseline_rounds}")
            ours_runs.append(_serve_and_sweep(config.server, folder, bodies, config, log, common_rate)[0])
        for kind in config.baselines:
            if kind in skipped:
                continue
            if kind == "hf" and (read_manifest(folder).role != "teacher" or _checkpoint_of(folder) is None):
                skipped[kind] = f"{chosen} is not a teacher with its Hugging Face checkpoint on this machine"
                continue
            try:
                http, _ = _serve_and_sweep(kind, folder, bodies, config, log, common_rate)
            except BenchError as exc:  # one broken baseline must not lose the others' numbers
                skipped[kind] = str(exc)
                runs.pop(kind, None)
                log(f"baseline {kind} skipped: {exc}")
                continue
            runs.setdefault(kind, []).append(http)
    servers = [_median_of_rounds(config.server, ours_runs)] + [_median_of_rounds(k, https) for k, https in runs.items()]
    ours = servers[0]
    for entry in servers:
        theirs_p99 = (entry["at_common_rate"] or {}).get("p99_ms")
        ours_p99 = (ours["at_common_rate"] or {}).get("p99_ms")
        entry["throughput_ratio"] = _ratio(ours["max_throughput_rps"], entry["max_throughput_rps"])
        entry["p99_ratio"] = _ratio(theirs_p99, ours_p99)
        # the same ratios round by round (servers swept one after the other within a round)
        entry["round_throughput_ratios"] = [_ratio(o, t) for o, t in zip(ours["round_max_rps"], entry["round_max_rps"])]
        entry["round_p99_ratios"] = [_ratio(t, o) for o, t in zip(ours["round_p99_ms"], entry["round_p99_ms"])]
    return {
        "model": chosen,
        "reference_server": config.server,
        "common_rate": common_rate,
        "rounds": config.baseline_rounds,
        "servers": servers,
        "skipped": skipped,
    }


def _median_of_rounds(kind: str, https: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's entry: its median best throughput and median p50/p99 at the common rate over
    its rounds (each round's own numbers kept), and the median round's sweep for the plot."""
    best = [h["max_throughput_rps"] for h in https]
    at = [_p99_at(h) or {} for h in https]
    p99 = [a.get("p99_ms") for a in at]
    middle = sorted(range(len(https)), key=lambda i: best[i])[len(https) // 2]

    def median(values: list[Any]) -> Any:
        known = sorted(v for v in values if v is not None)
        return statistics.median(known) if known else None

    at_common = dict(at[middle]) if at[middle] else None
    if at_common is not None:
        at_common.update(p50_ms=median([a.get("p50_ms") for a in at]), p99_ms=median(p99))
    return {
        "server": kind,
        "max_throughput_rps": median(best),
        "at_common_rate": at_common,
        "http": https[middle],
        "round_max_rps": best,
        "round_p99_ms": p99,
    }
