"""``kdserve bench explain`` against a real kdserve serving tiny bundles with a policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdserve.bench.common import BenchError
from kdserve.bench.explain_bench import (
    ExplainBenchConfig,
    cost_texts,
    decisive_words,
    delete_spans,
    flagged_set,
    run_explain_bench,
)
from kdserve.bench.servers import ServerProcess, free_port, server_command
from kdserve.core.errors import ConfigError
from tests.serve.moderation_bundles import PLAIN, SINGLE, build_moderation_bundles


def test_delete_spans_and_cost_texts_are_exact() -> None:
    text = "you are a total idiot , friend"
    assert delete_spans(text, [(16, 21), (0, 3)]) == "are a total , friend"
    assert delete_spans(text, []) == text
    assert delete_spans("a b", [(0, 1), (0, 1)]) == "b"  # a span given twice is deleted once
    texts = cost_texts(["one two three", "four five"], words=2, n=3)
    assert texts == ["one two", "three four", "one two"]  # starts step by 2 modulo 5 - 2 + 1
    with pytest.raises(BenchError, match="fewer than one 9-word text"):
        cost_texts(["one two"], words=9, n=1)
    assert flagged_set({"categories": {"hate": True, "offensive": False}}) == frozenset({"hate"})
    assert flagged_set({"categories": None}) == frozenset()


def test_decisive_words_take_the_largest_attribution_over_flagged_categories() -> None:
    def words(*values: float) -> dict[str, object]:
        return {"tokens": [{"token": w, "start": 0, "end": 1, "attribution": v} for w, v in zip("abc", values)]}

    top = {"label": "neither", **words(0.3, 0.0, 0.0)}
    by_category = {"hate": words(0.1, 0.5, -0.2), "threat": words(0.2, 0.1, 0.4)}
    result = {"explanation": top, "category_explanations": by_category}
    assert [w["attribution"] for w in decisive_words(result)] == [0.2, 0.5, 0.4]
    assert [w["token"] for w in decisive_words(result)] == ["a", "b", "c"]
    assert decisive_words({"explanation": top, "category_explanations": None}) == top["tokens"]


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ConfigError):
        ExplainBenchConfig(target="http://x", data="d", k=0)
    with pytest.raises(ConfigError):
        ExplainBenchConfig(target="http://x", data="d", cost_requests=-1)


def test_explain_bench_measures_deletions_and_cost(
    tiny_bundles: Path, text_files: dict[str, Path], tmp_path: Path
) -> None:
    root = build_moderation_bundles(tiny_bundles, tmp_path / "bundles")
    port = free_port()
    command = server_command("kdserve", port, bundles_root=root, model=f"{SINGLE},{PLAIN}")
    config = ExplainBenchConfig(
        target=f"http://127.0.0.1:{port}",
        data=str(text_files["short"]),
        split="train",
        limit=60,
        model=SINGLE,
        cost_words=16,
        cost_requests=6,
    )
    with ServerProcess("kdserve", command, port, start_timeout_s=120, log_path=tmp_path / "serve.log"):
        result = run_explain_bench(config)
        with pytest.raises(BenchError, match="no moderation decision"):
            run_explain_bench(ExplainBenchConfig(**{**config.__dict__, "model": PLAIN, "cost_requests": 0}))
    deletion = result["deletion"]
    assert deletion["texts"] == 60 and 0 < deletion["tested"] <= deletion["flagged"] <= 60
    for key in ("decision_changed", "unflagged"):
        assert 0.0 <= deletion[key]["random_k"] <= 1.0 and 0.0 <= deletion[key]["top_k"] <= 1.0
    if deletion["decision_changed"]["random_k"]:
        ratio = deletion["decision_changed"]["top_k"] / deletion["decision_changed"]["random_k"]
        assert deletion["ratio"] == round(ratio, 3)
    cost = result["cost"]
    assert cost["requests_each"] == 6 and cost["words"] == 16
    assert cost["p50_ms"]["plain"] > 0 and cost["p50_ms"]["explain"] > 0
    assert cost["explain_adds_p50_ms"] == round(cost["p50_ms"]["explain"] - cost["p50_ms"]["plain"], 3)
