"""Settings: environment variables, generated flags (flags win), validation, the CLI."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdserve.core.errors import ConfigError
from kdserve.serve.config import Settings, add_flags, load_settings, settings_from_args


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDSERVE_BUNDLES", str(tmp_path))
    monkeypatch.setenv("KDSERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("KDSERVE_MODELS", "a, b")
    monkeypatch.setenv("KDSERVE_LOG_TEXTS", "true")
    monkeypatch.setenv("KDSERVE_WARMUP_LENGTHS", "4,12")
    s = load_settings()
    assert s.bundles == tmp_path and s.max_batch_size == 7 and s.models == ["a", "b"]
    assert s.log_texts is True and s.warmup_lengths == [4, 12]
    assert s.max_wait_ms == 2.0 and s.cors_origins == [] and s.admin_token is None


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDSERVE_BUNDLES", "/from/env")
    monkeypatch.setenv("KDSERVE_MAX_WAIT_MS", "9")
    monkeypatch.setenv("KDSERVE_LOG_TEXTS", "true")
    s = parse(
        "--bundles",
        str(tmp_path),
        "--max-wait-ms",
        "0",
        "--no-log-texts",
        "--cors-origins",
        "http://a.example,http://b.example",
        "--device",
        "cuda",
        "--intra-op-spinning",
    )
    assert s.bundles == tmp_path and s.max_wait_ms == 0.0 and s.log_texts is False and s.intra_op_spinning is True
    assert s.cors_origins == ["http://a.example", "http://b.example"] and s.device == "cuda"
    # a flag not given leaves the env value
    assert parse().max_wait_ms == 9.0


def test_every_field_is_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    dests = {a.dest for a in parser._actions} - {"help"}
    assert dests == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "bundles: required (give --bundles or KDSERVE_BUNDLES)"),
        ({"bundles": "x", "max_batch_size": 0}, "max_batch_size: Input should be greater than or equal to 1"),
        ({"bundles": "x", "device": "tpu"}, "device: Input should be 'cpu' or 'cuda'"),
        ({"bundles": "x", "model_workers": 65}, "model_workers: Input should be less than or equal to 64"),
        ({"bundles": "x", "warmup_batch_sizes": "1,0"}, "warmup_batch_sizes: every value must be >= 1"),
        ({"bundles": "x", "max_texts_per_request": 50, "max_queue_texts": 10}, "could never be queued"),
        ({"bundles": "x", "no_such_setting": 1}, "no_such_setting: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_one_line_config_errors(
    kw: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KDSERVE_BUNDLES", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_settings(**kw)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_empty_admin_token_means_no_admin(tmp_path: Path) -> None:
    assert load_settings(bundles=tmp_path, admin_token="  ").admin_token is None
    assert load_settings(bundles=tmp_path, admin_token="t").admin_token.get_secret_value() == "t"  # type: ignore[union-attr]


def test_cli_refuses_a_corrupted_bundle_naming_the_file(tiny_bundles: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    shutil.copytree(tiny_bundles / "tiny-textcnn", root / "tiny-textcnn")
    shutil.copytree(tiny_bundles / "tiny-bilstm", root / "tiny-bilstm")
    tokenizer = root / "tiny-bilstm" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("great", "grate"))
    proc = subprocess.run(
        [sys.executable, "-m", "kdserve", "serve", "--bundles", str(root), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"kdserve: error: {tokenizer}: sha256 does not match the manifest (corrupted or modified)"
    )
    assert "Traceback" not in proc.stderr


def test_cli_bad_setting_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdserve", "serve", "--bundles", str(tmp_path), "--max-batch-size", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kdserve: error: invalid server settings: max_batch_size: Input should be greater than or equal to 1"
    ]


def test_cli_exits_nonzero_when_a_verified_bundle_cannot_load(tiny_bundles: Path, tmp_path: Path) -> None:
    """Checksums match, but ONNX Runtime cannot open the model: the server stops, exit 1, one line."""
    from kdserve.core.bundle import read_manifest, write_manifest

    folder = tmp_path / "bundles" / "tiny-textcnn"
    shutil.copytree(tiny_bundles / "tiny-textcnn", folder)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    write_manifest(folder, read_manifest(folder))  # re-hash: a consistent but broken bundle
    proc = subprocess.run(
        [sys.executable, "-m", "kdserve", "serve", "--bundles", str(folder.parent), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kdserve: error: start-up failed: {folder / 'model.onnx'}: ONNX Runtime cannot load it")
