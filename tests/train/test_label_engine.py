"""``kdserve distill --label-engine``: the transfer set labelled on worker processes or Ray Data gives
the in-process logits bit for bit, under the same cache key; wrong combinations fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdserve.cli import main
from kdserve.core.data import DatasetSpec
from kdserve.core.errors import ConfigError
from kdserve.train.distill import DistillConfig, distill
from kdserve.train.transfer import cache_key, teacher_logits
from tests.bundles import build_tiny_bundle, sentiment_texts
from tests.conftest import write_sentiment_csv


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny bundle teacher, a folder that is not a bundle (stands for a checkpoint) and sentiment data."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("label-engine")
    (root / "checkpoint").mkdir()
    return {
        "bundle": build_tiny_bundle(root / "bundle", name="teacher", kind="bilstm", seed=1),
        "checkpoint": root / "checkpoint",
        "data": write_sentiment_csv(root / "sentiment.csv", 200),
    }


def _config(tmp_path: Path, teacher: object, data: Path, **overrides: object) -> DistillConfig:
    values: dict[str, object] = {
        "teacher": teacher,
        "data": DatasetSpec(str(data), validation_fraction=0.2),
        "output_dir": str(tmp_path / "student"),
        "student": "bilstm",
        "epochs": 1,
        "batch_size": 32,
        "max_length": 32,
        "augment": "mask+ngram",
        "n_iter": 2,
        "threads": 1,
        "glove": False,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
        "device": "cpu",
        "student_options": {"embedding_dim": 16, "hidden_size": 8, "classifier_hidden": 16},
    }
    values.update(overrides)
    return DistillConfig(**values)  # type: ignore[arg-type]


def _cached(cache: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: np.load(p, allow_pickle=False) for p in cache.glob("*/logits.npy")}


def test_local_engine_caches_the_inline_logits(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's --label-engine local and the default in-process labelling fill the same cache entry
    (the same key) with np.array_equal logits."""
    bundle, data = setup["bundle"], setup["data"]
    distill(_config(tmp_path / "inline", str(bundle), data))
    argv = ["distill", "--student", "bilstm", "--teacher", str(bundle), "--data", str(data), "--no-glove"]
    argv += ["--validation-fraction", "0.2", "--output", str(tmp_path / "local" / "student")]
    argv += ["--cache-dir", str(tmp_path / "local" / "cache"), "--max-length", "32", "--epochs", "1"]
    argv += ["--augment", "mask+ngram", "--n-iter", "2", "--seed", "3", "--threads", "1", "--device", "cpu"]
    argv += ["--batch-size", "32", "--student-option", "embedding_dim=16", "--student-option", "hidden_size=8"]
    argv += ["--student-option", "classifier_hidden=16", "--label-engine", "local", "--label-workers", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    inline, local = _cached(tmp_path / "inline" / "cache"), _cached(tmp_path / "local" / "cache")
    assert len(inline) == 1 and inline.keys() == local.keys()  # one transfer set, one key whichever engine
    key = next(iter(inline))
    assert inline[key].shape[0] > 200 and np.array_equal(inline[key], local[key])  # identical, not close
    info = json.loads((tmp_path / "local" / "cache" / key / "info.json").read_text())
    assert info["label_engine"] == "local"


def test_checkpoint_teacher_with_its_bundle_labels_on_the_local_engine(tmp_path: Path, setup: dict[str, Path]) -> None:
    """--teacher-bundle gives a checkpoint teacher a bundle to label with: accepted, and labelled by it."""
    config = _config(
        tmp_path, str(setup["checkpoint"]), setup["data"], teacher_bundle=str(setup["bundle"]), label_engine="local"
    )
    texts = [text for text, _ in sentiment_texts(40, seed=9)]
    from kdserve.core.bundle import BundleModel

    logits = teacher_logits(config.teacher_bundle, texts, 32, None, batch_size=8, engine="local", workers=2)
    assert np.array_equal(logits, BundleModel(setup["bundle"]).predict(texts, batch_size=8))


@pytest.mark.parametrize(
    ("teachers", "overrides", "message"),
    [
        (
            ["checkpoint"],
            {"label_engine": "local"},
            r"--label-engine local labels with an exported bundle and teacher .*checkpoint is a checkpoint: "
            r"add --teacher-bundle BUNDLE \(from `kdserve export`\), or use --label-engine inline",
        ),
        (
            ["bundle", "checkpoint"],
            {"label_engine": "ray"},
            r"teacher .*checkpoint is a checkpoint: give its exported bundle as the --teacher",
        ),
        (["bundle"], {"label_engine": "local", "label_workers": -1}, "label_workers must be an integer >= 0"),
        (["bundle"], {"label_engine": "cluster"}, "label_engine must be one of inline, local, ray"),
    ],
)
def test_config_errors(
    tmp_path: Path, setup: dict[str, Path], teachers: list[str], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, [str(setup[t]) for t in teachers], setup["data"], **overrides)


def test_ray_missing_names_the_extra(tmp_path: Path, setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"^--label-engine ray needs Ray: pip install 'kdserve\[scale\]'$"):
        _config(tmp_path, str(setup["bundle"]), setup["data"], label_engine="ray")
    _config(tmp_path, str(setup["bundle"]), setup["data"], label_engine="local")  # local needs no Ray


def test_a_checkpoint_never_reaches_a_bundle_engine(setup: dict[str, Path]) -> None:
    """teacher_logits refuses too (a caller that skipped the config), before any cache or model is read."""
    with pytest.raises(ConfigError, match="is a checkpoint: add --teacher-bundle"):
        teacher_logits(setup["checkpoint"], ["a text"], 32, None, engine="local")
    with pytest.raises(ConfigError, match="label engine must be one of"):
        teacher_logits(setup["bundle"], ["a text"], 32, None, engine="cluster")


def test_cli_bad_engine_combination_is_one_line_and_writes_nothing(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student"
    argv = ["distill", "--student", "bilstm", "--teacher", str(setup["checkpoint"]), "--data", str(setup["data"])]
    argv += ["--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--label-engine", "local"]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    # a ConfigError: exit 2, as every other bad distill flag combination
    assert code == 2 and "\n" not in err
    assert err.startswith("kdserve: error: --label-engine local labels with an exported bundle and teacher ")
    assert not out.exists() and not (tmp_path / "cache").exists()
    with pytest.raises(SystemExit):
        main([*argv[:-1], "cluster"])  # not a choice: argparse's own usage error
    assert "invalid choice: 'cluster'" in capsys.readouterr().err


def test_importing_train_loads_neither_bulk_nor_ray() -> None:
    """The train -> bulk arrow is taken only when a bundle engine labels."""
    code = (
        "import sys, kdserve.train.distill, kdserve.train.transfer, kdserve.train.multi_teacher\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kdserve.bulk', 'ray'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow  # a local Ray instance takes about a minute to start on a loaded 2-core machine
def test_ray_engine_gives_the_inline_logits_under_the_same_key(tmp_path: Path, setup: dict[str, Path]) -> None:
    pytest.importorskip("ray.data")
    from kdserve.core.bundle import BundleModel

    bundle = setup["bundle"]
    texts = [text for text, _ in sentiment_texts(150, seed=4)] + ["", "the film was wonderful but the plot was dull ."]
    logits = teacher_logits(bundle, texts, 32, tmp_path / "cache", batch_size=16, engine="ray", workers=2)
    assert np.array_equal(logits, BundleModel(bundle).predict(texts, batch_size=16))  # identical, not close
    assert list(_cached(tmp_path / "cache")) == [cache_key(bundle, texts, 32)]
