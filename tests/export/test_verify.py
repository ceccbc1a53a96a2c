"""`kdserve bundle verify`: every file is checksummed, and a one-byte change anywhere names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdserve.cli import main
from kdserve.core.bundle import (
    BundleError,
    BundleModel,
    read_manifest,
    verify_bundle,
    write_manifest,
)
from tests.export.conftest import copy_bundle

FILES = ("model.onnx", "tokenizer.json", "labels.json", "README.md", "manifest.json")


def _flip(path: Path, position: float) -> None:
    data = bytearray(path.read_bytes())
    index = min(int(len(data) * position), len(data) - 1)
    data[index] ^= 0x01  # one bit of one byte: the size stays the same
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("position", [0.0, 0.37, 0.5, 0.93, 1.0])
def test_one_changed_byte_in_any_file_is_named(
    name: str, position: float, bundles: dict[str, list[Path]], tmp_path: Path
) -> None:
    bundle = copy_bundle(bundles["teacher"][1], tmp_path)
    _flip(bundle / name, position)
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle)
    assert str(bundle / name) in str(info.value)


def test_manifest_edits_that_stay_valid_json_are_caught(bundles: dict[str, list[Path]], tmp_path: Path) -> None:
    """max_length 32 -> 64 would silently change what the model reads; the manifest's own checksum refuses it."""
    bundle = copy_bundle(bundles["bilstm"][0], tmp_path)
    path = bundle / "manifest.json"
    path.write_text(path.read_text().replace('"max_length": 32', '"max_length": 64'))
    with pytest.raises(BundleError, match="manifest.json: sha256 does not match its manifest_sha256"):
        verify_bundle(bundle)
    # Rewriting through write_manifest re-hashes it: a deliberate edit is still possible.
    write_manifest(bundle, read_manifest(bundle))
    assert verify_bundle(bundle).max_length == 64


def test_manifests_without_a_self_checksum_still_verify(bundles: dict[str, list[Path]], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["bilstm"][0], tmp_path)
    data = json.loads((bundle / "manifest.json").read_text())
    del data["manifest_sha256"]  # as written before the field existed
    (bundle / "manifest.json").write_text(json.dumps(data, indent=2))
    assert verify_bundle(bundle).manifest_sha256 == ""


def test_missing_file_is_named(bundles: dict[str, list[Path]], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["textcnn"][1], tmp_path)
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json: listed in the manifest but missing"):
        verify_bundle(bundle)


def test_cli_verify_prints_one_line_per_bundle(
    bundles: dict[str, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    folders = [str(p) for paths in bundles.values() for p in paths]
    assert main(["bundle", "verify", *folders]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(folders)
    for line, folder in zip(out, folders):
        manifest = read_manifest(folder)
        assert line.startswith(
            f"ok {folder}: {manifest.name} ({manifest.model_kind}, {manifest.precision}), manifest + 4 files ("
        )
        assert f"model sha256 {manifest.checksum[:12]}" in line and "one inference -> " in line


def test_cli_verify_names_the_bad_file_keeps_going_and_exits_1(
    bundles: dict[str, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = copy_bundle(bundles["transformer"][1], tmp_path)
    _flip(bad / "model.onnx", 0.5)
    good = bundles["transformer"][0]
    code = main(["bundle", "verify", str(bad), str(good), str(tmp_path / "nowhere")])
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert errors == [
        f"kdserve: error: {bad / 'model.onnx'}: sha256 does not match the manifest (corrupted or modified)",
        f"kdserve: error: bundle folder not found: {tmp_path / 'nowhere'}",
    ]
    assert captured.out.startswith(f"ok {good}: ")


def test_a_verified_bundle_loads_and_predicts(bundles: dict[str, list[Path]]) -> None:
    model = BundleModel(bundles["teacher"][0])
    logits = model.predict(["the movie was great .", "the plot was awful ."])
    assert [model.labels[i] for i in logits.argmax(-1)] == ["positive", "negative"]
