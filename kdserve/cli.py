"""The ``kdserve`` command: one entry point per pipeline stage.

Argument parsing imports nothing heavy; each stage is imported only when it runs, so
``kdserve serve --help`` works in a serve-only install without torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from kdserve import __version__
from kdserve.core.errors import ConfigError, KdserveError
from kdserve.core.options import add_options, build_from_args, option_values


def _data_spec(args: argparse.Namespace) -> Any:
    from kdserve.core.data import DatasetSpec

    return build_from_args(DatasetSpec, args)


def _train_teacher(args: argparse.Namespace) -> int:
    from kdserve.train.teacher import TeacherConfig, train_teacher

    config = TeacherConfig.from_preset(**option_values(TeacherConfig, args))
    result = train_teacher(config)
    val = result["validation"]
    print(
        f"teacher saved to {args.output}: best at epoch {result['best_at']:.2f}, validation accuracy "
        f"{val['accuracy'] * 100:.2f}%, macro-F1 {val['macro_f1'] * 100:.2f}% "
        f"({result['wall_seconds']:.0f} s wall)"
    )
    return 0


def _distill(args: argparse.Namespace) -> int:
    from kdserve.train.distill import DistillConfig, distill

    config = DistillConfig.from_preset(**option_values(DistillConfig, args))
    result = distill(config)
    val = result["validation"]
    print(
        f"{args.student} student saved to {args.output}: best at epoch {result['best_at']:.2f}, validation accuracy "
        f"{val['accuracy'] * 100:.2f}%, macro-F1 {val['macro_f1'] * 100:.2f}%, {result['parameters']:,} parameters "
        f"({result['wall_seconds']:.0f} s wall)"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from kdserve.train.evaluate import evaluate_checkpoint, report

    if args.bundle:
        from kdserve.export.evaluate import evaluate_bundle

        bundle_result = evaluate_bundle(args.bundle, _data_spec(args), args.split, args.batch_size, args.threshold)
        print(report(bundle_result, args.output))
        return 0
    if args.threshold == "policy":
        raise ConfigError("--threshold policy reads a bundle's default policy: use it with --bundle")
    result = evaluate_checkpoint(
        args.checkpoint, _data_spec(args), args.split, args.batch_size, args.max_length, args.device, args.threshold
    )
    print(report(result, args.output))
    return 0


def _threshold(text: str) -> float | str:
    """--threshold: a number in (0, 1) or the word "policy"."""
    if text == "policy":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or 'policy', got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or 'policy', got {text!r}")
    return value


def _pipeline(args: argparse.Namespace) -> int:
    from kdserve.pipeline import run_pipeline

    run_pipeline(args.preset, _data_spec(args), args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # The config classes import only the standard library and core (no torch), so every command's
    # flags are generated from them here; each stage's heavy imports happen when it runs.
    from kdserve.core.data import DatasetSpec
    from kdserve.train.distill import DistillConfig
    from kdserve.train.teacher import TeacherConfig

    parser = argparse.ArgumentParser(prog="kdserve", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"kdserve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="fine-tune a teacher")
    train_sub = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    teacher = train_sub.add_parser("teacher", help="fine-tune a BERT-family teacher classifier")
    add_options(teacher, TeacherConfig)
    teacher.set_defaults(func=_train_teacher)

    ev = sub.add_parser(
        "eval", help="accuracy, macro-F1, per-class scores and confusion matrix; moderation metrics (ROC-AUC, AP, ECE)"
    )
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="a checkpoint folder (teacher or student)")
    target.add_argument("--bundle", help="an exported bundle folder")
    ev.add_argument("--split", choices=["train", "validation", "test"], default="validation")
    ev.add_argument("--output", help="also write the metrics as JSON here")
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--max-length", type=int, default=128)
    ev.add_argument("--device", default="auto")
    ev.add_argument(
        "--threshold",
        type=_threshold,
        default=0.5,
        help="multi-label: the score threshold of F1 and exact match, one number for every category, or "
        "'policy' (a bundle's default-policy thresholds) (default 0.5)",
    )
    add_options(ev, DatasetSpec, title="data")
    ev.set_defaults(func=_eval)

    dist = sub.add_parser("distill", help="distil a teacher into a BiLSTM, Transformer or TextCNN student")
    add_options(dist, DistillConfig)
    dist.set_defaults(func=_distill)

    pipe = sub.add_parser("pipeline", help="the whole job on one dataset: teacher, students, bundles")
    pipe.add_argument("--preset", choices=["quick", "full"], default="quick")
    pipe.add_argument("--output", default="runs/pipeline", help="folder for every stage's output")
    add_options(pipe, DatasetSpec, title="data")
    pipe.set_defaults(func=_pipeline)

    # Later stages register their own subcommands; each register() imports only the standard
    # library, so parsing stays cheap and `kdserve serve --help` needs no torch.
    from kdserve.bench.cli import register as register_bench
    from kdserve.export.cli import register as register_export
    from kdserve.serve.cli import register as register_serve

    register_export(sub)
    register_serve(sub)
    register_bench(sub)
    __import__("kdserve.bulk.cli", fromlist=["register"]).register(sub)  # kdserve classify
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except KdserveError as exc:
        print(f"kdserve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kdserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
