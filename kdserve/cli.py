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
from kdserve.core.defaults import DEFAULT_DATA
from kdserve.core.errors import KdserveError


def _add_data_args(parser: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default=default,
        required=default is None,
        help="dataset spec: package:rotten_tomatoes|imdb|sms_spam, a GLUE-style folder (train.tsv, dev.tsv), "
        "a .csv/.tsv/.jsonl file, or hub:NAME[/CONFIG] (needs internet)"
        + (f" (default: {default})" if default else ""),
    )
    group.add_argument("--validation-data", help="a separate validation file, when --data is a single file")
    group.add_argument("--text-column", help="text column (default: text, sentence, review or content)")
    group.add_argument("--label-column", help="label column (default: label, labels or class)")
    group.add_argument("--validation-fraction", type=float, default=0.1, help="held out when there is no split")
    group.add_argument("--data-seed", type=int, default=13, help="seed of that split")


def _data_spec(args: argparse.Namespace) -> Any:
    from kdserve.core.data import DatasetSpec

    return DatasetSpec(
        source=args.data,
        validation=args.validation_data,
        text_column=args.text_column,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        seed=args.data_seed,
    )


def _train_teacher(args: argparse.Namespace) -> int:
    from kdserve.train.teacher import TeacherConfig, train_teacher

    config = TeacherConfig.from_preset(
        args.preset,
        data=_data_spec(args),
        output_dir=args.output,
        model=args.model,
        epochs=args.epochs,
        lr=args.lr,
        max_length=args.max_length,
        max_train_examples=args.max_train_examples,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        metric_for_best=args.metric_for_best,
        freeze_word_embeddings=args.freeze_word_embeddings,
        evals_per_epoch=args.evals_per_epoch,
        threads=args.threads,
    )
    result = train_teacher(config)
    val = result["validation"]
    print(
        f"teacher saved to {args.output}: best at epoch {result['best_at']:.2f}, validation accuracy "
        f"{val['accuracy'] * 100:.2f}%, macro-F1 {val['macro_f1'] * 100:.2f}% "
        f"({result['wall_seconds']:.0f} s wall)"
    )
    return 0


def _student_options(pairs: list[str] | None) -> dict[str, Any] | None:
    import json

    from kdserve.core.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--student-option wants KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options or None


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def _distill(args: argparse.Namespace) -> int:
    from kdserve.train.distill import DistillConfig, distill

    config = DistillConfig.from_preset(
        args.preset,
        args.student,
        teacher=args.teacher,
        data=_data_spec(args),
        output_dir=args.output,
        no_teacher=args.no_teacher or None,
        epochs=args.epochs,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        metric_for_best=args.metric_for_best,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_train_examples=args.max_train_examples,
        alpha=args.alpha,
        soft=args.soft,
        temperature=args.temperature,
        augment=args.augment,
        n_iter=args.n_iter,
        glove=args.glove,
        teacher_embeddings=args.teacher_embeddings or None,
        vector_vocab=args.vector_vocab,
        static_channel=args.static_channel or None,
        student_layers=args.student_layers,
        student_options=_student_options(args.student_option),
        intermediate_weight=args.intermediate_weight,
        cache_dir=args.cache_dir,
        teacher_bundle=args.teacher_bundle,
        teacher_weights=args.teacher_weights,
        teacher_combine=args.teacher_combine,
        transfer_data=args.transfer_data,
        seed=args.seed,
        augment_seed=args.augment_seed,
        ema_decay=args.ema_decay,
        device=args.device,
        evals_per_epoch=args.evals_per_epoch,
        threads=args.threads,
    )
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

        bundle_result = evaluate_bundle(args.bundle, _data_spec(args), args.split, args.batch_size)
        print(report(bundle_result, args.output))
        return 0
    result = evaluate_checkpoint(
        args.checkpoint, _data_spec(args), args.split, args.batch_size, args.max_length, args.device
    )
    print(report(result, args.output))
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from kdserve.pipeline import run_pipeline

    run_pipeline(args.preset, _data_spec(args), args.output)
    return 0


