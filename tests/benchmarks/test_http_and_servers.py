"""``kdserve bench http``, the generator's ceiling, and the baselines serving a tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.bench.http_bench import measure_ceiling
from kdserve.bench.loadgen import Target, probe, run_async
from kdserve.bench.servers import start_server
from kdserve.cli import main


def ask(target: Target, body: dict[str, str]) -> tuple[int, bytes | None]:
    return run_async(lambda: probe(target, json.dumps(body).encode()))


def test_bench_http_cli_sweeps_a_running_server(
    tmp_path: Path, text_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    with start_server("trivial", start_timeout_s=30) as server:
        code = main(
            [
                "bench",
                "http",
                "--target",
                server.url,
                "--data",
                str(text_files["short"]),
                "--texts",
                "50",
                "--concurrency",
                "1,4",
                "--rate-fractions",
                "0.1",
                "--duration",
                "1.0",
                "--warmup",
                "0.3",
                "--no-ceiling",
                "--label",
                "trivial",
                "--output",
                str(tmp_path),
            ]
        )
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    sweep = result["sweep"]
    assert result["kind"] == "http" and result["generator_ceiling"] is None and result["texts"] == 50
    assert [r["concurrency"] for r in sweep["closed_loop"]] == [1, 4]
    assert all(r["errors"] == {} and r["ok"] == r["requests"] > 0 for r in sweep["closed_loop"] + sweep["open_loop"])
    best = max(r["throughput_rps"] for r in sweep["closed_loop"])
    assert sweep["max_throughput_rps"] == best
    (opened,) = sweep["open_loop"]
    assert opened["rate"] == round(best * 0.1, 1) and opened["latency_ms"]["count"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "## Closed loop" in report and "## Open loop (latency from intended send time)" in report
    assert "| 4 | " in report and (tmp_path / "latency_vs_throughput.png").stat().st_size > 10_000


def test_bench_http_unreachable_target_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from kdserve.bench.servers import free_port

    port = free_port()
    assert main(["bench", "http", "--target", f"http://127.0.0.1:{port}", "--no-ceiling"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kdserve: error: cannot connect to http://127.0.0.1:{port}/classify") and "\n" not in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--body-template", '{"inputs": "x"}'], "must contain {text}"),
        (["--concurrency", "0"], "--concurrency must be integers >= 1"),
        (["--target", "https://x"], "only plain http"),
    ],
)
def test_bench_http_bad_flags_are_one_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "http", "--target", "http://127.0.0.1:9", "--no-ceiling", *args]) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdserve: error: ") and "\n" not in err and needle in err, err


def test_generator_ceiling_against_the_trivial_server() -> None:
    ceiling = measure_ceiling(duration_s=0.4, warmup_s=0.1, concurrency=(8,))
    (run,) = ceiling["runs"]
    assert run["errors"] == {} and ceiling["ceiling_rps"] == run["throughput_rps"]
    assert ceiling["ceiling_rps"] > 1000  # thousands even on a loaded 2-core machine


def test_naive_baseline_answers_like_the_bundle(tiny_bundles: Path) -> None:
    from kdserve.core.bundle import BundleModel, softmax

    bundle = tiny_bundles / "tiny-textcnn"
    model = BundleModel(bundle)
    texts = ["the film was really great .", "the plot was dull .", ""]
    expected = softmax(model.predict(texts))
    with start_server("naive", bundle=bundle, model="tiny-textcnn", start_timeout_s=60) as server:
        target = Target.parse(server.url, "/classify")
        for text, probs in zip(texts, expected):
            status, body = ask(target, {"text": text})
            answer = json.loads(body or b"")
            assert status == 200 and answer["model"] == "tiny-textcnn"
            (result,) = answer["results"]
            assert result["label"] == model.labels[int(probs.argmax())]
            assert result["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        status, _ = ask(target, {"txt": "x"})
        assert status == 422


def test_naive_baseline_thread_option_answers_the_same(tiny_bundles: Path) -> None:
    from fastapi.testclient import TestClient

    from kdserve.bench.baselines.naive_fastapi import build_app, main

    answers = []
    for threads in (0, 1):
        with TestClient(build_app(tiny_bundles / "tiny-textcnn", threads)) as client:
            answers.append(client.post("/classify", json={"text": "the film was great ."}).json())
    assert answers[0] == answers[1] and answers[0]["results"][0]["label"] in ("negative", "positive")
    with pytest.raises(SystemExit):  # the flag takes a number
        main([str(tiny_bundles / "tiny-textcnn"), "--intra-op-threads", "many"])


def test_litserve_baseline_batches_and_answers_like_the_bundle(tiny_bundles: Path) -> None:
    pytest.importorskip("litserve")
    from kdserve.core.bundle import BundleModel, softmax

    bundle = tiny_bundles / "tiny-bilstm"
    model = BundleModel(bundle)
    texts = ["the acting was wonderful .", "the movie was awful ."]
    expected = softmax(model.predict(texts))
    with start_server("litserve", bundle=bundle, model="tiny-bilstm", start_timeout_s=90) as server:
        target = Target.parse(server.url, "/classify")
        for text, probs in zip(texts, expected):
            status, body = ask(target, {"text": text})
            (result,) = json.loads(body or b"")["results"]
            assert status == 200 and result["label"] == model.labels[int(probs.argmax())]
            assert result["score"] == pytest.approx(float(probs.max()), abs=1e-5)


@pytest.mark.slow
def test_hf_pipeline_baseline_serves_a_checkpoint(tiny_bert_dir: Path) -> None:
    pytest.importorskip("transformers")
    with start_server("hf", checkpoint=tiny_bert_dir, start_timeout_s=180, extra=["--max-length", "32"]) as server:
        status, body = run_async(lambda: probe(Target.parse(server.url, "/classify"), b'{"text": "a good film"}'))
    (result,) = json.loads(body or b"")["results"]
    assert status == 200 and result["label"] in ("LABEL_0", "LABEL_1") and 0.5 <= result["score"] <= 1.0
