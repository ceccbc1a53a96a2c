"""Tests of the data layer: real packaged and shared datasets, and every bad input a user
can hand it, checked down to the file, line and column the error message names."""

from __future__ import annotations

import subprocess
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kdserve.core.data import PACKAGED_DATASETS, DatasetSpec, LabeledData, load_dataset
from kdserve.core.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def expect(error: type[Exception], spec: DatasetSpec | str, *fragments: str) -> str:
    """Load, expect ``error``, and check the message is one line holding every fragment."""
    with pytest.raises(error) as info:
        load_dataset(spec)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared/data folder is not on this machine)")
    return path


# ---------------------------------------------------------------- module hygiene


def test_import_is_torch_free() -> None:
    code = (
        "import sys, kdserve.core.data; heavy = {'torch', 'pandas', 'datasets', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_packaged_datasets_are_described() -> None:
    assert set(PACKAGED_DATASETS) == {"rotten_tomatoes", "imdb", "sms_spam"}
    assert all(isinstance(text, str) and "\n" not in text for text in PACKAGED_DATASETS.values())


# ---------------------------------------------------------------- packaged datasets


@pytest.fixture(scope="module")
def rotten() -> LabeledData:
    return load_dataset("package:rotten_tomatoes")


def test_rotten_tomatoes_stratified_split(rotten: LabeledData) -> None:
    assert rotten.labels == ("negative", "positive")
    assert len(rotten.train) + len(rotten.validation) == 8530
    assert rotten.test is None
    val = Counter(label for _, label in rotten.validation)
    assert val[0] == val[1] == round(0.1 * 4265)
    assert Counter(label for _, label in rotten.train) == {0: 4265 - val[0], 1: 4265 - val[1]}
    assert "package:rotten_tomatoes" in rotten.source
    assert "\n" not in rotten.summary() and "852" in rotten.summary()


def test_rotten_tomatoes_seed_changes_split(rotten: LabeledData) -> None:
    other = load_dataset(DatasetSpec("package:rotten_tomatoes", seed=14))
    assert len(other.validation) == len(rotten.validation)
    assert other.validation != rotten.validation


def test_sms_spam_is_deterministic() -> None:
    first = load_dataset("package:sms_spam")
    assert first.labels == ("ham", "spam")
    assert len(first.train) + len(first.validation) == 4862
    assert load_dataset(DatasetSpec("package:sms_spam", seed=13)) == first
    assert load_dataset(DatasetSpec("package:sms_spam", seed=99)).validation != first.validation


def test_imdb_package() -> None:
    data = load_dataset(DatasetSpec("package:imdb", validation_fraction=0.2))
    assert data.labels == ("negative", "positive")
    assert (len(data.train), len(data.validation)) == (20000, 5000)


def test_unknown_package() -> None:
    expect(DataError, "package:nope", "'nope'", "imdb", "rotten_tomatoes", "sms_spam")


def test_package_label_names_override() -> None:
    data = load_dataset(DatasetSpec("package:sms_spam", label_names=("legit", "junk")))
    assert data.labels == ("legit", "junk")


# ---------------------------------------------------------------- ../shared/data


def test_shared_sst2() -> None:
    data = load_dataset(str(shared("sst2")))
    assert (len(data.train), len(data.validation)) == (67349, 872)
    assert data.labels == ("0", "1") and data.test is None


def test_shared_hate_speech() -> None:
    data = load_dataset(str(shared("hate_speech")))
    assert (len(data.train), len(data.validation)) == (20783, 2000)
    assert data.labels == ("hate_speech", "neither", "offensive")
    assert any("\n" in text for text, _ in data.train)


def test_shared_imdb_file() -> None:
    data = load_dataset(str(shared("imdb") / "reviews.csv"))
    assert len(data.train) + len(data.validation) == 2000
    assert data.labels == ("negative", "positive")


# ---------------------------------------------------------------- good small files


def test_auto_columns_and_numeric_order(tmp_path: Path) -> None:
    lines = [f"sentence {i}\t{label}" for i, label in enumerate(["10", "2", "1"] * 4)]
    path = write(tmp_path, "a.tsv", "sentence\tlabels\n" + "\n".join(lines) + "\n")
    data = load_dataset(str(path))
    assert data.labels == ("1", "2", "10")
    everything = dict(data.train + data.validation)
    assert everything["sentence 0"] == 2 and everything["sentence 1"] == 1 and everything["sentence 2"] == 0


def test_review_and_class_columns_alphabetical(tmp_path: Path) -> None:
    rows = "".join(f"x,review {i},{label}\n" for i, label in enumerate(["b", "a", "c", "1"] * 3))
    data = load_dataset(str(write(tmp_path, "r.csv", "content_not,review,class\n" + rows)))
    assert data.labels == ("1", "a", "b", "c")  # one non-integer label makes the order alphabetical


def test_explicit_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "e.csv",
        "text,body,y,label\nignored,hello,pos,x\nignored,bye,neg,x\nignored,hi,pos,x\nignored,ciao,neg,x\n",
    )
    data = load_dataset(DatasetSpec(str(path), text_column="body", label_column="y"))
    assert data.labels == ("neg", "pos")
    assert {text for text, _ in data.train + data.validation} == {"hello", "bye", "hi", "ciao"}