_EVALS_PER_EPOCH_HELP = (
    "validation passes per epoch, evenly spaced, the last at its end; the best pass's weights are kept (default 1)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdserve", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"kdserve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="fine-tune a teacher")
    train_sub = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    teacher = train_sub.add_parser("teacher", help="fine-tune a BERT-family teacher classifier")
    teacher.add_argument("--preset", choices=["quick", "full"], default="quick")
    teacher.add_argument("--model", default=None, help="local folder or hub id (default: embedded all-MiniLM-L6-v2)")
    teacher.add_argument("--output", required=True, help="checkpoint folder to write")
    teacher.add_argument("--epochs", type=int)
    teacher.add_argument("--lr", type=float)
    teacher.add_argument("--max-length", type=int)
    teacher.add_argument("--max-train-examples", type=int)
    teacher.add_argument("--batch-size", type=int)
    teacher.add_argument("--seed", type=int)
    teacher.add_argument("--device", help="auto (default), cpu or cuda")
    teacher.add_argument("--threads", type=int, help="torch intra-op threads (default: all cores)")
    teacher.add_argument("--metric-for-best", choices=["accuracy", "macro_f1"])
    teacher.add_argument("--evals-per-epoch", type=int, metavar="N", help=_EVALS_PER_EPOCH_HELP)
    teacher.add_argument(
        "--freeze-word-embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip updating the word-embedding matrix (the presets do; faster on CPU)",
    )
    _add_data_args(teacher)
    teacher.set_defaults(func=_train_teacher)

    ev = sub.add_parser("eval", help="accuracy, macro-F1, per-class scores and confusion matrix")
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="a checkpoint folder (teacher or student)")
    target.add_argument("--bundle", help="an exported bundle folder")
    ev.add_argument("--split", choices=["train", "validation", "test"], default="validation")
    ev.add_argument("--output", help="also write the metrics as JSON here")
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--max-length", type=int, default=128)
    ev.add_argument("--device", default="auto")
    _add_data_args(ev)
    ev.set_defaults(func=_eval)

    dist = sub.add_parser("distill", help="distil a teacher into a BiLSTM, Transformer or TextCNN student")
    dist.add_argument("--student", choices=["bilstm", "transformer", "textcnn"], required=True)
    dist.add_argument(
        "--teacher",
        action="append",
        help="teacher checkpoint folder (from `kdserve train teacher`) or bundle; repeat it to distil from "
        "several, e.g. the new teacher and the production bundle (the first seeds a Transformer student)",
    )
    dist.add_argument(
        "--teacher-weights",
        type=_floats,
        metavar="W1,W2",
        help="one weight per --teacher, e.g. 0.7,0.3 (normalised; default equal)",
    )
    dist.add_argument(
        "--teacher-combine",
        choices=["prob", "logit"],
        help="several teachers: average probabilities (default; use --soft kl) or logits",
    )
    dist.add_argument(
        "--transfer-data",
        action="append",
        metavar="FILE",
        help="unlabelled texts for the transfer set, labelled by the teacher(s): the shadow log (JSONL, "
        "written with --log-texts) or a .txt/.csv/.jsonl of texts; deduplicated; repeatable",
    )
    dist.add_argument("--no-teacher", action="store_true", help="hard labels only: the no-distillation baseline")
    dist.add_argument("--preset", choices=["quick", "full"], default="quick")
    dist.add_argument("--output", required=True, help="student checkpoint folder to write")
    dist.add_argument("--epochs", type=int)
    dist.add_argument("--lr", type=float)
    dist.add_argument("--batch-size", type=int)
    dist.add_argument("--max-length", type=int)
    dist.add_argument("--max-train-examples", type=int)
    dist.add_argument(
        "--metric-for-best",
        choices=["accuracy", "macro_f1"],
        help="validation metric that picks the saved epoch (macro_f1 for imbalanced classes)",
    )
    dist.add_argument("--evals-per-epoch", type=int, metavar="N", help=_EVALS_PER_EPOCH_HELP)
    dist.add_argument(
        "--lr-schedule", choices=["constant", "linear"], help="learning rate: constant, or linear decay to 0"
    )
    dist.add_argument("--alpha", help="constant:A | easy-to-hard | linear:START:END:EPOCHS (weight of the hard loss)")
    dist.add_argument("--soft", choices=["mse", "kl", "ce"], help="soft loss: logit MSE or KL / CE at --temperature")
    dist.add_argument("--temperature", type=float)
    dist.add_argument("--augment", choices=["none", "mask", "mask+ngram", "all"], help="transfer-set augmentation")
    dist.add_argument("--n-iter", type=int, help="augmented copies per example")
    dist.add_argument("--glove", action=argparse.BooleanOptionalAction, default=None, help="GloVe-50d word vectors")
    dist.add_argument(
        "--teacher-embeddings",
        action="store_true",
        help="BiLSTM/TextCNN: word vectors from the teacher's input embeddings (384-d for MiniLM) instead of GloVe",
    )
    dist.add_argument(
        "--vector-vocab",
        type=int,
        metavar="N",
        help="BiLSTM/TextCNN: add GloVe's N most frequent words the training texts lack to the "
        "vocabulary, so words unseen in training keep a pretrained vector (default 0)",
    )
    dist.add_argument(
        "--static-channel",
        action="store_true",
        help="BiLSTM/TextCNN: the word vectors twice, one copy tuned and one held fixed (Kim 2014's "
        "multichannel input), so words added by --vector-vocab stay comparable to the tuned ones",
    )
    dist.add_argument("--student-layers", type=int, help="transformer student layers (1-4)")
    dist.add_argument(
        "--student-option",
        action="append",
        metavar="KEY=VALUE",
        help="override a field of the student's config, e.g. hidden_size=150 or num_filters=200 "
        "(repeatable; VALUE is read as JSON, else as a string)",
    )
    dist.add_argument("--intermediate-weight", type=float, help="weight of hidden-state/attention losses")
    dist.add_argument("--cache-dir", help="teacher-logit cache (default runs/cache)")
    dist.add_argument(
        "--teacher-bundle",
        help="label the transfer set with this exported teacher bundle (ONNX "
        "Runtime, faster on a CPU) instead of the PyTorch checkpoint",
    )
    dist.add_argument("--seed", type=int)
    dist.add_argument(
        "--augment-seed",
        type=int,
        metavar="N",
        help="seed of the augmentation alone (default: --seed); fix it to vary --seed on the same, "
        "already-labelled transfer set",
    )
    dist.add_argument(
        "--ema-decay",
        type=float,
        metavar="D",
        help="evaluate and save a moving average of the weights (e.g. 0.9995; default 0: off)",
    )
    dist.add_argument("--device")
    dist.add_argument("--threads", type=int)
    _add_data_args(dist)
    dist.set_defaults(func=_distill)

    pipe = sub.add_parser("pipeline", help="the whole job on one dataset: teacher, students, bundles")
    pipe.add_argument("--preset", choices=["quick", "full"], default="quick")
    pipe.add_argument("--output", default="runs/pipeline", help="folder for every stage's output")
    _add_data_args(pipe)
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
