"""PNG plots of bench results (matplotlib, Agg backend: no display needed).

* ``latency_vs_throughput.png``: one line per server/model through its closed-loop sweep,
  throughput on x, p50 (dashed) and p99 (solid) latency on y (log);
* ``pareto.png``: accuracy vs batch-1 latency (log x), the Pareto front (no model both faster
  and more accurate) joined by a line;
* ``model_latency.png``: in-process latency vs batch size per bundle and text set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdserve.bench.common import BenchError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BenchError("plots need matplotlib: pip install 'kdserve[bench]' (or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_throughput(series: Sequence[tuple[str, list[dict[str, Any]]]], path: Path, title: str) -> Path | None:
    """``series``: (label, closed-loop run summaries) pairs."""
    series = [(label, [r for r in runs if r["latency_ms"]["count"]]) for label, runs in series]
    series = [(label, runs) for label, runs in series if runs]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for index, (label, runs) in enumerate(series):
        color = f"C{index % 10}"
        x = [r["throughput_rps"] for r in runs]
        ax.plot(x, [r["latency_ms"]["p99"] for r in runs], "o-", color=color, label=f"{label} p99")
        ax.plot(x, [r["latency_ms"]["p50"] for r in runs], "s--", color=color, alpha=0.6, label=f"{label} p50")
        for r in runs:
            ax.annotate(
                str(r.get("concurrency", "")),
                (r["throughput_rps"], r["latency_ms"]["p99"]),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
                color=color,
            )
    ax.set_yscale("log")
    ax.set_xlabel("throughput (requests/s, 2xx)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(name, latency, accuracy) points no other point beats on both axes, by latency."""
    front: list[tuple[str, float, float]] = []
    for name, latency, accuracy in sorted(points, key=lambda p: (p[1], -p[2])):
        if not front or accuracy > front[-1][2]:
            front.append((name, latency, accuracy))
    return front


def pareto(points: Sequence[tuple[str, float, float]], path: Path, xlabel: str) -> Path | None:
    points = [p for p in points if p[1] and p[2] is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    for index, (name, latency, accuracy) in enumerate(points):
        ax.scatter([latency], [accuracy * 100], color=f"C{index % 10}", s=40, zorder=3)
        ax.annotate(name, (latency, accuracy * 100), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(points)
    ax.plot([p[1] for p in front], [p[2] * 100 for p in front], "k:", alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # "0.2", not "2x10^-1", on a narrow log axis
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("accuracy vs latency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def model_latency(bundles: Sequence[dict[str, Any]], path: Path) -> Path | None:
    rows = [(b["name"], set_name, cells) for b in bundles for set_name, cells in b["onnx"].items()]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colors = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(name for name, _, _ in rows))}
    for name, set_name, cells in rows:
        sizes = sorted(int(k) for k in cells)
        ax.plot(
            sizes,
            [cells[str(s)]["total_ms"]["p50"] for s in sizes],
            "o-" if set_name == "short" else "s--",
            color=colors[name],
            label=f"{name} ({set_name})",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch incl. tokenization (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
