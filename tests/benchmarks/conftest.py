"""Small text files for the benchmark tests: short sentences and long reviews, both labelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles import sentiment_texts


@pytest.fixture(scope="session")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``short``: 200 one-sentence texts; ``long``: 60 texts of ~12 sentences (over 32 tokens:
    the tiny bundles truncate them); labels negative/positive (CSV, text,label)."""
    folder = tmp_path_factory.mktemp("texts")
    short = sentiment_texts(200, seed=3)
    names = ["negative", "positive"]
    (folder / "short.csv").write_text("text,label\n" + "".join(f"{t},{names[y]}\n" for t, y in short))
    rows = []
    for i in range(60):
        label = i % 2
        chunk = [t for t, y in sentiment_texts(24, seed=100 + i) if y == label]
        rows.append(f'"{" ".join(chunk)}",{names[label]}\n')
    (folder / "long.csv").write_text("text,label\n" + "".join(rows))
    return {"short": folder / "short.csv", "long": folder / "long.csv"}