def test_jsonl_and_file_pair(tmp_path: Path) -> None:
    train = write(tmp_path, "train.jsonl", '{"text": " a ", "label": 1}\n\n{"text": "b", "label": 0, "x": 1}\n')
    val = write(tmp_path, "val.csv", "\ufefftext,label\nc,0\nd,1\n")  # a BOM is accepted
    data = load_dataset(DatasetSpec(str(train), validation=str(val)))
    assert data.train == [("a", 1), ("b", 0)]
    assert data.validation == [("c", 0), ("d", 1)]


def test_multiline_csv_and_tsv_stray_quotes(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "m.csv", 'text,label\n"one\ntwo, ""three""",a\nfour,b\n')
    assert load_dataset(DatasetSpec(str(csv_path), validation=str(csv_path))).train == [
        ('one\ntwo, "three"', 0),
        ("four", 1),
    ]
    tsv = write(tmp_path, "q.tsv", 'sentence\tlabel\na "quoted thing\t1\nend" here\t0\n')
    assert load_dataset(DatasetSpec(str(tsv), validation=str(tsv))).train == [('a "quoted thing', 1), ('end" here', 0)]


def test_blank_texts_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "text,label\nfine,0\n   ,1\n,0\nok,1\n")
    data = load_dataset(DatasetSpec(str(path), validation=str(path)))
    assert data.train == [("fine", 0), ("ok", 1)]
    assert "skipped 4 rows with blank text" in data.source  # two in each of the two reads


def test_label_names(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", "text,label\na,1\nb,0\nc,1\nd,0\n")
    assert load_dataset(DatasetSpec(str(path), label_names=("neg", "pos"))).labels == ("neg", "pos")
    expect(ConfigError, DatasetSpec(str(path), label_names=("a", "b", "c")), "label_names has 3", "2 labels")


def test_seeded_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    rows = [f"common {i},a" for i in range(50)] + ["rare 1,b", "rare 2,b", "single,c"]
    path = write(tmp_path, "s.csv", "text,label\n" + "\n".join(rows) + "\n")
    data = load_dataset(DatasetSpec(str(path), validation_fraction=0.2))
    assert Counter(label for _, label in data.validation) == {0: 10, 1: 1}  # rare label: at least 1
    assert ("single", 2) in data.train  # a label's only example stays in training
    assert load_dataset(DatasetSpec(str(path), validation_fraction=0.2)) == data
    assert load_dataset(DatasetSpec(str(path), validation_fraction=0.2, seed=1)).validation != data.validation


def test_directory_with_dev_and_test(tmp_path: Path) -> None:
    write(tmp_path, "train.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    write(tmp_path, "dev.tsv", "sentence\tlabel\nc\t1\n")
    write(tmp_path, "test.tsv", "index\tsentence\n0\td\n")  # GLUE style: unlabelled, left out
    data = load_dataset(str(tmp_path))
    assert (data.train, data.validation, data.test) == ([("a", 0), ("b", 1)], [("c", 1)], None)
    with pytest.raises(DataError, match="no test split"):
        data.split("test")
    write(tmp_path, "test.tsv", "sentence\tlabel\nd\t1\n")
    data = load_dataset(str(tmp_path))
    assert data.split("test") == [("d", 1)] and data.split("validation") == [("c", 1)]


# ---------------------------------------------------------------- hub (no network: a stand-in module)


class _Label:
    names = ["neg", "pos"]


class _Split:
    def __init__(self, texts: list[str], labels: list[int]) -> None:
        self.columns: dict[str, Any] = {"sentence": texts, "label": labels, "idx": list(range(len(texts)))}
        self.column_names = list(self.columns)
        self.features = {"label": _Label(), "sentence": object()}

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]


def test_hub_with_fake_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = {"train": _Split([f"t{i}" for i in range(10)], [0, 1] * 5), "test": _Split(["x", "y"], [-1, 1])}
    calls: list[tuple[str, str | None]] = []
    fake = types.SimpleNamespace(load_dataset=lambda name, config: calls.append((name, config)) or loaded)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    data = load_dataset("hub:glue/sst2")
    assert calls == [("glue", "sst2")]
    assert data.labels == ("neg", "pos")
    assert len(data.train) == 8 and len(data.validation) == 2
    assert data.test == [("y", 1)]  # the -1 row (unlabelled) is dropped


def test_unreachable_hub_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str, config: str | None) -> None:
        raise ConnectionError("Couldn't reach 'glue' on the Hub\n(offline)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=refuse))
    expect(DataError, "hub:glue/sst2", "hub:glue/sst2", "ConnectionError", "offline")


# ---------------------------------------------------------------- bad specs and files


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": ""},
        {"source": "  "},
        {"source": "x.csv", "validation_fraction": 0},
        {"source": "x.csv", "validation_fraction": 1.0},
        {"source": "x.csv", "validation_fraction": -0.5},
        {"source": "x.csv", "text_column": ""},
        {"source": "package:imdb", "validation": "v.csv"},
        {"source": "x.csv", "label_names": ("a", "a")},
    ],
)
def test_bad_spec(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DatasetSpec(**kwargs)


def test_missing_paths(tmp_path: Path) -> None:
    expect(DataError, str(tmp_path / "nope.csv"), "dataset file not found", "nope.csv")
    expect(DataError, str(tmp_path), str(tmp_path), "no train file")
    write(tmp_path, "train.csv", "text,label\na,0\n")
    expect(DataError, DatasetSpec(str(tmp_path), validation=str(tmp_path / "v.csv")), "dataset file not found", "v.csv")
    write(tmp_path, "train.tsv", "text\tlabel\na\t0\n")
    expect(DataError, str(tmp_path), "ambiguous", "train.csv", "train.tsv")


def test_unsupported_extension(tmp_path: Path) -> None:
    expect(DataError, str(write(tmp_path, "d.txt", "text,label\na,0\n")), "d.txt", "unsupported", ".txt")


def test_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "body,label\na,0\n")
    expect(DataError, str(path), "c.csv", "no text column", "body, label")
    expect(DataError, DatasetSpec(str(path), text_column="body", label_column="y"), "c.csv", "'y'", "body, label")


