"""Multi-label data: label columns, vote counts, comma-separated id lists, OLID's levels, and
every bad row named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdserve.core.data import DatasetSpec, load_dataset
from kdserve.core.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def multi(source: Path, **kwargs: object) -> DatasetSpec:
    return DatasetSpec(str(source), problem_type="multi_label", **kwargs)  # type: ignore[arg-type]


def expect(spec: DatasetSpec, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


VOTES = (
    "text,annotators,hate_votes,offensive_votes,hate,offensive\n"
    "you people are vermin,3,2,1,1,1\n"
    "what a lovely day,3,0,0,0,0\n"
    "shut up idiot,6,0,6,0,1\n"
)


def test_vote_counts_become_soft_targets(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", VOTES)
    data = load_dataset(multi(path, label_columns=("hate_votes", "offensive_votes"), validation=str(path)))
    assert data.problem_type == "multi_label" and data.labels == ("hate", "offensive")
    assert data.validation == [
        ("you people are vermin", (2 / 3, 1 / 3)),
        ("what a lovely day", (0.0, 0.0)),
        ("shut up idiot", (0.0, 1.0)),
    ]
    assert "multi-label" in data.summary() and "offensive 1" in data.summary()


def test_zero_one_and_probability_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,hate,threat\na,1,0.25\nb,0,1\n")
    data = load_dataset(multi(path, label_columns="hate,threat", validation=str(path)))
    assert data.labels == ("hate", "threat")
    assert data.train == [("a", (1.0, 0.25)), ("b", (0.0, 1.0))]


def test_comma_separated_ids_with_names_file(tmp_path: Path) -> None:
    # GoEmotions' layout: no header, text<TAB>ids<TAB>comment id; names in emotions.txt
    write(tmp_path / "train.tsv", "so happy\t1,2\tc1\nugh\t0\tc2\nmeh\t2\tc3\n")
    write(tmp_path / "dev.tsv", "yay\t1\tc4\n")
    write(tmp_path / "emotions.txt", "anger\njoy\nneutral\n")
    data = load_dataset(multi(tmp_path, columns=("text", "labels", "id"), label_column="labels"))
    assert data.labels == ("anger", "joy", "neutral")
    assert data.train == [("so happy", (0.0, 1.0, 1.0)), ("ugh", (1.0, 0.0, 0.0)), ("meh", (0.0, 0.0, 1.0))]
    assert data.validation == [("yay", (0.0, 1.0, 0.0))]


def test_comma_separated_names(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'text,label\na,"hate,threat"\nb,threat\n')
    data = load_dataset(multi(path, validation=str(path)))
    assert data.labels == ("hate", "threat") and data.train[0] == ("a", (1.0, 1.0))


def test_categorical_levels_olid_style(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.tsv",
        "id\ttweet\ta\tb\tc\r\n1\tyou suck\tOFF\tTIN\tIND\r\n2\tnice\tNOT\tNULL\tNULL\r\n3\tdamn\tOFF\tUNT\tNULL\r\n",
    )
    data = load_dataset(multi(path, label_columns=("a", "b", "c"), validation=str(path)))
    assert data.labels == ("NOT", "OFF", "TIN", "UNT", "IND")
    assert data.train[0] == ("you suck", (0.0, 1.0, 1.0, 0.0, 1.0))
    assert data.train[1] == ("nice", (1.0, 0.0, 0.0, 0.0, 0.0))


def test_bad_rows_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,hate\na,1\nb,1.5\n")
    expect(multi(path, label_columns=("hate", "other"), validation=str(path)), "t.csv", "'other' not found")
    expect(multi(path, label_columns=("hate",), validation=str(path)), "t.csv line 3", "soft target '1.5'", "[0, 1]")
    empty = write(tmp_path / "e.csv", "text,hate\na,1\nb,\n")
    expect(multi(empty, label_columns=("hate",), validation=str(empty)), "e.csv line 3", "missing label", "'hate'")
    write(tmp_path / "train.tsv", "a\t1\tx\nb\t3\ty\n")
    write(tmp_path / "emotions.txt", "anger\njoy\n")
    expect(
        multi(tmp_path, columns=("text", "labels", "id"), label_column="labels"), "line 2", "label id 3 out of range"
    )
    votes = write(tmp_path / "v.csv", "text,annotators,hate_votes\na,3,4\n")
    expect(multi(votes, label_columns=("hate_votes",), validation=str(votes)), "v.csv line 2", "'4' votes")
    missing = write(tmp_path / "m.csv", "text,hate_votes\na,1\n")
    expect(multi(missing, label_columns=("hate_votes",), validation=str(missing)), "annotators")


def test_multi_label_spec_checks() -> None:
    with pytest.raises(ConfigError, match="needs problem_type multi_label"):
        DatasetSpec("x.csv", label_columns=("a", "b"))
    with pytest.raises(ConfigError, match="problem_type must be"):
        DatasetSpec("x.csv", problem_type="multi")
    with pytest.raises(ConfigError, match="file and folder sources"):
        load_dataset(DatasetSpec("package:imdb", problem_type="multi_label"))


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def test_real_moderation_data_loads() -> None:
    go = load_dataset(multi(_shared("goemotions"), columns=("text", "labels", "id"), label_column="labels"))
    assert (len(go.labels), len(go.train), len(go.validation)) == (28, 43410, 5426)
    assert go.labels[27] == "neutral"
    olid = load_dataset(DatasetSpec(str(_shared("olid")), label_column="subtask_a"))
    assert olid.labels == ("NOT", "OFF") and len(olid.train) + len(olid.validation) == 13240
    levels = load_dataset(multi(_shared("olid"), label_columns=("subtask_a", "subtask_b", "subtask_c")))
    assert levels.labels == ("NOT", "OFF", "TIN", "UNT", "GRP", "IND", "OTH")
    hate = _shared("hate_speech")
    votes = load_dataset(
        multi(
            hate / "train_votes.csv",
            validation=str(hate / "dev_votes.csv"),
            label_columns=("hate_speech_votes", "offensive_votes"),
        )
    )
    assert votes.labels == ("hate_speech", "offensive") and len(votes.validation) == 2000
    assert all(0 <= v <= 1 for _, t in votes.train for v in t)
