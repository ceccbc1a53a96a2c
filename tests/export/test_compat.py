"""The compatibility report and gate: exact flip counts, the refusal naming its figure, label
mismatches, ``kdserve compare-bundles`` and ``kdserve export --baseline-bundle``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdserve.cli import main
from kdserve.core.bundle import BundleModel, read_manifest
from kdserve.export.compat import (
    CompatError,
    CompatGateError,
    GateThresholds,
    apply_gate,
    compare_bundles,
    compare_predictions,
    text_sha256,
)
from tests.bundles import build_tiny_bundle
from tests.conftest import write_sentiment_csv

LABELS = ["negative", "positive"]


def _probs(predictions: list[int], confidence: list[float]) -> np.ndarray:
    """[N, 2] probabilities putting ``confidence`` on the predicted column."""
    out = np.zeros((len(predictions), 2), dtype=np.float64)
    for i, (p, c) in enumerate(zip(predictions, confidence)):
        out[i, p], out[i, 1 - p] = c, 1 - c
    return out


# gold, baseline and new predictions on 8 rows:
#   rows 0-3: both right; row 4: baseline right, new wrong (negative flip, new sure: 0.9 on the wrong label);
#   row 5: negative flip (new barely wrong: 0.6); row 6: baseline wrong, new right (positive flip);
#   row 7: both wrong.
GOLD = [0, 1, 0, 1, 0, 1, 0, 1]
PROD = [0, 1, 0, 1, 0, 1, 1, 0]
NEW = [0, 1, 0, 1, 1, 0, 0, 0]
TEXTS = [f"text {i}" for i in range(8)]


def _report(log_texts: bool = False) -> dict[str, Any]:
    prod = _probs(PROD, [0.8] * 8)
    new = _probs(NEW, [0.8, 0.8, 0.8, 0.8, 0.9, 0.6, 0.8, 0.8])
    return compare_predictions(GOLD, new, prod, LABELS, TEXTS, log_texts=log_texts)


def test_flip_counts_rates_and_per_class_f1_are_exact() -> None:
    report = _report()
    assert report["examples"] == 8
    assert (report["negative_flip_count"], report["positive_flip_count"]) == (2, 1)
    assert report["negative_flips"] == 2 / 8 and report["positive_flips"] == 1 / 8
    # agree on rows 0-3 and 7
    assert report["agreement"] == 5 / 8
    assert report["baseline_metrics"]["accuracy"] == 6 / 8 and report["new_metrics"]["accuracy"] == 5 / 8
    # baseline: negative P=3/4 R=3/4 -> F1 0.75; positive P=3/4 R=3/4 -> 0.75
    # new: negative predicted on rows 0,2,5,6,7 (3 right of 5), 4 true -> P=3/5 R=3/4 -> F1 2/3;
    #      positive predicted on rows 1,3,4 (2 right), 4 true -> P=2/3 R=1/2 -> F1 4/7
    per_class = report["per_class"]
    assert per_class["negative"]["baseline_f1"] == pytest.approx(0.75)
    assert per_class["negative"]["new_f1"] == pytest.approx(2 / 3)
    assert per_class["positive"]["new_f1"] == pytest.approx(4 / 7)
    assert per_class["positive"]["f1_change_points"] == pytest.approx((4 / 7 - 0.75) * 100, abs=1e-6)
    assert per_class["positive"]["support"] == 4


def test_worst_negative_flips_ranked_and_hashed_unless_texts_are_logged() -> None:
    worst = _report()["worst_negative_flips"]
    # row 4 (true-label score 0.8 -> 0.1) falls further than row 5 (0.8 -> 0.4)
    assert [w["text_sha256"] for w in worst] == [text_sha256("text 4"), text_sha256("text 5")]
    assert worst[0] == {
        "text_sha256": text_sha256("text 4"),
        "label": "negative",
        "baseline_label": "negative",
        "new_label": "positive",
        "baseline_true_score": 0.8,
        "new_true_score": pytest.approx(0.1),
    }
    assert all("text" not in w for w in worst)
    assert [w["text"] for w in _report(log_texts=True)["worst_negative_flips"]] == ["text 4", "text 5"]


def test_gate_names_each_failing_figure() -> None:
    report = _report()
    failures = apply_gate(report, GateThresholds(max_negative_flips=25.0, max_class_f1_drop=20.0))
    assert failures == [] and report["gate"]["passed"] is True  # 25.00% flips is not above 25
    failures = apply_gate(report, GateThresholds(max_negative_flips=10.0, max_class_f1_drop=15.0))
    assert failures == [
        "negative flips 25.00% (2 of 8 rows the baseline gets right) > --max-negative-flips 10",
        "class 'positive' F1 drop 17.86 points (75.00% -> 57.14%, 4 rows) > --max-class-f1-drop 15",
    ]
    assert report["gate"] == {
        "max_negative_flips": 10.0,
        "max_class_f1_drop": 15.0,
        "passed": False,
        "failures": failures,
    }


@pytest.fixture(scope="module")
def compat_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """prod: trained tiny BiLSTM; same: a second copy of it; weak: 8 training steps; other: ham/spam labels."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("compat")
    return {
        "prod": build_tiny_bundle(root / "prod", name="prod", kind="bilstm", seed=1),
        "same": build_tiny_bundle(root / "same", name="same", kind="bilstm", seed=1),
        "weak": build_tiny_bundle(root / "weak", name="weak", kind="bilstm", seed=3, train_steps=8),
        "other": build_tiny_bundle(root / "other", name="other", kind="bilstm", seed=1, labels=("ham", "spam")),
        "data": write_sentiment_csv(root / "sentiment.csv", 400, seed=5),
    }


