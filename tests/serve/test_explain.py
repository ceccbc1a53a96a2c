"""/classify explain=true: occlusion attributions by the model that answered, bounded, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.core.bundle import BundleModel
from kdserve.core.explain import explain
from kdserve.serve.schemas import ClassifyResponse
from tests.serve.conftest import ready_client

TEXT = "the movie was really great ."


def test_explain_answers_like_the_core(tiny_bundles: Path, tmp_path: Path) -> None:
    expected = explain(BundleModel(tiny_bundles / "tiny-bilstm"), TEXT, 128)
    routing = tmp_path / "routing.json"
    # threshold 1.0: the student is never sure enough, so the cascade's teacher answers every text
    routing.write_text(
        json.dumps(
            {
                "routes": {
                    "c": {"policy": "cascade", "student": "tiny-bilstm", "teacher": "tiny-teacher", "threshold": 1.0}
                }
            }
        )
    )
    with ready_client(tiny_bundles, routing_file=routing, max_explain_texts=2) as client:
        r = client.post("/classify", json={"text": TEXT, "model": "tiny-bilstm", "explain": True})
        assert r.status_code == 200, r.text
        assert r.content == ClassifyResponse.model_validate_json(r.content).model_dump_json().encode()
        (result,) = r.json()["results"]
        x = result["explanation"]
        assert x["label"] == result["label"] == "positive" and x["complete"] is True
        assert x["score"] == pytest.approx(result["score"], abs=1e-6)
        assert [t["token"] for t in x["tokens"]] == TEXT.split()
        assert all(TEXT[t["start"] : t["end"]] == t["token"] for t in x["tokens"])
        attributions = [t["attribution"] for t in x["tokens"]]
        assert attributions == pytest.approx(expected.attribution(1).tolist(), abs=1e-6)
        assert max(x["tokens"], key=lambda t: t["attribution"])["token"] == "great"
        # without explain: none
        r = client.post("/classify", json={"text": TEXT, "model": "tiny-bilstm"})
        assert r.json()["results"][0]["explanation"] is None
        # a cascade: each text explained by the model that answered it (here the teacher)
        r = client.post("/classify", json={"texts": [TEXT, "dull"], "model": "c", "explain": True})
        assert r.status_code == 200, r.text
        for result in r.json()["results"]:
            assert result["model"] == "tiny-teacher" and result["escalated"] is True
            assert result["explanation"]["label"] == result["label"]
        teacher = explain(BundleModel(tiny_bundles / "tiny-teacher"), TEXT, 128)
        label = r.json()["results"][0]["label"]
        attributions = [t["attribution"] for t in r.json()["results"][0]["explanation"]["tokens"]]
        assert attributions == pytest.approx(teacher.attribution(["negative", "positive"].index(label)), abs=1e-6)
        # the cost limit: texts per explained request
        r = client.post("/classify", json={"texts": [TEXT] * 3, "explain": True})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        assert "max_explain_texts (2)" in r.json()["error"]["message"]
        # routes that cannot take explain refuse the field rather than ignore it
        r = client.post("/models/tiny-bilstm", json={"inputs": TEXT, "explain": True})
        assert 400 <= r.status_code < 500
        r = client.post("/classify", json={"text": TEXT, "explain": "yes"})
        assert r.status_code == 422


def test_explain_is_bounded_by_max_explain_tokens(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, models=["tiny-bilstm"], max_explain_tokens=3) as client:
        r = client.post("/classify", json={"text": TEXT, "explain": True})
        x = r.json()["results"][0]["explanation"]
        assert [t["token"] for t in x["tokens"]] == ["the", "movie", "was"] and x["complete"] is False


def test_each_flagged_category_is_explained(tiny_bundles: Path, tmp_path: Path) -> None:
    """explain on a bundle with a policy: one explanation per flagged category, in calibrated scores,
    from the same occlusion batch as the top label's; none for a text that is not flagged."""
    from tests.serve.moderation_bundles import MULTI, SINGLE, build_moderation_bundles

    root = build_moderation_bundles(tiny_bundles, tmp_path / "mod")
    texts = ["the film was awful .", "the movie was great ."]
    with ready_client(root) as client:
        for name in (MULTI, SINGLE):
            r = client.post("/classify", json={"texts": texts, "model": name, "explain": True, "all_scores": True})
            assert r.status_code == 200, r.text
            assert r.content == ClassifyResponse.model_validate_json(r.content).model_dump_json().encode()
            model = BundleModel(root / name)
            for text, result in zip(texts, r.json()["results"]):
                flagged = sorted(c for c, hit in result["categories"].items() if hit)
                by_category = result["category_explanations"]
                if not flagged:
                    assert by_category is None and result["flagged"] is False
                    continue
                assert sorted(by_category) == flagged
                expected = explain(model, text, 128)
                scores = {s["label"]: s["score"] for s in result["scores"]}
                for category, x in by_category.items():
                    column = model.labels.index(category)
                    assert x["label"] == category and x["score"] == pytest.approx(scores[category], abs=1e-6)
                    got = [t["attribution"] for t in x["tokens"]]
                    assert got == pytest.approx(expected.attribution(column).tolist(), abs=1e-6)
                    top = max(x["tokens"], key=lambda t: t["attribution"])["token"]
                    assert top == {"negative": "awful", "positive": "great"}[category]
            # the awful text is flagged by both bundles (negative is the harmful category)
            assert r.json()["results"][0]["flagged"] is True
        plain = client.post("/classify", json={"text": texts[0], "model": MULTI}).json()["results"][0]
        assert plain["flagged"] is True and plain["category_explanations"] is None
