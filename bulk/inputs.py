"""Bulk inputs: resolve paths, fingerprint them, plan shards with a streaming scan, read one shard.

A job is cut into shards of ``shard_rows`` consecutive rows of one input file. The planning scan
streams every file once (constant memory), checks its schema and every record, and notes where each
shard starts: a byte offset for CSV/TSV/JSONL, a row number for Parquet. A worker (a local process
or a Ray actor) then reads only its own shard, so no process ever holds more than one shard of
text, and the parent never ships texts through a queue. Shard boundaries depend only on the input
bytes and ``shard_rows``, so a rerun after a crash cuts the same shards and can skip committed ones.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kdserve.core.data import TEXT_COLUMNS, _column, json_record
from kdserve.core.errors import DataError

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
_GLOB_CHARS = set("*?[")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of input file ``file``; ``offset`` is where row ``start`` begins
    (bytes for text formats, unused for Parquet)."""

    file: int
    index: int
    start: int
    stop: int
    offset: int
    line: int = 0  # lines before ``offset``, so errors name the file's own line numbers

    @property
    def name(self) -> str:
        return f"part-{self.file:05d}-{self.index:06d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class InputFile:
    """One input file as planned: its format, header (CSV/TSV), columns used and shards."""

    path: str
    format: str
    text_column: str
    id_column: str | None
    header: list[str] = field(default_factory=list)
    rows: int = 0
    shards: list[Shard] = field(default_factory=list)

    def to_task(self) -> dict[str, Any]:
        """What a worker needs to read a shard of this file: plain values only (pickled to
        processes, serialised to Ray actors)."""
        data = asdict(self)
        data.pop("shards")
        return data


def resolve_inputs(specs: Sequence[str]) -> list[Path]:
    """Files, folders (every supported file under it, sorted) and globs, in the order given,
    each file once. Anything that matches nothing is an error, not a silent empty job."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if _GLOB_CHARS & set(spec):
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
            files = [p for p in matches if p.is_file() and p.suffix.lower() in SUFFIXES]
            if not files:
                raise DataError(f"input {spec!r} matches no .csv, .tsv, .jsonl or .parquet file")
        elif path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in SUFFIXES
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not files:
                raise DataError(f"input folder {path} holds no .csv, .tsv, .jsonl or .parquet file")
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'!r}: expected {_names()}")
            files = [path]
        else:
            raise DataError(f"input not found: {path}")
        found.extend(files)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    if not unique:
        raise DataError("no input files given")
    return list(unique)


def _names() -> str:
    return ", ".join(SUFFIXES)


def fingerprint(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Path, size and mtime of every input: a rerun whose inputs differ in any of them is another job."""
    out = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        out.append({"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


# ---------------------------------------------------------------- text formats, streamed


class _Lines:
    """Decoded lines of a binary file from ``offset``, tracking the line number and the byte
    position after the last line handed out (so a CSV record's end offset is known)."""

    def __init__(self, handle: BinaryIO, path: str, offset: int, line: int) -> None:
        self.handle, self.path, self.line = handle, path, line
        handle.seek(offset)
        self.pos = offset

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self.handle.readline()
            if not raw:
                return
            self.line += 1
            if self.pos == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            self.pos = self.handle.tell()
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{self.path} line {self.line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1})"
                ) from None


def _csv_options(fmt: str) -> dict[str, Any]:
    # GLUE-style TSVs hold stray quotes that standard quoting would swallow across lines (as core/data.py).
    return {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}


def _csv_records(
    handle: BinaryIO, path: str, fmt: str, offset: int, width: int | None, line: int = 0
) -> Iterator[tuple[int, list[str], int]]:
    """(last line, fields, byte offset after the record) for each non-blank record from ``offset``
    (``line``: the lines before it)."""
    lines = _Lines(handle, path, offset, line)
    reader = csv.reader(iter(lines), **_csv_options(fmt))
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is not None and len(row) != width:
                raise DataError(f"{path} line {lines.line}: {len(row)} fields but the header has {width}")
            yield lines.line, row, lines.pos
    except csv.Error as exc:
        raise DataError(f"{path} line {lines.line}: malformed {fmt.upper()} ({' '.join(str(exc).split())})") from None


def _jsonl_records(
    handle: BinaryIO, path: str, offset: int, line: int = 0
) -> Iterator[tuple[int, dict[str, Any], int]]:
    lines = _Lines(handle, path, offset, line)
    for text in lines:
        if not text.strip():
            continue
        record = json_record(text, path, lines.line)
        yield lines.line, record, lines.pos


def _pick_columns(
    path: str, columns: Sequence[str], text_column: str | None, id_column: str | None
) -> tuple[str, str | None]:
    text = _column(path, columns, text_column, TEXT_COLUMNS, "text")
    assert text is not None  # required=True raises instead
    if id_column is not None and id_column not in columns:
        raise DataError(f"{path}: id column {id_column!r} not found; columns present: {', '.join(columns)}")
    return text, id_column


# ---------------------------------------------------------------- planning


