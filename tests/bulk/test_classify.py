"""kdserve classify on a tiny real bundle: every input format, ids, shards, resume and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kdserve.bulk.job import ClassifyJob, run_job
from kdserve.bulk.label import label_texts
from kdserve.core.bundle import BundleModel, softmax
from kdserve.core.errors import ConfigError
from tests.bulk.conftest import texts, write_input


def _run(bundle: Path, inputs: list[Path], out: Path, **options: object) -> dict:
    options = {"workers": 1, "threads": 1, "shard_rows": 25, **options}
    return run_job(ClassifyJob(str(bundle), [str(p) for p in inputs], str(out), **options))  # type: ignore[arg-type]


def _table(out: Path) -> dict[str, list]:
    return pq.read_table(out).sort_by([("source", "ascending"), ("row", "ascending")]).to_pydict()


def test_every_input_format_gives_the_same_rows(bilstm: Path, tmp_path: Path) -> None:
    rows = texts(60)
    expected = softmax(BundleModel(bilstm).predict(rows))
    tables = {}
    for suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        source = write_input(tmp_path / f"in{suffix}", rows)
        summary = _run(bilstm, [source], tmp_path / f"out{suffix}")
        assert (summary["rows"], summary["shards"], summary["classified_now"]) == (60, 3, 60)
        tables[suffix] = table = _table(tmp_path / f"out{suffix}")
        assert table["row"] == table["id"] == list(range(60))  # no id column: the row position
        assert table["label"] == ["positive" if p[1] > p[0] else "negative" for p in expected]
        np.testing.assert_allclose(table["score_positive"], expected[:, 1], atol=1e-6)
        assert set(table["bundle_checksum"]) == {BundleModel(bilstm).manifest.checksum}
    # The synthetic texts alternate positive / negative and the tiny model has learnt them.
    assert tables[".csv"]["label"][:4] == ["positive", "negative", "positive", "negative"]
    for suffix in (".tsv", ".jsonl", ".parquet"):
        assert tables[suffix]["score"] == tables[".csv"]["score"], suffix


def test_id_column_folder_and_jsonl_output(bilstm: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_input(folder / "a.csv", texts(30, 1), text_column="content", ids=[f"a{i}" for i in range(30)])
    write_input(folder / "b.jsonl", texts(20, 2), text_column="content", ids=[f"b{i}" for i in range(20)])
    _run(bilstm, [folder], tmp_path / "out", id_column="post_id", output_format="jsonl")
    lines = [json.loads(line) for path in sorted((tmp_path / "out").glob("part-*.jsonl")) for line in path.open()]
    assert [r["id"] for r in lines] == [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(20)]
    assert {r["source"] for r in lines} == {str(folder / "a.csv"), str(folder / "b.jsonl")}
    assert sorted((tmp_path / "out" / "_manifests").iterdir())[0].name == "part-00000-000000.json"


def test_quoted_multiline_csv_is_cut_at_record_boundaries(bilstm: Path, tmp_path: Path) -> None:
    source = tmp_path / "posts.csv"
    source.write_text('id,text\n1,"the movie was\ngreat ."\n2,"the plot, was ""awful"" ."\n3,\n4,the film was good .\n')
    _run(bilstm, [source], tmp_path / "out", shard_rows=1, id_column="id")
    table = _table(tmp_path / "out")
    assert table["id"] == ["1", "2", "3", "4"]
    assert table["label"] == ["positive", "negative", table["label"][2], "positive"]
    # The empty text is still scored (one row out for every row in), as BundleModel scores "".
    empty = softmax(BundleModel(bilstm).predict([""]))[0]
    assert table["score_positive"][2] == pytest.approx(float(empty[1]), abs=1e-6)


def test_rerun_of_a_finished_job_classifies_nothing(bilstm: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", texts(40))
    _run(bilstm, [source], tmp_path / "out")
    before = _table(tmp_path / "out")
    again = _run(bilstm, [source], tmp_path / "out", workers=2)  # workers may change between runs
    assert (again["classified_now"], again["skipped_committed"]) == (0, 40)
    assert _table(tmp_path / "out") == before
    assert json.loads((tmp_path / "out" / "_job.json").read_text())["status"] == "complete"


def test_a_lost_shard_is_redone_alone(bilstm: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", texts(60))
    _run(bilstm, [source], tmp_path / "out")
    before = _table(tmp_path / "out")
    (tmp_path / "out" / "_manifests" / "part-00000-000001.json").unlink()  # a crash between the two renames
    again = _run(bilstm, [source], tmp_path / "out")
    assert again["classified_now"] == 25
    assert _table(tmp_path / "out") == before


def test_another_job_in_the_same_folder_is_refused(bilstm: Path, renamed: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", texts(30))
    _run(bilstm, [source], tmp_path / "out")
    with pytest.raises(ConfigError, match="holds another job: the bundle changed"):
        _run(renamed, [source], tmp_path / "out")
    with pytest.raises(ConfigError, match="shard_rows changed"):
        _run(bilstm, [source], tmp_path / "out", shard_rows=10)
    with source.open("a") as handle:
        handle.write("the film was dull .\n")
    with pytest.raises(ConfigError, match=r"holds another job: the input .*in.csv changed"):
        _run(bilstm, [source], tmp_path / "out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no _job.json"):
        _run(bilstm, [source], tmp_path / "other")


def test_label_texts_on_workers_equals_in_process_predict(bilstm: Path) -> None:
    rows = texts(150) + ["", "the film was wonderful but the plot was dull ."]
    logits = label_texts(bilstm, rows, batch_size=16, workers=2, batches_per_task=2)
    assert np.array_equal(logits, BundleModel(bilstm).predict(rows, batch_size=16))  # identical, not close


@pytest.mark.slow  # a local Ray instance takes about a minute to start on a loaded 2-core machine
def test_ray_engine_output_is_identical(bilstm: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    source = write_input(tmp_path / "in.parquet", texts(80))
    _run(bilstm, [source], tmp_path / "local")
    summary = _run(bilstm, [source], tmp_path / "ray", engine="ray", workers=2)
    assert summary["classified_now"] == 80
    assert _table(tmp_path / "ray") == _table(tmp_path / "local")
    for part in sorted((tmp_path / "local").glob("part-*.parquet")):
        assert (tmp_path / "ray" / part.name).read_bytes() == part.read_bytes()


def test_copy_of_bundle_is_the_same_job(bilstm: Path, tmp_path: Path) -> None:
    """The job is keyed by the bundle's checksums, not its path: a bundle moved to shared storage resumes."""
    source = write_input(tmp_path / "in.csv", texts(30))
    _run(bilstm, [source], tmp_path / "out")
    moved = shutil.copytree(bilstm, tmp_path / "moved")
    assert _run(moved, [source], tmp_path / "out")["classified_now"] == 0


def test_a_moderation_bundle_gives_calibrated_scores_and_its_policy_decisions(
    tiny_bundles: Path, tmp_path: Path
) -> None:
    """Multi-label: one sigmoid(z / T_c) per category, never a softmax; the default policy's flags."""
    from tests.serve.moderation_bundles import MULTI, build_moderation_bundles

    bundle = build_moderation_bundles(tiny_bundles, tmp_path / "bundles") / MULTI
    rows = texts(40)
    model = BundleModel(bundle)
    logits = model.predict(rows)
    expected = 1 / (1 + np.exp(-logits / np.array([1.5, 0.5], dtype=np.float32)))
    _run(bundle, [write_input(tmp_path / "in.csv", rows)], tmp_path / "out")
    table = _table(tmp_path / "out")
    np.testing.assert_allclose(table["score_negative"], expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(table["score_positive"], expected[:, 1], atol=1e-5)
    want = [[n for n, s, t in (("negative", p[0], 0.5), ("positive", p[1], 0.7)) if s >= t] for p in expected]
    assert table["flags"] == want and table["flagged"] == [bool(f) for f in want]
    assert len({tuple(f) for f in table["flags"]}) > 1  # the decisions differ across rows
