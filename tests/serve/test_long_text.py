"""/classify long_text: truncate (flagged), head_tail and chunk through the real batcher, the window cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.core.bundle import BundleModel, Encoded
from kdserve.core.windows import Windower, aggregate
from kdserve.serve.schemas import ClassifyResponse
from tests.serve.conftest import ready_client

# 50 word-level tokens, over the tiny bundles' max_length of 32: the end is positive, the start is not
LONG = " ".join(["the plot was dull ."] * 5 + ["the movie was great ."] * 5)
SHORT = "the movie was great ."


def run_rows(model: BundleModel, rows: list[np.ndarray]) -> np.ndarray:
    """Logits of each row run alone."""
    return np.concatenate(
        [model.run(Encoded(r[None, :], np.ones((1, len(r)), dtype=np.int64), [len(r)], [False])) for r in rows]
    )


def post(client: Any, **body: Any) -> Any:
    return client.post("/classify", json={"model": "tiny-bilstm", "all_scores": True, **body})


def probs(result: dict[str, Any]) -> list[float]:
    scores = {s["label"]: s["score"] for s in result["scores"]}
    return [scores["negative"], scores["positive"]]


def test_long_text_modes(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    windows = Windower(model.tokenizer, 32, overlap=0.25)
    with ready_client(tiny_bundles, models=["tiny-bilstm"]) as client:
        # default: truncate, now said in the answer
        r = post(client, texts=[LONG, SHORT])
        assert r.status_code == 200, r.text
        long, short = r.json()["results"]
        assert (long["truncated"], long["windows"], short["truncated"], short["windows"]) == (True, 1, False, 1)
        assert r.content == ClassifyResponse.model_validate_json(r.content).model_dump_json().encode()
        # chunk: both windows in the batch, the mean of their probabilities
        r = post(client, texts=[SHORT, LONG], long_text="chunk")
        short, long = r.json()["results"]
        assert (long["truncated"], long["windows"], short["windows"]) == (False, 2, 1)
        _, expected = aggregate(run_rows(model, windows.encode([LONG], "chunk")[0].rows))
        assert probs(long) == pytest.approx(expected.tolist(), abs=1e-5)
        (single,) = run_rows(model, windows.encode([SHORT], "chunk")[0].rows)
        assert probs(short) == pytest.approx((np.exp(single) / np.exp(single).sum()).tolist(), abs=1e-5)
        # head_tail: one row, the start and the end
        r = post(client, text=LONG, long_text="head_tail")
        (result,) = r.json()["results"]
        assert (result["truncated"], result["windows"]) == (True, 1)
        row = windows.encode([LONG], "head_tail")[0].rows
        (expected,) = run_rows(model, row)
        assert probs(result) == pytest.approx(np.exp(expected) / np.exp(expected).sum(), abs=1e-5)
        # truncate=false: chunk loses nothing and answers; head_tail would lose the middle: 413
        assert post(client, text=LONG, long_text="chunk", truncate=False).status_code == 200
        r = post(client, texts=[SHORT, LONG], long_text="head_tail", truncate=False)
        assert r.status_code == 413 and r.json()["error"]["code"] == "text_too_long"
        assert "texts[1]" in r.json()["error"]["message"]
        r = post(client, text=LONG, long_text="middle")
        assert r.status_code == 422 and "long_text" in r.json()["error"]["message"]
        metrics = client.get("/metrics").text
        assert 'kdserve_truncated_texts_total{mode="truncate",model="tiny-bilstm"} 1.0' in metrics
        assert 'kdserve_truncated_texts_total{mode="head_tail",model="tiny-bilstm"} 1.0' in metrics
        assert (
            'kdserve_long_text_windows_total{model="tiny-bilstm"} 6.0' in metrics
        )  # chunk 1 + 2, head_tail 1, chunk 2


def test_server_default_and_window_cap(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, long_text="chunk", max_windows_per_text=1, chunk_aggregation="max") as client:
        # the server's default applies to a request that does not say, on every route (a cascade's too)
        r = client.post("/classify", json={"texts": [SHORT, LONG], "model": "tiny-bilstm"})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_many_windows"
        assert r.json()["error"]["message"].startswith("texts[1] needs 2 windows")
        r = client.post("/classify", json={"text": LONG, "model": "tiny-bilstm", "long_text": "truncate"})
        assert r.status_code == 200 and r.json()["results"][0]["truncated"] is True
        r = client.post("/classify", json={"text": SHORT, "model": "tiny-bilstm"})
        assert r.status_code == 200 and r.json()["results"][0]["windows"] == 1
        metrics = client.get("/metrics").text
        assert 'kdserve_rejected_total{reason="too_many_windows"} 1.0' in metrics


def test_max_aggregation(tiny_bundles: Path) -> None:
    model = BundleModel(tiny_bundles / "tiny-bilstm")
    windows = Windower(model.tokenizer, 32, overlap=0.5)
    with ready_client(tiny_bundles, models=["tiny-bilstm"], chunk_aggregation="max", chunk_overlap=0.5) as client:
        r = post(client, text=LONG, long_text="chunk")
        (result,) = r.json()["results"]
        rows = windows.encode([LONG], "chunk")[0].rows
        assert result["windows"] == len(rows) == 3  # step 16 over 50 tokens
        _, expected = aggregate(run_rows(model, rows), how="max")
        assert probs(result) == pytest.approx(expected.tolist(), abs=1e-5)
