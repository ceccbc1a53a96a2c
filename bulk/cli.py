"""``kdserve classify``: registered on the main parser; the stage is imported only when it runs."""

from __future__ import annotations

import argparse


def _classify(args: argparse.Namespace) -> int:
    import importlib.util

    from kdserve.core.errors import ConfigError

    missing = [m for m in ("pyarrow", "onnxruntime", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"kdserve classify needs {', '.join(missing)}: pip install 'kdserve[scale]'")
    from kdserve.bulk.job import ClassifyJob, run_job

    job = ClassifyJob(
        bundle=args.bundle,
        inputs=args.input,
        output=args.output,
        text_column=args.text_column,
        id_column=args.id_column,
        output_format=args.format,
        engine=args.engine,
        workers=args.workers,
        threads=args.threads,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        progress=False if args.quiet else None,
    )
    s = run_job(job)
    rate = f"{s['texts_per_s']:,.0f} texts/s" if s["texts_per_s"] else "nothing left to classify"
    print(
        f"classified {s['classified_now']:,} texts ({s['skipped_committed']:,} already committed; "
        f"{s['rows']:,} rows in {s['shards']} shards) with {s['engine']} engine, "
        f"{s['workers']} workers x {s['threads_per_worker']} threads: "
        f"{rate}, {s['wall_seconds']:.1f} s wall; peak RSS parent {s['parent_max_rss_mib']:.0f} MiB, worker "
        f"{s['worker_max_rss_mib'] or 0:.0f} MiB; output {args.output} ({args.format})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "classify",
        help="bulk-classify files with a bundle (backfills): resumable, all local cores or a Ray cluster",
        description="Classify every row of CSV, TSV, JSONL or Parquet inputs into Parquet (or JSONL) shards. "
        "Each shard is committed atomically; rerunning the same command after a crash finishes the rest, "
        "so the output holds every input row exactly once.",
    )
    parser.add_argument("--bundle", required=True, help="bundle folder (verified before use, and on every worker)")
    parser.add_argument(
        "--input", required=True, nargs="+", help="input files, folders or globs (.csv, .tsv, .jsonl, .parquet)"
    )
    parser.add_argument("--output", required=True, help="output folder: new, empty, or this job's own to resume it")
    parser.add_argument("--text-column", help="text column (default: text, sentence, review or content)")
    parser.add_argument("--id-column", help="id column copied to the output (default: the row position in its file)")
    parser.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="output format")
    parser.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="local processes, or Ray Data (RAY_ADDRESS)"
    )
    parser.add_argument("--workers", type=int, default=0, help="worker processes / Ray actors (default: one a core)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads a worker (default: cores/workers)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts a model call, after sorting by length")
    parser.add_argument("--shard-rows", type=int, default=10_000, help="rows an output shard (the unit of resume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it is off anyway when not a terminal)")
    parser.set_defaults(func=_classify)
