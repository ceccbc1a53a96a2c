"""Over HTTP, a text's scores from a rows-alone bundle do not depend on the texts it is batched with."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from kdserve.core.bundle import ROWS_ALONE, read_manifest, write_manifest
from tests.bundles import write_batch_dependent_graph
from tests.serve.conftest import ready_client

TEXT = "good"
LOUD = "the movie was really great and good"  # a long text with a large activation beside it


def _bundles(tiny_bundles: Path, root: Path) -> Path:
    """Two copies of a batch-dependent graph: ``alone`` (rows_alone in its manifest) and ``batched``."""
    for name, alone in (("alone", True), ("batched", False)):
        folder = root / name
        shutil.copytree(tiny_bundles / "tiny-textcnn", folder)
        write_batch_dependent_graph(folder)
        manifest = read_manifest(folder)
        manifest.name = name
        manifest.extra[ROWS_ALONE] = alone
        write_manifest(folder, manifest)
    return root


def _score(client: Any, model: str, texts: list[str]) -> float:
    body = client.post("/classify", json={"texts": texts, "model": model, "all_scores": True}).json()
    return body["results"][0]["scores"][0]["score"]


def test_a_texts_scores_do_not_depend_on_its_batchmates(tiny_bundles: Path, tmp_path: Path) -> None:
    with ready_client(_bundles(tiny_bundles, tmp_path)) as client:
        models = {m["name"]: m["rows_alone"] for m in client.get("/models").json()["models"]}
        assert models == {"alone": True, "batched": False}
        assert _score(client, "alone", [TEXT]) == _score(client, "alone", [TEXT, LOUD])
        # the same graph batched: its scores move with the batch (what the test guards against)
        assert _score(client, "batched", [TEXT]) != pytest.approx(_score(client, "batched", [TEXT, LOUD]), abs=1e-4)
