"""`kdserve.export.evaluate`: a bundle is scored by the same metric code as its checkpoint, with the same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdserve.export.evaluate import evaluate_bundle
from tests.export.conftest import MAX_LENGTH


def test_bundle_and_checkpoint_evaluations_agree(
    bundles: dict[str, list[Path]], tiny_teacher_dir: Path, sentiment_data: Any
) -> None:
    from kdserve.train.evaluate import evaluate_checkpoint

    for split in ("validation", "train"):
        from_bundle = evaluate_bundle(bundles["teacher"][0], sentiment_data, split, batch_size=7)
        from_checkpoint = evaluate_checkpoint(
            tiny_teacher_dir, sentiment_data, split, max_length=MAX_LENGTH, device="cpu"
        )
        assert from_bundle.metrics.confusion_matrix == from_checkpoint.metrics.confusion_matrix
        assert from_bundle.metrics.accuracy == from_checkpoint.metrics.accuracy
        assert from_bundle.metrics.examples == {"validation": 20, "train": 180}[split]
        assert (from_bundle.split, from_bundle.data) == (split, from_checkpoint.data)
        assert from_bundle.model == f"{bundles['teacher'][0]} (fp32)"
