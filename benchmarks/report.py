"""Markdown reports (and their plots) from bench result JSON: one function per result kind.

``write_report(result, folder)`` writes ``report.md`` and the PNGs next to it and returns the
paths; ``kdserve bench report RESULT.json`` re-renders a recorded result without re-running it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdserve.bench import plots


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _errors(errors: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (errors or {}).items()) or "0"


def machine_section(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    env = ", ".join(f"{k}={v}" for k, v in (m.get("thread_env") or {}).items() if v) or "none set"
    lines = [
        f"- date: {m.get('date', '-')}",
        f"- CPU: {m.get('cpu_model', '-')}, {m.get('usable_cores', '-')} usable "
        f"cores of {m.get('cpu_count', '-')}, 1-min load average at start {m.get('load_average_1m', '-')}",
        f"- {m.get('platform', '-')}, Python {m.get('python', '-')}",
        f"- versions: {versions}",
        f"- thread environment: {env}",
    ]
    threads = result.get("threads")
    if threads:
        lines.append(
            f"- ONNX Runtime intra-op threads: {threads.get('intra_op_threads')} "
            f"({threads.get('intra_op_threads_meaning', '')}), inter-op {threads.get('inter_op_threads')}"
        )
    return "## Machine\n\n" + "\n".join(lines) + "\n"


def _closed_table(runs: list[dict[str, Any]]) -> str:
    return _table(
        ["concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "requests", "errors", "client CPU %"],
        [
            [
                r["concurrency"],
                r["throughput_rps"],
                r["latency_ms"]["p50"],
                r["latency_ms"]["p90"],
                r["latency_ms"]["p99"],
                r["latency_ms"]["p99.9"],
                r["requests"],
                _errors(r["errors"]),
                r.get("client_cpu_percent"),
            ]
            for r in runs
        ],
    )


def _open_table(runs: list[dict[str, Any]]) -> str:
    return _table(
        [
            "offered req/s",
            "achieved req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "send lag p99 ms",
            "requests",
            "errors",
        ],
        [
            [
                r["rate"],
                r["throughput_rps"],
                r["latency_ms"]["p50"],
                r["latency_ms"]["p90"],
                r["latency_ms"]["p99"],
                r["latency_ms"]["p99.9"],
                r["send_lag_ms"]["p99"],
                r["requests"],
                _errors(r["errors"]),
            ]
            for r in runs
        ],
    )


def _generator_line(generator: str | None, batch_size: int | None) -> str:
    """Which client measured the closed loop, and what one request carried."""
    who = (
        "**wrk** (the system's, closed loop; open-loop runs by the built-in generator)"
        if generator == "wrk"
        else "the built-in asyncio generator"
    )
    size = batch_size or 1
    what = "one text per request" if size == 1 else f"{size} texts per request; texts/s = req/s x {size}"
    return f"Closed-loop generator: {who}; {what}.\n"


def _ceiling_line(ceiling: dict[str, Any] | None) -> str:
    if not ceiling:
        return "Load generator ceiling: not measured (--no-ceiling).\n"
    best = max(ceiling["runs"], key=lambda r: r["throughput_rps"])
    cost = best.get("client_cpu_us_per_request")
    return (
        f"Load generator ceiling: **{ceiling['ceiling_rps']:,.0f} req/s** against `kdserve.bench.trivial_server` "
        f"(constant JSON, same machine, {ceiling['event_loop']}, best at concurrency {ceiling['best_concurrency']}"
        + (f"; the client spends about {cost:g} µs of CPU per request" if cost else "")
        + "). "
        "A server whose best throughput approaches this number is limited by the client, not by itself.\n"
    )


def http_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    sweep = result["sweep"]
    parts = [
        f"# HTTP load: {sweep['label'] or sweep['target']}\n",
        machine_section(result),
        "## Method\n\n" + METHOD_HTTP,
        _generator_line(result.get("generator"), result.get("batch_size")),
        _ceiling_line(result.get("generator_ceiling")),
    ]
    if result.get("note"):
        parts.append(f"**Note:** {result['note']}\n")
    if sweep["closed_loop"]:
        parts.append(
            f"## Closed loop\n\nBest: **{_f(sweep['max_throughput_rps'])} req/s** "
            + (
                f"(**{_f(sweep.get('max_texts_per_s'))} texts/s**) "
                if (sweep.get("texts_per_request") or 1) > 1
                else ""
            )
            + f"at concurrency {sweep['best_concurrency']}.\n\n"
            + _closed_table(sweep["closed_loop"])
            + "\n"
        )
    if sweep["open_loop"]:
        parts.append("## Open loop (latency from intended send time)\n\n" + _open_table(sweep["open_loop"]) + "\n")
    drawn = (
        [
            plots.latency_vs_throughput(
                [(sweep["label"] or "target", sweep["closed_loop"])],
                folder / "latency_vs_throughput.png",
                "closed-loop sweep",
            )
        ]
        if draw
        else []
    )
    written = [p for p in drawn if p]
    parts += [f"![{p.stem}]({p.name})\n" for p in written]
    return "\n".join(parts), written


def footprint_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    rows = [
        [
            m["name"],
            m["model_kind"],
            m["precision"],
            m["parameters"],
            (m.get("latency_ms") or {}).get("p50"),
            ", ".join(f"{k}: {v}" for k, v in (m.get("statuses") or {}).items()),
        ]
        for m in result["models"]
    ]
    text = "\n".join(
        [
            "# Server footprint\n",
            machine_section(result),
            f"One `kdserve serve` holding {len(result['models'])} model(s): ready **{result['ready_s']} s** "
            f"after start "
            f"(models loaded and warmed); resident memory **{result['rss_mb_at_ready']} MB** at ready, "
            f"**{result['rss_mb_after_requests']} MB** after {result['config']['requests']} single-text requests to "
            "each model (the whole process group, from /proc).\n",
            _table(["model", "kind", "precision", "params", "p50 ms (one connection)", "statuses"], rows),
        ]
    )
    return text, []


def model_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    texts = result.get("texts", {})
    parts = [
        "# Model-only latency (ONNX Runtime, in process)\n",
        machine_section(result),
        "## Method\n\n" + METHOD_MODEL,
        "Texts: "
        + "; ".join(f"{k}: {v['count']} from `{v['source']}` (mean {v['mean_chars']} chars)" for k, v in texts.items())
        + "\n",
    ]
    rows = []
    for bundle in result["bundles"]:
        for set_name, cells in bundle["onnx"].items():
            torch_cells = (bundle.get("torch") or {}).get(set_name, {})
            for size, c in cells.items():
                reference = torch_cells.get(size, {}).get("model_ms", {}).get("p50")
                rows.append(
                    [
                        bundle["name"],
                        bundle["precision"],
                        set_name,
                        int(size),
                        c["tokenize_ms"]["p50"],
                        c["model_ms"]["p50"],
                        c["model_ms"]["p99"],
                        c["total_ms"]["p50"],
                        c["total_ms"]["p99"],
                        c["examples_per_s"],
                        c["mean_tokens"],
                        reference,
                    ]
                )
    parts.append(
        "## Results\n\n"
        + _table(
            [
                "bundle",
                "precision",
                "texts",
                "batch",
                "tokenize p50 ms",
                "model p50 ms",
                "model p99 ms",
                "total p50 ms",
                "total p99 ms",
                "examples/s",
                "tokens/text",
                "torch eager model p50 ms",
            ],
            rows,
        )
        + "\n"
    )
    notes = [
        f"- {b['name']}: PyTorch eager reference: {b['torch_note']}" for b in result["bundles"] if b.get("torch_note")
    ]
    if notes:
        parts.append("\n".join(notes) + "\n")
    written = [p for p in ([plots.model_latency(result["bundles"], folder / "model_latency.png")] if draw else []) if p]
    parts += [f"![{p.stem}]({p.name})\n" for p in written]
    return "\n".join(parts), written


def compare_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    rate = result.get("common_rate")
    parts = [
        "# Teacher vs students\n",
        machine_section(result),
        "## Method\n\n" + METHOD_COMPARE,
        f"Server: `{result['config']['server']}`; common load {_f(rate)} req/s "
        f"({result.get('common_rate_source') or '-'}); texts: short `{result['texts']['short']}`, long "
        f"`{result['texts']['long']}`, HTTP `{result['texts']['http']}`.\n",
        _generator_line(result.get("generator"), result.get("batch_size")),
        _ceiling_line(result.get("generator_ceiling")),
    ]
    rows = []
    for m in result["models"]:
        at = m.get("at_common_rate") or {}
        speed = m.get("speedup") or {}
        rows.append(
            [
                m["name"],
                m["model_kind"],
                m["precision"],
                None if m["accuracy"] is None else round(m["accuracy"] * 100, 2),
                m["parameters"],
                round(m["bundle_bytes"] / 1e6, 2),
                m["short_b1_ms"]["p50"],
                m["long_b1_ms"]["p50"],
                m["max_throughput_rps"],
                m["best_concurrency"],
                at.get("p99_ms"),
                m["http"].get("startup_s"),
                m["http"].get("rss_mb"),
                f"{_f(speed.get('short_b1'))}x / {_f(speed.get('long_b1'))}x / {_f(speed.get('throughput'))}x",
            ]
        )
    parts.append(
        "## Headline\n\n"
        + _table(
            [
                "model",
                "kind",
                "precision",
                "dev acc %",
                "params",
                "bundle MB",
                "short b1 p50 ms",
                "long b1 p50 ms",
                "max req/s",
                "at conc.",
                f"p99 ms @ {_f(rate)} req/s",
                "ready s",
                "server RSS MB",
                "speed-up vs teacher (short / long / req/s)",
            ],
            rows,
        )
        + "\nSpeed-ups are over the teacher of the same precision (int8 over int8, fp32 over fp32).\n"
    )
    served = [
        [
            m["name"],
            m["inprocess"]["best_examples_per_s"],
            m["inprocess"]["best_batch_size"],
            m["max_throughput_rps"],
            m.get("max_texts_per_s", m["max_throughput_rps"]),
            m["inprocess"].get("http_fraction"),
        ]
        for m in result["models"]
        if m.get("inprocess")
    ]
    if served:
        size = result.get("batch_size") or 1
        sizes = sorted(set(result["config"].get("teacher_batch_sizes") or []) | ({size} if size > 1 else set()))
        parts.append(
            "## Over HTTP vs in process\n\nIn-process: the best examples/s over batch sizes "
            f"{', '.join(map(str, sizes))} on the short texts. "
            f"HTTP: {'single-text' if size == 1 else f'{size}-text'} requests, best closed-loop throughput.\n\n"
            + _table(
                ["model", "in-process best ex/s", "at batch", "HTTP max req/s", "HTTP texts/s", "HTTP / in-process"],
                served,
            )
            + "\n"
        )
    series = [(m["name"], m["http"]["closed_loop"]) for m in result["models"]]
    baselines = result.get("baselines")
    if baselines:
        ours, rate = baselines["reference_server"], _f(baselines["common_rate"])
        rounds = baselines.get("rounds", 1)
        brows = []
        for s in baselines["servers"]:
            at = s.get("at_common_rate") or {}
            row = [
                s["server"],
                s["max_throughput_rps"],
                at.get("p50_ms"),
                at.get("p99_ms"),
                _errors(at.get("errors")),
                s["http"].get("rss_mb"),
                s.get("throughput_ratio"),
                s.get("p99_ratio"),
            ]
            if rounds > 1:
                row += [
                    " / ".join(_f(v) for v in s.get("round_max_rps") or []),
                    " / ".join(_f(v) for v in s.get("round_throughput_ratios") or []),
                    " / ".join(_f(v) for v in s.get("round_p99_ratios") or []),
                ]
            brows.append(row)
        how = (
            f" Each server was swept {rounds} times, in turn; the table gives medians over the rounds, and "
            "the last columns each round's own numbers."
            if rounds > 1
            else ""
        )
        headers = [
            "server",
            "max req/s",
            f"p50 ms @ {rate}",
            f"p99 ms @ {rate}",
            "errors @ common",
            "RSS MB",
            "throughput ratio",
            "p99 ratio",
        ]
        if rounds > 1:
            headers += ["max req/s by round", "throughput ratio by round", "p99 ratio by round"]
        parts.append(
            f"## {ours} vs alternatives ({baselines['model']})\n\nSame machine, same ONNX model, same load. "
            f"Ratios: {ours} throughput / theirs, their p99 / {ours}'s (above 1: {ours} is better).{how}\n\n"
            + _table(headers, brows)
            + "\n"
        )
        skipped = [f"- {kind} skipped: {why}" for kind, why in (baselines.get("skipped") or {}).items()]
        if skipped:
            parts.append("\n".join(skipped) + "\n")
        series += [
            (f"{s['server']} ({baselines['model']})", s["http"]["closed_loop"]) for s in baselines["servers"][1:]
        ]
    drawn = (
        [
            plots.latency_vs_throughput(
                series, folder / "latency_vs_throughput.png", "closed-loop sweep per model/server"
            ),
            plots.pareto(
                [(m["name"], m["short_b1_ms"]["p50"], m["accuracy"]) for m in result["models"]],
                folder / "pareto.png",
                "batch-1 latency on short texts, p50 (ms)",
            ),
        ]
        if draw
        else []
    )
    written = [p for p in drawn if p]
    parts += [f"![{p.stem}]({p.name})\n" for p in written]
    return "\n".join(parts), written


def _decisions(stats: dict[str, Any]) -> str:
    """``category P/R/F1`` of a group's flag decisions, or an empty cell."""
    return "; ".join(f"{k} {v['precision']}/{v['recall']}/{v['f1']}" for k, v in (stats.get("decisions") or {}).items())


