"""``kdserve export`` and ``kdserve bundle verify``: registered on the main parser; the stage
(torch, Optimum, ONNX Runtime) is imported only when a command runs."""

from __future__ import annotations

import argparse
import sys
import time

from kdserve.core.errors import KdserveError
from kdserve.core.options import add_options, option_values

VERIFY_TEXT = "kdserve bundle verify: a short test sentence."


def _export(args: argparse.Namespace) -> int:
    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint

    config = ExportConfig.from_preset(**option_values(ExportConfig, args))
    for folder in export_checkpoint(config):
        _print_written(folder, config.format)
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _print_written(folder: object, fmt: str) -> None:
    from pathlib import Path

    from kdserve.core.bundle import read_manifest
    from kdserve.export.checks import refused_attempts

    path = Path(str(folder))
    if fmt == "triton":
        print(f"wrote Triton model {path} (config.pbtxt, 1/model.onnx, labels.txt, tokenizer.json)")
        return
    m = read_manifest(path)
    own = m.metrics.get(m.precision, {})
    size = _size(m.files.get("model.onnx", {}).get("size", 0))
    notes = []
    if "parity" in m.extra:
        notes.append(f"parity max |diff| {m.extra['parity']['max_abs_diff']:.1e}")
    gate = m.extra.get("accuracy_gate", {})
    if m.precision != "fp32" and gate:
        change = -gate["drop_points"] + 0.0  # + 0.0 turns -0.0 into 0.0
        notes.append(f"{change:+.2f} points vs fp32" + (" (forced)" if gate.get("forced") else ""))
        notes += [
            f"{a['precision']} refused at {-a['drop_points'] + 0.0:+.2f} points" for a in refused_attempts(m.extra)
        ]
    print(
        f"wrote {path}: {m.model_kind} {m.precision}, {size}, validation accuracy "
        f"{own.get('accuracy', 0) * 100:.2f}% on {own.get('examples')} examples"
        + (f", {', '.join(notes)}" if notes else "")
    )


def _verify(args: argparse.Namespace) -> int:
    """Every bundle gets one line; a failure does not stop the others, but makes the exit code 1."""
    import numpy as np

    from kdserve.core.bundle import BundleModel, verify_bundle

    failed = 0
    for folder in args.bundles:
        try:
            manifest = verify_bundle(folder)
            model = BundleModel(folder, verify=False)
            start = time.perf_counter()
            try:
                logits = model.run(model.encode([VERIFY_TEXT]))
            except Exception as exc:  # ONNX Runtime's own error types
                raise KdserveError(f"{folder}: inference failed ({str(exc).strip().splitlines()[0]})") from None
            ms = (time.perf_counter() - start) * 1000
            if logits.shape != (1, len(manifest.labels)) or not np.isfinite(logits).all():
                raise KdserveError(
                    f"{folder}: inference gave logits of shape {logits.shape} (finite: "
                    f"{bool(np.isfinite(logits).all())}), expected (1, {len(manifest.labels)})"
                )
            size = _size(sum(int(e.get("size", 0)) for e in manifest.files.values()))
            print(
                f"ok {folder}: {manifest.name} ({manifest.model_kind}, {manifest.precision}), "
                f"manifest + {len(manifest.files)} files ({size}) checked, model sha256 {manifest.checksum[:12]}, "
                f"one inference -> {model.labels[int(logits[0].argmax())]} in {ms:.1f} ms"
            )
        except KdserveError as exc:
            failed += 1
            print(f"kdserve: error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # standard library and core only: the flags come from the config's fields
    from kdserve.export.config import ExportConfig

    parser = sub.add_parser(
        "export",
        help="export a teacher or student checkpoint to ONNX bundles (fp32 + int8), checked",
        description="Checkpoint -> <name>-fp32/ and <name>-int8/ bundles under --output: ONNX export, parity with "
        "PyTorch on validation texts, int8 quantization, and an accuracy gate on the validation split.",
    )
    add_options(parser, ExportConfig)
    parser.set_defaults(func=_export)

    bundle = sub.add_parser("bundle", help="inspect exported bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="WHAT")
    verify = bundle_sub.add_parser("verify", help="check every file's sha256 and run one inference")
    verify.add_argument("bundles", nargs="+", metavar="DIR", help="bundle folders")
    verify.set_defaults(func=_verify)
