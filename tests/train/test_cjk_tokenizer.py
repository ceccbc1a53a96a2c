"""The word-level students' tokenizer on Chinese, Japanese and Korean text: one token a
character, English unchanged, and a tiny TextCNN that learns from characters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kdserve.train.student_tokenizers import encode_batch, load_tokenizer, save_tokenizer, train_word_tokenizer

POSITIVE = ["这部电影太好看了，我非常喜欢！", "演员的表演很精彩", "剧情很棒，值得一看"]
NEGATIVE = ["这部电影太难看了，浪费时间", "剧情很无聊，演员很差", "真是糟糕透了"]


def test_chinese_clause_is_split_into_characters() -> None:
    tokenizer = train_word_tokenizer(POSITIVE + NEGATIVE)
    tokens = tokenizer.encode("这部电影太好看了，我非常喜欢！").tokens
    # 14 characters and 2 punctuation marks (NFKC folds the full-width comma and "!" to ASCII)
    assert tokens == ["这", "部", "电", "影", "太", "好", "看", "了", ",", "我", "非", "常", "喜", "欢", "!"]


def test_japanese_korean_and_mixed_text() -> None:
    tokenizer = train_word_tokenizer(["ひらがな カタカナ 한국어 good movie ."])
    assert tokenizer.encode("ひらがな 한국어 good movie.").tokens == [
        *"ひらがな",
        *"한국어",
        "good",
        "movie",
        ".",
    ]


def test_english_is_tokenized_as_before() -> None:
    tokenizer = train_word_tokenizer(["The movie wasn't good."])
    assert tokenizer.encode("The movie wasn't good.").tokens == ["the", "movie", "wasn", "'", "t", "good", "."]


def test_saved_tokenizer_keeps_the_cjk_split(tmp_path: Path) -> None:
    tokenizer = train_word_tokenizer(POSITIVE + NEGATIVE)
    save_tokenizer(tokenizer, tmp_path)
    assert load_tokenizer(tmp_path).encode("真是糟糕").tokens == ["真", "是", "糟", "糕"]


def test_tiny_textcnn_learns_chinese_sentiment() -> None:
    torch = pytest.importorskip("torch")
    from kdserve.train.common import pad_batch
    from kdserve.train.students import TextCNNConfig, TextCNNStudent

    rng = random.Random(0)
    rows = [(rng.choice(POSITIVE), 1) if i % 2 == 0 else (rng.choice(NEGATIVE), 0) for i in range(64)]
    tokenizer = train_word_tokenizer([t for t, _ in rows])
    ids = encode_batch(tokenizer, [t for t, _ in rows], 32)
    assert min(len(x) for x in ids) >= 6  # characters, not one token a clause
    torch.manual_seed(0)
    model = TextCNNStudent(TextCNNConfig(tokenizer.get_vocab_size(), 2, embedding_dim=16, num_filters=8, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    batch = pad_batch(ids, 0, with_token_types=False)
    targets = torch.tensor([y for _, y in rows])
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    # unseen sentences built from seen characters
    test = encode_batch(tokenizer, ["电影很精彩，喜欢", "很无聊，浪费时间"], 32)
    test_batch = pad_batch(test, 0, with_token_types=False)
    with torch.no_grad():
        predicted = model(test_batch["input_ids"], test_batch["attention_mask"]).argmax(-1).tolist()
    assert predicted == [1, 0]