def ab_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    config = result["config"]
    sent = ", ".join(f"{k} {config[k]}" for k in ("long_text", "policy") if config.get(k))
    parts = [
        f"# A/B replay against {result['target']}\n",
        machine_section(result),
        f"{result['answered']} of {result['examples']} examples answered from `{config['data']}` "
        f"({config['split']}); routes {result['routes']}; failures {_errors(result['failures'])}; "
        f"shadowed {result['shadowed_fraction']:.1%}" + (f"; sent with each text: {sent}" if sent else "") + ".\n",
    ]
    rows = [
        [
            name,
            s["examples"],
            s["accuracy"],
            s.get("macro_f1"),
            s["escalation_rate"],
            s.get("mean_windows"),
            s["latency_ms"]["p50"],
            s["latency_ms"]["p99"],
            ", ".join(f"{k} {v}" for k, v in s["models"].items()),
            _decisions(s),
        ]
        for name, s in [*result["variants"].items(), ("all", result["overall"])]
    ]
    header = ["variant", "examples", "accuracy", "macro-F1", "escalation rate", "windows", "p50 ms", "p99 ms"]
    parts.append("## Variants\n\n" + _table([*header, "answered by", "flags: precision/recall/F1"], rows) + "\n")
    agreement = result.get("agreement")
    if agreement:
        parts.append(
            "## Every model on every example\n\n"
            + _table(
                ["model", "answered", "accuracy", "macro-F1", "flags: precision/recall/F1"],
                [
                    [k, v["answered"], v["accuracy"], v.get("macro_f1"), _decisions(v)]
                    for k, v in agreement["models"].items()
                ],
            )
        )
        parts.append("\n" + _table(["pair", "agreement"], [[k, v] for k, v in agreement["pairs"].items()]) + "\n")
    return "\n".join(parts), []