def test_empty_datasets(tmp_path: Path) -> None:
    expect(DataError, str(write(tmp_path, "h.csv", "text,label\n")), "h.csv", "empty dataset")
    expect(DataError, str(write(tmp_path, "z.csv", "")), "z.csv", "empty")
    expect(DataError, str(write(tmp_path, "w.csv", "text,label\n  ,0\n,1\n")), "w.csv", "empty dataset", "blank")


def test_empty_label_names_record_start_line(tmp_path: Path) -> None:
    # Record 1 spans lines 2-3 and the bad record spans lines 4-5: the error must say line 4.
    path = write(tmp_path, "l.csv", 'text,label\n"first\nsecond",a\n"bad\nrecord",\nfine,b\n')
    expect(DataError, str(path), "l.csv line 4", "'label'")
    short = write(tmp_path, "s.tsv", "sentence\tlabel\nok\t1\nno label here\n")
    expect(DataError, str(short), "s.tsv line 3", "'label'")
    jsonl = write(tmp_path, "j.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n')
    expect(DataError, str(jsonl), "j.jsonl line 2", "'label'")


def test_too_many_fields(tmp_path: Path) -> None:
    expect(DataError, str(write(tmp_path, "f.tsv", "sentence\tlabel\na\t1\nb\tc\t0\n")), "f.tsv line 3", "3 fields")


def test_unseen_label_in_validation_and_test(tmp_path: Path) -> None:
    train = write(tmp_path, "train.csv", "text,label\na,x\nb,y\n")
    val = write(tmp_path, "dev.csv", 'text,label\n"multi\nline",x\nc,z\n')
    expect(DataError, DatasetSpec(str(train), validation=str(val)), "dev.csv line 4", "'z'", "x, y")
    write(tmp_path, "dev.csv", "text,label\nc,y\n")
    write(tmp_path, "test.csv", "text,label\nc,y\nd,q\n")
    expect(DataError, str(tmp_path), "test.csv line 3", "'q'")


def test_undecodable_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", b"text,label\nok,1\n\xff\xfe bad,0\n")
    expect(DataError, str(path), "u.csv line 3", "not valid UTF-8", "0xff", "column 1")
    mid = write(tmp_path, "v.jsonl", b'{"text": "ok", "label": 1}\n{"text": "ab\xc3(", "label": 0}\n')
    expect(DataError, str(mid), "v.jsonl line 2", "0xc3", "column 13")


def test_bad_jsonl(tmp_path: Path) -> None:
    bad = write(tmp_path, "b.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n')
    expect(DataError, str(bad), "b.jsonl line 2", "invalid JSON")
    listed = write(tmp_path, "l.jsonl", '{"text": "a", "label": 0}\n\n["b", 1]\n')
    expect(DataError, str(listed), "l.jsonl line 3", "JSON object", "list")


def test_split_name_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "text,label\na,0\nb,1\n")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset(DatasetSpec(str(path), validation=str(path))).split("dev")
