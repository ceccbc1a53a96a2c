"""``kdserve bench ab`` against a real kdserve with an A/B route, and ``bench compare`` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kdserve.bench.ab import ABConfig, group_stats, parse_answer, run_ab
from kdserve.bench.servers import ServerProcess, free_port, server_command
from kdserve.cli import main


def test_parse_answer_reads_the_classify_response() -> None:
    body = {
        "request_id": "r1",
        "route": "exp",
        "variant": "tiny-teacher",
        "shadowed": False,
        "models": {"tiny-teacher": "abc"},
        "results": [
            {
                "label": "positive",
                "score": 0.93,
                "scores": None,
                "model": "tiny-teacher",
                "checksum": "abc",
                "escalated": True,
            }
        ],
    }
    assert parse_answer(json.dumps(body).encode()) == {
        "label": "positive",
        "score": 0.93,
        "model": "tiny-teacher",
        "variant": "tiny-teacher",
        "route": "exp",
        "escalated": True,
        "shadowed": False,
        "categories": None,
        "windows": None,
        "truncated": None,
    }
    baseline = parse_answer(b'{"model": "m", "results": [{"label": "a", "score": 1}]}')  # the baselines' shape
    assert baseline is not None and baseline["model"] == "m" and baseline["variant"] is None
    for bad in (b"", b"{}", b'{"results": []}', b"<html>", None):
        assert parse_answer(bad) is None


def test_group_stats_scores_labels_and_decisions() -> None:
    labels = ("hate", "offensive", "neither")

    def answer(label: str, hate: bool, windows: int = 1) -> dict[str, object]:
        return {
            "label": label,
            "score": 0.5,
            "model": "m",
            "escalated": label == "hate",
            "categories": {"hate": hate, "offensive": label == "offensive"},
            "windows": windows,
            "truncated": windows > 1,
        }

    rows = [  # (answer, gold id, latency ns)
        (answer("hate", True), 0, 1_000_000),
        (answer("offensive", True), 0, 2_000_000),  # hate flagged although the top label is offensive
        (answer("offensive", False), 1, 3_000_000),
        (answer("neither", True, windows=3), 2, 4_000_000),
    ]
    stats = group_stats(rows, labels)
    assert stats["accuracy"] == 0.75 and stats["escalation_rate"] == 0.25
    # per-class F1 by hand: hate P 1/1 R 1/2 -> 2/3; offensive P 1/2 R 1/1 -> 2/3; neither 1
    assert stats["per_class_f1"] == {"hate": 0.6667, "offensive": 0.6667, "neither": 1.0}
    assert stats["macro_f1"] == round((2 / 3 + 2 / 3 + 1) / 3, 4)
    # the hate flag: 3 flagged, 2 of them gold hate (both found): precision 2/3, recall 1, F1 0.8
    assert stats["decisions"]["hate"] == {"flagged": 3, "gold": 2, "precision": 0.6667, "recall": 1.0, "f1": 0.8}
    assert stats["decisions"]["offensive"]["f1"] == round(2 * 0.5 * 1.0 / 1.5, 4)
    assert stats["mean_windows"] == 1.5 and stats["truncated_rate"] == 0.25
    assert stats["latency_ms"]["count"] == 4
    assert group_stats([], labels)["accuracy"] is None


def _serve_available() -> None:
    try:
        import kdserve.serve.app  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"kdserve serve is not importable here: {exc}")


def test_ab_replay_scores_each_variant_and_every_model(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path
) -> None:
    _serve_available()
    from kdserve.core.bundle import BundleModel
    from kdserve.core.data import load_dataset

    routing = tmp_path / "routing.json"
    routing.write_text(
        json.dumps({"routes": {"exp": {"policy": "ab", "variants": {"tiny-textcnn": 1.0, "tiny-teacher": 1.0}}}})
    )
    port = free_port()
    command = server_command(
        "kdserve",
        port,
        bundles_root=tiny_bundles,
        model="tiny-textcnn,tiny-teacher",
        extra=["--routing-file", str(routing)],
    )
    config = ABConfig(
        target=f"http://127.0.0.1:{port}",
        data=str(text_files["short"]),
        split="train",
        limit=60,
        route="exp",
        concurrency=4,
    )
    with ServerProcess("kdserve", command, port, start_timeout_s=120, log_path=tmp_path / "serve.log"):
        result = run_ab(config)
        again = run_ab(config)
        # request fields travel with every text: long texts (over the tiny bundles' 32 tokens)
        # are truncated by default and read in several windows with long_text "chunk"
        long = dataclasses.replace(config, data=str(text_files["long"]), limit=20, agreement=False)
        cut, chunked = run_ab(long), run_ab(dataclasses.replace(long, long_text="chunk"))
    assert cut["overall"]["truncated_rate"] == 1.0 and cut["overall"]["mean_windows"] == 1
    assert chunked["answered"] == 20 and chunked["overall"]["mean_windows"] > 1
    assert chunked["overall"]["truncated_rate"] == 0.0
    assert result["examples"] == result["answered"] == 60 and result["failures"] == {}
    assert result["routes"] == {"exp": 60}
    variants = result["variants"]
    assert set(variants) == {"tiny-textcnn", "tiny-teacher"}
    assert sum(v["examples"] for v in variants.values()) == 60
    for name, stats in variants.items():
        assert stats["models"] == {name: stats["examples"]} and stats["escalation_rate"] == 0.0
        assert stats["latency_ms"]["count"] == stats["examples"] and stats["latency_ms"]["min"] > 0
    # routing keys are sticky: the same replay splits the same way
    assert {k: v["examples"] for k, v in again["variants"].items()} == {k: v["examples"] for k, v in variants.items()}
    # every model on every example, checked against the bundles run in process
    data = load_dataset(str(text_files["short"]))
    import random

    examples = random.Random(0).sample(data.train, 60)
    texts = [t for t, _ in examples]
    predicted = {}
    for name in ("tiny-textcnn", "tiny-teacher"):
        model = BundleModel(tiny_bundles / name)
        predicted[name] = [model.labels[i] for i in model.predict(texts).argmax(axis=1)]
        accuracy = sum(p == data.labels[g] for p, (_, g) in zip(predicted[name], examples)) / 60
        scored = result["agreement"]["models"][name]
        assert (scored["answered"], scored["accuracy"]) == (60, round(accuracy, 4))
    agree = sum(a == b for a, b in zip(predicted["tiny-teacher"], predicted["tiny-textcnn"])) / 60
    assert result["agreement"]["pairs"] == {"tiny-teacher vs tiny-textcnn": round(agree, 4)}


def test_ab_label_mismatch_is_explained(tiny_bundles: Path, tmp_path: Path) -> None:
    """A dataset whose labels are ids ("0"/"1") against a server answering names needs --label-names."""
    _serve_available()
    (tmp_path / "ids.csv").write_text("text,label\n" + "".join(f"great film {i},{i % 2}\n" for i in range(30)))
    port = free_port()
    command = server_command("kdserve", port, bundles_root=tiny_bundles, model="tiny-textcnn")
    with ServerProcess("kdserve", command, port, start_timeout_s=120, log_path=tmp_path / "serve.log"):
        from kdserve.bench.common import BenchError

        with pytest.raises(BenchError, match="give --label-names"):
            run_ab(
                ABConfig(
                    target=f"http://127.0.0.1:{port}", data=str(tmp_path / "ids.csv"), split="train", agreement=False
                )
            )
        fixed = run_ab(
            ABConfig(
                target=f"http://127.0.0.1:{port}",
                data=str(tmp_path / "ids.csv"),
                split="train",
                agreement=False,
                label_names=["negative", "positive"],
            )
        )
    from kdserve.core.data import load_dataset

    train_rows = len(load_dataset(str(tmp_path / "ids.csv")).train)
    assert fixed["examples"] == fixed["answered"] == train_rows and set(fixed["variants"]) == {"tiny-textcnn"}


@pytest.mark.slow
@pytest.mark.parametrize("server", ["naive", "kdserve"])
def test_compare_end_to_end(server: str, tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path) -> None:
    if server == "kdserve":
        _serve_available()
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "compare",
            "--bundles",
            str(tiny_bundles),
            "--models",
            "tiny-teacher,tiny-textcnn",
            "--server",
            server,
            "--short-data",
            str(text_files["short"]),
            "--long-data",
            str(text_files["long"]),
            "--texts",
            "40",
            "--latency-iterations",
            "20",
            "--concurrency",
            "1,4",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--no-ceiling",
            "--baselines",
            "naive,hf",
            "--baseline-rounds",
            "2",
            "--teacher-batch-sizes",
            "4,1",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    teacher, student = result["models"]
    assert (teacher["name"], student["name"]) == ("tiny-teacher", "tiny-textcnn") and result[
        "teacher"
    ] == "tiny-teacher"
    assert teacher["speedup"] == {"short_b1": 1.0, "long_b1": 1.0, "throughput": 1.0}
    assert student["speedup_vs"] == "tiny-teacher" and student["inprocess"] is None
    served = teacher["inprocess"]
    assert set(served["examples_per_s"]) == {"1", "4"}
    assert served["best_examples_per_s"] == max(served["examples_per_s"].values())
    assert served["http_fraction"] == round(teacher["max_throughput_rps"] / served["best_examples_per_s"], 2)
    assert "## Over HTTP vs in process" in (out / "report.md").read_text()
    assert result["common_rate"] == round(0.5 * teacher["max_throughput_rps"], 1)
    for row in (teacher, student):
        assert row["at_common_rate"]["rate"] == result["common_rate"] and row["short_b1_ms"]["p50"] > 0
        assert [r["concurrency"] for r in row["http"]["closed_loop"]] == [1, 4]
        assert row["http"]["rss_mb"] is None or 20 < row["http"]["rss_mb"] < 2000  # a Python server with a model
    servers = [s["server"] for s in result["baselines"]["servers"]]
    assert servers == [server, "naive"] and "hf" in result["baselines"]["skipped"]
    # two rounds: kdserve's first is its headline row's sweep, and each server has both rounds' numbers
    ours, naive = result["baselines"]["servers"]
    assert result["baselines"]["rounds"] == 2 and ours["round_max_rps"][0] == teacher["max_throughput_rps"]
    assert len(ours["round_max_rps"]) == len(naive["round_max_rps"]) == 2 and len(naive["round_throughput_ratios"]) == 2
    assert (out / "pareto.png").is_file() and (out / "logs").is_dir()
