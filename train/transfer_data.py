"""Production texts as extra transfer data: ``kdserve distill --transfer-data FILE`` (repeatable).

The texts a model meets in production are the best unlabelled data for its successor: they are
the domain it must serve, and a teacher labels them like the augmented copies (no gold label, soft
targets only). Accepted files:

- the shadow route's JSONL (``serve/shadow.py``): records keep their ``text`` only when the server
  ran with ``--log-texts``; records holding just ``text_sha256`` are skipped and counted, and a log
  with no text at all is refused with that advice;
- any other ``.jsonl`` of objects with a text field (text, sentence, review or content);
- a ``.csv`` / ``.tsv`` with such a header;
- anything else: plain text, one text per line.

Texts are deduplicated against the labelled data (train and validation: a production text that is
in the validation split would leak into the score) and against each other, after collapsing
whitespace and case. A missing, empty, undecodable or malformed file is a one-line ``DataError``
naming the file and line, raised before anything is trained or written.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdserve.core.data import TEXT_COLUMNS, decode_file, json_record
from kdserve.core.errors import DataError

log = logging.getLogger("kdserve.train")


@dataclass(frozen=True)
class TransferTexts:
    """The new texts in file order, and what was dropped on the way, for the run's metrics."""

    texts: list[str]
    read: int
    duplicates: int
    hashed_only: int

    def summary(self) -> dict[str, int]:
        """Counts for metrics.json (never the texts themselves: they may be users' messages)."""
        added = len(self.texts)
        return {"read": self.read, "added": added, "duplicates": self.duplicates, "hashed_only": self.hashed_only}


def dedup_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _jsonl(path: Path, text: str) -> tuple[list[str], int]:
    texts, hashed = [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = json_record(line, path, number)
        column = next((c for c in TEXT_COLUMNS if c in record), None)
        if column is None:
            if "text_sha256" in record:  # a shadow record written without --log-texts
                hashed += 1
                continue
            raise DataError(f"{path} line {number}: no text field (looked for {', '.join(TEXT_COLUMNS)})")
        value = record[column]
        if not isinstance(value, str):
            raise DataError(f"{path} line {number}: field {column!r} is {type(value).__name__}, not a string")
        texts.append(value)
    return texts, hashed


def _table(path: Path, text: str, delimiter: str) -> list[str]:
    # strict: an unclosed quote is an error, not a field that swallows the rest of the file
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if delimiter == "\t" else {"strict": True}
    reader = csv.reader(io.StringIO(text, newline="\n"), **options)  # type: ignore[call-overload]
    try:
        header = next(reader, None)
        if header is None:
            return []
        names = [h.strip() for h in header]
        column = next((c for c in TEXT_COLUMNS if c in names), None)
        if column is None:
            raise DataError(
                f"{path}: no text column (looked for {', '.join(TEXT_COLUMNS)}); header: {', '.join(names)}"
            )
        index = names.index(column)
        return [row[index] for row in reader if len(row) > index]
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: malformed file ({' '.join(str(exc).split())})") from None


def read_texts(path: str | Path) -> tuple[list[str], int]:
    """(non-blank texts in file order, shadow records that held only a hash) of one file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"transfer data file not found: {path}")
    text = decode_file(path)
    suffix = path.suffix.lower()
    hashed = 0
    if suffix == ".jsonl":
        texts, hashed = _jsonl(path, text)
    elif suffix in (".csv", ".tsv"):
        texts = _table(path, text, "\t" if suffix == ".tsv" else ",")
    else:
        texts = text.split("\n")
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        if hashed:
            raise DataError(
                f"{path}: {hashed} shadow records hold only text hashes, no texts: run the server with "
                "--log-texts to collect texts for distillation"
            )
        raise DataError(f"{path}: no texts (empty file)")
    return texts, hashed


def load_transfer_texts(paths: Sequence[str | Path], known: Iterable[str]) -> TransferTexts:
    """Every file's texts, minus those in ``known`` (the labelled data) and repeats; all files are
    read and checked before any is used."""
    seen = {dedup_key(t) for t in known}
    out: list[str] = []
    read = duplicates = hashed = 0
    for path in paths:
        texts, skipped = read_texts(path)
        read += len(texts)
        hashed += skipped
        before = len(out)
        for text in texts:
            key = dedup_key(text)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            out.append(text)
        log.info("transfer data %s: %d texts, %d new", path, len(texts), len(out) - before)
    return TransferTexts(out, read, duplicates, hashed)
