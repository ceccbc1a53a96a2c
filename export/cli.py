"""``kdserve export`` and ``kdserve bundle verify``: registered on the main parser; the stage
(torch, Optimum, ONNX Runtime) is imported only when a command runs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

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
        notes += [_refusal(a) for a in refused_attempts(m.extra)]
    print(
        f"wrote {path}: {m.model_kind} {m.precision}, {size}, validation accuracy "
        f"{own.get('accuracy', 0) * 100:.2f}% on {own.get('examples')} examples"
        + (f", {', '.join(notes)}" if notes else "")
    )


def _refusal(attempt: dict[str, Any]) -> str:
    """One refused int8 attempt: the ranking loss when that was the refusal, else the accuracy change."""
    if attempt.get("auc_drop_points", 0.0) > attempt.get("max_auc_drop_points", float("inf")):
        return (
            f"{attempt['precision']} refused: lost {attempt['auc_drop_points']:.2f} ROC-AUC points "
            f"on {attempt['auc_drop_label']!r}"
        )
    return f"{attempt['precision']} refused at {-attempt['drop_points'] + 0.0:+.2f} points"


def _data_spec(args: argparse.Namespace) -> object:
    from kdserve.core.data import DatasetSpec
    from kdserve.core.options import build_from_args

    return build_from_args(DatasetSpec, args)


def _compare(args: argparse.Namespace) -> int:
    """Report always (stdout, and --output as JSON); exit 1 when the gate refuses NEW, so CI can stop a swap."""
    import json
    from pathlib import Path

    from kdserve.export.compat import GateThresholds, apply_gate, compare_bundles, format_report
    from kdserve.export.config import DEFAULT_MAX_CLASS_F1_DROP, DEFAULT_MAX_NEGATIVE_FLIPS

    thresholds = GateThresholds(
        DEFAULT_MAX_NEGATIVE_FLIPS if args.max_negative_flips is None else args.max_negative_flips,
        DEFAULT_MAX_CLASS_F1_DROP if args.max_class_f1_drop is None else args.max_class_f1_drop,
    )
    report = compare_bundles(
        args.new,
        args.baseline,
        _data_spec(args),
        args.split,
        args.log_texts,
        args.worst,
        args.batch_size,
        args.max_examples,
    )
    failures = apply_gate(report, thresholds)
    if args.output:
        target = Path(args.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(target)
    print(format_report(report))
    if failures:
        print(f"kdserve: error: {args.new} refused against {args.baseline}: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


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


def _gate_args(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--max-negative-flips",
        type=float,
        metavar="POINTS",
        help="percent of rows the baseline gets right that the new bundle may get wrong (default 5.0)",
    )
    group.add_argument(
        "--max-class-f1-drop",
        type=float,
        metavar="POINTS",
        help="F1 points any one class may lose against the baseline (default 2.0)",
    )
    group.add_argument(
        "--log-texts",
        action="store_true",
        help="write the worst negative flips' texts into the report (default: their sha256 only)",
    )


def _register_compare(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "compare-bundles",
        help="what will NEW get wrong that the production bundle gets right? agreement, flips, per-class F1",
        description="Score NEW and PROD on one labelled split: agreement, negative flips (PROD right, NEW wrong), "
        "positive flips, per-class F1 change and the worst negative flips; exit 1 when the gate refuses NEW.",
    )
    parser.add_argument("new", metavar="NEW", help="the candidate bundle folder")
    parser.add_argument("baseline", metavar="PROD", help="the production bundle folder")
    parser.add_argument("--output", help="also write the full report as JSON here")
    parser.add_argument("--split", choices=["train", "validation", "test"], default="validation")
    parser.add_argument("--worst", type=int, default=20, help="worst negative flips listed (default 20)")
    parser.add_argument("--max-examples", type=int, help="score only the first N rows of the split")
    parser.add_argument("--batch-size", type=int, default=64)
    _gate_args(parser)
    from kdserve.core.data import DatasetSpec

    add_options(parser, DatasetSpec, title="data", overrides={"source": {"cli_default": None, "required": True}})
    parser.set_defaults(func=_compare)


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

    _register_compare(sub)

    bundle = sub.add_parser("bundle", help="inspect exported bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="WHAT")
    verify = bundle_sub.add_parser("verify", help="check every file's sha256 and run one inference")
    verify.add_argument("bundles", nargs="+", metavar="DIR", help="bundle folders")
    verify.set_defaults(func=_verify)
