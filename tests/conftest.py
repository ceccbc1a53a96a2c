"""Shared fixtures: tiny real models built from a config in code, and the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: a stray hub lookup must fail at once, not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A small vocabulary is enough for the synthetic sentiment texts the tests train on.
TINY_WORDS = (
    "the a movie film plot acting was is very really quite truly good great excellent wonderful "
    "bad awful terrible boring dull , . ! and but not"
).split()


def shared_data(name: str) -> Path:
    """Path of a ../shared/data folder, or skip the test when this machine has none."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} is not on this machine")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer, fixed seed, saved as a checkpoint folder."""
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_sentiment_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A separable two-class CSV (positive words vs negative words) for fast end-to-end training."""
    import random

    rng = random.Random(seed)
    good = ["good", "great", "excellent", "wonderful"]
    bad = ["bad", "awful", "terrible", "boring", "dull"]
    subjects = ["the movie", "the film", "the plot", "the acting"]
    rows = ["text,label"]
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(good if positive else bad)
        adverb = rng.choice(["very", "really", "quite", "truly", ""])
        rows.append(f"{rng.choice(subjects)} was {adverb} {word} .,{'positive' if positive else 'negative'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three tiny real bundles, trained on synthetic sentiment (negative/positive):
    students ``tiny-textcnn`` and ``tiny-bilstm``, and ``tiny-teacher`` (a bilstm whose manifest says
    model_kind "teacher", for routing tests). Session-scoped: treat as read-only, copy to modify."""
    pytest.importorskip("torch")
    from tests.bundles import build_tiny_bundle

    root = tmp_path_factory.mktemp("bundles")
    build_tiny_bundle(root / "tiny-textcnn", name="tiny-textcnn", kind="textcnn", seed=0)
    build_tiny_bundle(root / "tiny-bilstm", name="tiny-bilstm", kind="bilstm", seed=1)
    build_tiny_bundle(
        root / "tiny-teacher", name="tiny-teacher", kind="bilstm", seed=2, train_steps=120, model_kind="teacher"
    )
    return root
