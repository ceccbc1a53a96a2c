"""Production texts as transfer data: the shadow log and plain files, deduplicated; bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.core.errors import DataError
from kdserve.serve.shadow import ShadowLog, text_sha256
from kdserve.train.transfer_data import load_transfer_texts, read_texts


def _shadow_record(text: str, with_text: bool) -> dict[str, object]:
    """A disagreement record as serve/shadow.py writes it."""
    record: dict[str, object] = {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "route": "default",
        "primary_model": "prod",
        "shadow_model": "new",
        "primary_label": "positive",
        "shadow_label": "negative",
        "primary_scores": {"negative": 0.4, "positive": 0.6},
        "shadow_scores": {"negative": 0.7, "positive": 0.3},
        "score_difference": 0.3,
        "text_sha256": text_sha256(text),
    }
    if with_text:
        record["text"] = text
    return record


def test_shadow_log_texts_are_read_and_hash_only_records_counted(tmp_path: Path) -> None:
    path = tmp_path / "shadow.jsonl"
    log = ShadowLog(path, log_texts=True)
    log.write([_shadow_record("the plot was thin", True), _shadow_record("secret", False)])
    log.write([_shadow_record("a fine cast", True)])
    log.close()
    assert read_texts(path) == (["the plot was thin", "a fine cast"], 1)


def test_a_shadow_log_without_texts_says_to_log_them(tmp_path: Path) -> None:
    path = tmp_path / "shadow.jsonl"
    path.write_text("".join(json.dumps(_shadow_record(f"t{i}", False)) + "\n" for i in range(3)))
    with pytest.raises(DataError, match=r"3 shadow records hold only text hashes, no texts: run the server with "):
        read_texts(path)


def test_plain_csv_and_jsonl_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first text\n\n  second text  \n")
    (tmp_path / "b.csv").write_text('id,sentence\n1,"a, quoted text"\n2,plain\n')
    (tmp_path / "c.jsonl").write_text('{"content": "from jsonl"}\n\n')
    (tmp_path / "d.tsv").write_text("text\tlabel\ntab text\tx\n")
    assert read_texts(tmp_path / "a.txt") == (["first text", "second text"], 0)
    assert read_texts(tmp_path / "b.csv") == (["a, quoted text", "plain"], 0)
    assert read_texts(tmp_path / "c.jsonl") == (["from jsonl"], 0)
    assert read_texts(tmp_path / "d.tsv") == (["tab text"], 0)


def test_dedup_against_the_labelled_data_and_each_other(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The movie was GOOD .\nnew one\nnew  one\nanother\n")
    (tmp_path / "b.txt").write_text("another\nthird\n")
    result = load_transfer_texts([tmp_path / "a.txt", tmp_path / "b.txt"], ["the movie was good ."])
    assert result.texts == ["new one", "another", "third"]
    assert (result.read, result.duplicates, result.hashed_only) == (6, 3, 0)
    assert result.summary() == {"read": 6, "added": 3, "duplicates": 3, "hashed_only": 0}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", r"empty.txt: no texts \(empty file\)"),
        ("blank.jsonl", b"\n  \n", r"blank.jsonl: no texts"),
        ("header.csv", b"text\n", r"header.csv: no texts"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": \n', r"bad.jsonl line 2: invalid JSON"),
        ("list.jsonl", b'["text"]\n', r"list.jsonl line 1: expected a JSON object, got list"),
        ("notext.jsonl", b'{"body": "x"}\n', r"notext.jsonl line 1: no text field"),
        ("number.jsonl", b'{"text": 3}\n', r"number.jsonl line 1: field 'text' is int, not a string"),
        ("cols.csv", b"body,label\nx,y\n", r"cols.csv: no text column \(looked for text, sentence"),
        ("bytes.txt", b"fine\n\xff\xfe bad\n", r"bytes.txt line 2: not valid UTF-8 \(byte 0xff at column 1\)"),
        ("quote.csv", b'text\n"never closed\n', r"quote.csv line \d+: malformed file"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        load_transfer_texts([path], [])
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="transfer data file not found: .*nope.txt"):
        load_transfer_texts([tmp_path / "nope.txt"], [])