def explain_report(result: dict[str, Any], folder: Path, draw: bool = True) -> tuple[str, list[Path]]:
    config = result["config"]
    parts = [f"# Explanations against {config['target']}\n", machine_section(result)]
    d = result.get("deletion")
    if d:
        parts.append(
            f"## Deletion test\n\n{d['flagged']} of {d['texts']} texts of `{config['data']}` ({config['split']}) "
            f"flagged; {d['tested']} with more than {d['k']} words tested, {d['random_draws']} random draws each.\n\n"
            + _table(
                ["deleted", "decision changed", "no longer flagged"],
                [
                    [f"top {d['k']} attributed words", d["decision_changed"]["top_k"], d["unflagged"]["top_k"]],
                    [f"{d['k']} random words", d["decision_changed"]["random_k"], d["unflagged"]["random_k"]],
                ],
            )
            + f"\n\nRatio (top / random, decision changed): **{d['ratio']}**\n"
        )
    c = result.get("cost")
    if c:
        parts.append(
            f"## Cost\n\n{c['requests_each']} requests of one {c['words']}-word text with and without explain, "
            "alternating, one at a time.\n\n"
            + _table(
                ["", "p50 ms", "p90 ms"],
                [
                    ["without explain", c["p50_ms"]["plain"], c["p90_ms"]["plain"]],
                    ["with explain", c["p50_ms"]["explain"], c["p90_ms"]["explain"]],
                ],
            )
            + f"\n\nExplain adds **{c['explain_adds_p50_ms']} ms** to the p50.\n"
        )
    return "\n".join(parts), []


