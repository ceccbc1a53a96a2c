"""Inputs for the bulk tests: the same synthetic sentiment texts written in every input format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.bundles import sentiment_texts


def texts(n: int, seed: int = 5) -> list[str]:
    return [text for text, _ in sentiment_texts(n, seed)]


def write_input(path: Path, rows: list[str], text_column: str = "text", ids: list[str] | None = None) -> Path:
    """``rows`` as a CSV, TSV, JSONL or Parquet file (by suffix), with an optional ``post_id`` column."""
    records = [{**({"post_id": ids[i]} if ids else {}), text_column: text} for i, text in enumerate(rows)]
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Small row groups, so shards cross row-group boundaries.
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(records[0]), delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    return path


@pytest.fixture(scope="session")
def bilstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny real BiLSTM bundle (the session's ``tiny_bundles`` builds three; these tests need one)."""
    pytest.importorskip("torch")
    from tests.bundles import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bulk") / "tiny-bilstm", name="tiny-bilstm", kind="bilstm", seed=1)


@pytest.fixture()
def renamed(bilstm: Path, tmp_path: Path) -> Path:
    """The same bundle with an edited manifest (another name): a different bundle to a job."""
    import shutil

    from kdserve.core.bundle import read_manifest, write_manifest

    folder = Path(shutil.copytree(bilstm, tmp_path / "renamed"))
    manifest = read_manifest(folder)
    manifest.name = "tiny-bilstm-v2"
    write_manifest(folder, manifest)
    return folder
