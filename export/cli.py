"""``kdserve export`` and ``kdserve bundle verify``: registered on the main parser; the stage
(torch, Optimum, ONNX Runtime) is imported only when a command runs."""

from __future__ import annotations

import argparse
import sys
import time

from kdserve.core.errors import KdserveError

VERIFY_TEXT = "kdserve bundle verify: a short test sentence."


def _export(args: argparse.Namespace) -> int:
    from kdserve.core.data import DatasetSpec
    from kdserve.export.config import ExportConfig
    from kdserve.export.pipeline import export_checkpoint

    data = None
    if args.data is not None:
        data = DatasetSpec(
            source=args.data,
            validation=args.validation_data,
            text_column=args.text_column,
            label_column=args.label_column,
            validation_fraction=args.validation_fraction,
            seed=args.data_seed,
            problem_type=args.problem_type,
            label_columns=args.label_columns,
            columns=args.columns,
        )
    config = ExportConfig.from_preset(
        args.preset,
        checkpoint=args.checkpoint,
        output_dir=args.output,
        name=args.name,
        format=args.format,
        quantization=args.quantize,
        quant_preset=args.quant_preset,
        quantize_ops=tuple(args.quantize_ops.split(",")) if args.quantize_ops else None,
        calibration_examples=args.calibration_examples,
        calibration_method=args.calibration_method,
        max_length=args.max_length,
        opset=args.opset,
        optimization=args.optimize,
        exporter=args.exporter,
        data=data,
        parity_texts=args.parity_texts,
        parity_tolerance=args.parity_tolerance,
        max_accuracy_drop=args.max_accuracy_drop,
        max_eval_examples=args.max_eval_examples,
        batch_size=args.batch_size,
        force=args.force,
        overwrite=args.overwrite,
        triton_max_batch_size=args.triton_max_batch_size,
        calibrate=args.calibrate,
        policy=args.policy,
        benign_labels=tuple(args.benign_labels.split(",")) if args.benign_labels else None,
        baseline_bundle=args.baseline_bundle,
        max_negative_flips=args.max_negative_flips,
        max_class_f1_drop=args.max_class_f1_drop,
        log_texts=args.log_texts or None,
    )
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


def _data_spec(args: argparse.Namespace) -> object:
    from kdserve.core.data import DatasetSpec

    return DatasetSpec(
        source=args.data,
        validation=args.validation_data,
        text_column=args.text_column,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        seed=args.data_seed,
    )


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
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True, help="dataset spec: package:NAME, a folder, a file or hub:NAME")
    group.add_argument("--validation-data", help="a separate validation file, when --data is a single file")
    group.add_argument("--text-column")
    group.add_argument("--label-column")
    group.add_argument("--validation-fraction", type=float, default=0.1)
    group.add_argument("--data-seed", type=int, default=13)
    parser.set_defaults(func=_compare)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "export",
        help="export a teacher or student checkpoint to ONNX bundles (fp32 + int8), checked",
        description="Checkpoint -> <name>-fp32/ and <name>-int8/ bundles under --output: ONNX export, parity with "
        "PyTorch on validation texts, int8 quantization, and an accuracy gate on the validation split.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="teacher (kdserve train teacher) or student (kdserve distill) folder"
    )
    parser.add_argument("--output", required=True, help="folder that receives the bundles")
    parser.add_argument("--name", help="bundle name prefix (default: the checkpoint folder's name)")
    parser.add_argument(
        "--format",
        choices=["bundle", "triton"],
        default="bundle",
        help="bundle (kdserve serve) or triton (a Triton/KServe model repository)",
    )
    parser.add_argument("--preset", choices=["quick", "full"], help="quick: checks on <= 1000 validation examples")
    parser.add_argument(
        "--quantize",
        choices=["auto", "dynamic", "static", "none"],
        default="auto",
        help="int8 mode of the second bundle: auto (the default) tries dynamic, then static when the "
        "accuracy gate refuses dynamic; none writes fp32 only",
    )
    parser.add_argument(
        "--quant-preset",
        choices=["auto", "avx512_vnni", "avx2", "arm64"],
        default="auto",
        help="CPU the int8 model is tuned for (default: detect this machine's)",
    )
    parser.add_argument(
        "--quantize-ops",
        help="comma-separated op types to quantize (default MatMul,Attention,LSTM,Gather,EmbedLayerNormalization)",
    )
    parser.add_argument("--calibration-examples", type=int, help="training texts for static calibration (default 256)")
    parser.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"])
    parser.add_argument(
        "--max-length", type=int, help="truncation length (default: the one the checkpoint trained with)"
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    parser.add_argument(
        "--optimize", choices=["none", "O1", "O2"], help="teacher graph fusions by ORTOptimizer (default O2)"
    )
    parser.add_argument(
        "--exporter",
        choices=["auto", "torchscript", "dynamo"],
        help="student exporter: auto (default) builds the BiLSTM as one bidirectional LSTM op and "
        "exports other students with torch.onnx's torchscript exporter",
    )
    parser.add_argument("--parity-texts", type=int, help="validation texts for the PyTorch-vs-ONNX check (default 64)")
    parser.add_argument("--parity-tolerance", type=float, help="max |logit difference| allowed (default 1e-4)")
    parser.add_argument(
        "--max-accuracy-drop", type=float, help="accuracy points int8 may lose against fp32 (default 1.0)"
    )
    parser.add_argument("--max-eval-examples", type=int, help="cap on validation examples scored")
    parser.add_argument("--batch-size", type=int, help="evaluation batch size (default 64)")
    parser.add_argument("--triton-max-batch-size", type=int, help="max_batch_size in config.pbtxt (default 64)")
    parser.add_argument(
        "--force", action="store_true", help="keep the int8 bundle even when it fails the accuracy gate"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing bundle folders")
    parser.add_argument(
        "--calibrate",
        choices=["temperature", "none"],
        help="score calibration fitted on half the validation rows, ECE/Brier reported on the other half "
        "(default temperature)",
    )
    parser.add_argument(
        "--policy", help="default thresholds per label: precision=P, recall=R or f1 (default: no policy)"
    )
    parser.add_argument("--benign-labels", help="comma-separated labels that never flag (default: neither,NOT,neutral)")
    compat = parser.add_argument_group("compatibility with the production bundle")
    compat.add_argument(
        "--baseline-bundle",
        metavar="PROD",
        help="compare each new bundle with this production bundle on the validation split; a bundle "
        "the gate refuses is not published (the report goes to <output>/<name>-compat-refused.json)",
    )
    _gate_args(compat)
    group = parser.add_argument_group("data (default: the data the checkpoint was trained on)")
    group.add_argument("--data", help="dataset spec for the checks: package:NAME, a folder, a file or hub:NAME")
    group.add_argument("--validation-data", help="a separate validation file, when --data is a single file")
    group.add_argument("--text-column")
    group.add_argument("--label-column")
    group.add_argument("--validation-fraction", type=float, default=0.1)
    group.add_argument("--data-seed", type=int, default=13)
    group.add_argument("--problem-type", choices=["single_label", "multi_label"], default="single_label")
    group.add_argument("--label-columns", help="multi-label: comma-separated 0/1, probability or *_votes columns")
    group.add_argument("--columns", help="column names of a headerless file, comma-separated")
    parser.set_defaults(func=_export)

    _register_compare(sub)

    bundle = sub.add_parser("bundle", help="inspect exported bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="WHAT")
    verify = bundle_sub.add_parser("verify", help="check every file's sha256 and run one inference")
    verify.add_argument("bundles", nargs="+", metavar="DIR", help="bundle folders")
    verify.set_defaults(func=_verify)