def test_bundle_flip_counts_match_their_predictions(compat_bundles: dict[str, Path]) -> None:
    from kdserve.core.data import load_dataset

    data = load_dataset(str(compat_bundles["data"]))
    report = compare_bundles(compat_bundles["weak"], compat_bundles["prod"], str(compat_bundles["data"]))
    # recount independently from each bundle's own predictions on the same 40 validation rows
    texts, gold = [t for t, _ in data.validation], np.array([y for _, y in data.validation])
    weak = BundleModel(compat_bundles["weak"]).predict(texts).argmax(1)
    prod = BundleModel(compat_bundles["prod"]).predict(texts).argmax(1)
    assert report["examples"] == len(texts) == 40
    assert report["negative_flip_count"] == int(((prod == gold) & (weak != gold)).sum())
    assert report["positive_flip_count"] == int(((prod != gold) & (weak == gold)).sum())
    assert report["agreement"] == float((weak == prod).mean())
    assert report["negative_flip_count"] > 0  # the weak bundle does regress: the gate has something to see
    assert report["baseline"]["name"] == "prod" and report["new"]["name"] == "weak"

    same = compare_bundles(compat_bundles["same"], compat_bundles["prod"], str(compat_bundles["data"]))
    assert (same["agreement"], same["negative_flip_count"], same["positive_flip_count"]) == (1.0, 0, 0)
    assert apply_gate(same, GateThresholds(0.0, 0.0)) == []


def test_bundles_with_other_labels_are_refused(compat_bundles: dict[str, Path]) -> None:
    with pytest.raises(CompatError, match=r"labels \['ham', 'spam'\] but the baseline .*prod has \['negative'"):
        compare_bundles(compat_bundles["other"], compat_bundles["prod"], str(compat_bundles["data"]))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_compare_bundles_cli(
    compat_bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(compat_bundles["data"])
    weak, prod = str(compat_bundles["weak"]), str(compat_bundles["prod"])
    out = tmp_path / "report.json"
    code, stdout, err = _run(capsys, "compare-bundles", weak, prod, "--data", data, "--output", str(out))
    report = json.loads(out.read_text())
    flips = report["negative_flips"] * 100
    assert flips > 5.0  # the default threshold refuses the weak bundle
    assert code == 1
    assert err.startswith(f"kdserve: error: {weak} refused against {prod}: negative flips {flips:.2f}%")
    assert "\n" not in err and "> --max-negative-flips 5" in err
    assert stdout.startswith("weak vs baseline prod on 40 ") and "gate: REFUSED" in stdout
    assert report["gate"]["passed"] is False and all("text" not in w for w in report["worst_negative_flips"])

    code, stdout, _ = _run(
        capsys,
        "compare-bundles",
        weak,
        prod,
        "--data",
        data,
        "--output",
        str(out),
        "--max-negative-flips",
        "100",
        "--max-class-f1-drop",
        "100",
        "--log-texts",
    )
    assert code == 0 and stdout.endswith("gate: passed")
    assert all(w["text"] for w in json.loads(out.read_text())["worst_negative_flips"])

    code, _, err = _run(capsys, "compare-bundles", str(compat_bundles["other"]), prod, "--data", data)
    assert code == 1 and err.startswith("kdserve: error: ") and "\n" not in err and "same label set" in err


def test_export_with_baseline_bundle_gates_and_writes_the_card(
    student_dirs: dict[str, Path],
    sentiment_data: Any,
    export_config: Callable[..., Any],
    compat_bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    from kdserve.export.pipeline import export_checkpoint
    from tests.export.conftest import make_student

    # a trained student against a weak production bundle: published, the report in manifest and card
    out = tmp_path / "ok"
    written = export_checkpoint(
        export_config(
            student_dirs["bilstm"], out, name="new", quantization="none", baseline_bundle=str(compat_bundles["weak"])
        )
    )
    report = read_manifest(written[0]).extra["compatibility"]
    assert report["gate"]["passed"] is True and report["baseline"]["name"] == "weak"
    card = (written[0] / "README.md").read_text()
    assert "## Compatibility with the production bundle" in card and "Compared with `weak`" in card

    # an untrained student against a trained production bundle: refused, nothing published
    untrained = make_student("bilstm", tmp_path / "untrained", sentiment_data, train=False)
    out = tmp_path / "refused"
    with pytest.raises(CompatGateError, match=r"fp32: negative flips .* > --max-negative-flips 5") as caught:
        export_checkpoint(
            export_config(untrained, out, name="bad", quantization="none", baseline_bundle=str(compat_bundles["prod"]))
        )
    assert "nothing was published" in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == ["bad-compat-refused.json"]
    refused = json.loads((out / "bad-compat-refused.json").read_text())
    assert refused["fp32"]["gate"]["passed"] is False


def test_export_refuses_a_baseline_with_other_labels_before_exporting(
    student_dirs: dict[str, Path], export_config: Callable[..., Any], compat_bundles: dict[str, Path], tmp_path: Path
) -> None:
    from kdserve.export.pipeline import export_checkpoint

    out = tmp_path / "out"
    with pytest.raises(CompatError, match="same label set"):
        export_checkpoint(export_config(student_dirs["bilstm"], out, baseline_bundle=str(compat_bundles["other"])))
    assert not out.exists()