METHOD_HTTP = (
    "Closed loop: N keep-alive connections, each sends as soon as its previous answer arrives; warm-up "
    "discarded, then a fixed duration. Open loop: requests scheduled at a fixed rate and latency measured "
    "from each request's intended send time, so a stalled server is charged for every request it delayed "
    "(no coordinated omission). Latency percentiles over 2xx answers, linear interpolation (numpy's "
    "default); every other outcome counted by status. p99.9 means little below ~1,000 requests.\n"
)
METHOD_MODEL = (
    "Per bundle, text set and batch size: warm-up iterations, then a fixed number of timed iterations "
    "(or a time budget), `time.perf_counter_ns`. Tokenization (`BundleModel.encode`) and the ONNX Runtime "
    "call (`BundleModel.run`) are timed separately; total = both. Texts are a seeded sample of real "
    "dataset texts.\n"
)
METHOD_COMPARE = (
    "Model-only: batch-1 latency in process (tokenization included). HTTP: each bundle served alone by "
    "a server the harness starts, closed-loop sweep (best throughput) and one open-loop run at a common "
    "rate (p99 every model faces under the same load). Accuracy is the manifest's dev-set metric.\n"
)
RENDERERS: dict[str, Callable[[dict[str, Any], Path, bool], tuple[str, list[Path]]]] = {
    "model": model_report,
    "http": http_report,
    "compare": compare_report,
    "ab": ab_report,
    "explain": explain_report,
    "footprint": footprint_report,
}


def write_report(result: dict[str, Any], folder: str | Path, with_plots: bool = True) -> list[Path]:
    """Write ``report.md`` (and, with ``with_plots``, the PNGs) for a result into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text, written = RENDERERS[result["kind"]](result, folder, with_plots)
    (folder / "report.md").write_text(text.rstrip() + "\n")
    return [folder / "report.md", *written]