def plan(
    paths: Sequence[Path], shard_rows: int, text_column: str | None = None, id_column: str | None = None
) -> list[InputFile]:
    """Scan every input once (streaming) and cut it into shards; refuses a file whose text or id
    column is missing, differs from the first file's (mixed schemas), or holds a bad record."""
    planned: list[InputFile] = []
    for index, path in enumerate(paths):
        fmt = SUFFIXES[path.suffix.lower()]
        # Later files must use the text column the first one established (one output schema a job).
        asked = text_column or (planned[0].text_column if planned else None)
        try:
            if fmt == "parquet":
                item = _plan_parquet(index, path, shard_rows, asked, id_column)
            else:
                item = _plan_text(index, path, fmt, shard_rows, asked, id_column)
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except DataError as exc:
            if planned and text_column is None and "column" in str(exc) and "not found" in str(exc):
                raise DataError(f"mixed schemas: {exc} (as in {planned[0].path}); give --text-column") from None
            raise
        planned.append(item)
    return planned


def _cut(index: int, starts: list[tuple[int, int]], rows: int, shard_rows: int) -> list[Shard]:
    return [
        Shard(index, k, k * shard_rows, min((k + 1) * shard_rows, rows), offset, line)
        for k, (offset, line) in enumerate(starts)
    ]


def _plan_text(
    index: int, path: Path, fmt: str, shard_rows: int, text_column: str | None, id_column: str | None
) -> InputFile:
    name = str(path)
    starts: list[tuple[int, int]] = []
    rows = 0
    with path.open("rb") as handle:
        if fmt == "jsonl":
            item: InputFile | None = None
            position, last = 0, 0
            for line, record, end in _jsonl_records(handle, name, 0):
                if item is None:
                    text, ident = _pick_columns(name, list(record), text_column, id_column)
                    item = InputFile(name, fmt, text, ident)
                _check_record(name, line, record, item)
                if rows % shard_rows == 0:
                    starts.append((position, last))
                position, last = end, line
                rows += 1
            if item is None:
                raise DataError(f"{path}: no records")
        else:
            records = _csv_records(handle, name, fmt, 0, None)
            first = next(records, None)
            if first is None:
                raise DataError(f"{path}: file is empty (no header row)")
            last, header, position = first
            header = [h.strip() for h in header]
            text, ident = _pick_columns(name, header, text_column, id_column)
            item = InputFile(name, fmt, text, ident, header=header)
            for line, _row, end in _csv_records(handle, name, fmt, position, len(header), last):
                if rows % shard_rows == 0:
                    starts.append((position, last))
                position, last = end, line
                rows += 1
    item.rows = rows
    item.shards = _cut(index, starts, rows, shard_rows)
    return item


def _check_record(path: str, line: int, record: dict[str, Any], item: InputFile) -> None:
    for column in (item.text_column, item.id_column):
        if column is not None and column not in record:
            raise DataError(f"{path} line {line}: no {column!r} field (mixed schemas within the file)")
    if item.id_column is not None and record[item.id_column] is None:
        raise DataError(f"{path} line {line}: id {item.id_column!r} is null")


def _plan_parquet(index: int, path: Path, shard_rows: int, text_column: str | None, id_column: str | None) -> InputFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from None
    schema = meta.schema_arrow
    text, ident = _pick_columns(str(path), schema.names, text_column, id_column)
    kind = schema.field(text).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: text column {text!r} is {kind}, expected a string column")
    rows = meta.metadata.num_rows
    starts = [(k * shard_rows, 0) for k in range(-(-rows // shard_rows))]
    return InputFile(str(path), "parquet", text, ident, rows=rows, shards=_cut(index, starts, rows, shard_rows))


# ---------------------------------------------------------------- reading one shard


def _text(value: Any) -> str:
    """A null text is scored as the empty text (the row still appears in the output)."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def read_shard(task: dict[str, Any], shard: Shard) -> tuple[list[Any], list[str]]:
    """(ids, texts) of one shard: ids are the id column's values as strings, or row positions."""
    path, fmt, text_column, id_column = task["path"], task["format"], task["text_column"], task["id_column"]
    texts: list[str] = []
    ids: list[Any] = []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        columns = [text_column] + ([id_column] if id_column and id_column != text_column else [])
        handle = pq.ParquetFile(path)
        # Only the row groups that overlap the shard, streamed in record batches: memory stays about
        # one batch even when a writer made row groups of a million rows.
        groups, first, seen = [], None, 0
        for group in range(handle.num_row_groups):
            size = handle.metadata.row_group(group).num_rows
            if seen + size > shard.start and seen < shard.stop:
                groups.append(group)
                first = seen if first is None else first
            seen += size
        position = first or 0
        for batch in handle.iter_batches(batch_size=4096, row_groups=groups, columns=columns):
            lo, hi = max(shard.start - position, 0), min(shard.stop - position, batch.num_rows)
            position += batch.num_rows
            if hi <= lo:
                continue
            part = batch.slice(lo, hi - lo)
            texts.extend(_text(v) for v in part.column(text_column).to_pylist())
            if id_column:
                ids.extend(str(v) for v in part.column(id_column).to_pylist())
            if position >= shard.stop:
                break
    else:
        with open(path, "rb") as handle:
            if fmt == "jsonl":
                records: Iterator[Any] = (r for _, r, _ in _jsonl_records(handle, path, shard.offset, shard.line))
            else:
                header = task["header"]
                rows = _csv_records(handle, path, fmt, shard.offset, len(header), shard.line)
                records = (dict(zip(header, row)) for _, row, _ in rows)
            for record in records:
                texts.append(_text(record.get(text_column)))
                if id_column:
                    ids.append(str(record.get(id_column)))
                if len(texts) == shard.rows:
                    break
    if len(texts) != shard.rows:
        raise DataError(f"{path}: shard {shard.name} expected {shard.rows} rows, read {len(texts)} (file changed?)")
    if not id_column:
        ids = list(range(shard.start, shard.stop))
    return ids, texts
