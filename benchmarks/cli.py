"""``kdserve bench model|http|compare|footprint|ab|report``: registered on the main parser; a
stage is imported only when it runs.

Every command writes ``result.json`` (raw numbers with machine information), ``report.md`` and
its PNG plots into ``--output`` (default ``benchmarks/results/<command>-<UTC time>``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from kdserve.core.defaults import DEFAULT_DATA as DEFAULT_SHORT
from kdserve.core.options import add_options, build_from_args

DEFAULT_LONG = "package:imdb"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _output(args: argparse.Namespace, kind: str) -> Path:
    if args.output:
        return Path(args.output)
    return Path("benchmarks") / "results" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _finish(result: dict[str, Any], args: argparse.Namespace, kind: str) -> int:
    from kdserve.bench.common import write_json
    from kdserve.bench.report import write_report

    folder = _output(args, kind)
    path = write_json(folder / "result.json", result)
    written = write_report(result, folder, with_plots=not args.no_plots)
    print(f"wrote {path} and {', '.join(str(p) for p in written)}")
    return 0


def _sweep_config(args: argparse.Namespace, rates: bool = True) -> Any:
    from kdserve.bench.common import parse_float_list, parse_int_list
    from kdserve.bench.http_bench import SweepConfig

    open_loop = rates and args.rates != "none"
    return SweepConfig(
        concurrency=parse_int_list(args.concurrency, "--concurrency") if args.concurrency != "none" else [],
        rates=parse_float_list(args.rates, "--rates") if open_loop and args.rates else [],
        rate_fractions=parse_float_list(args.rate_fractions, "--rate-fractions")
        if open_loop and args.rate_fractions
        else [],
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        timeout_s=args.timeout,
        drain_s=args.drain,
        generator=args.generator,
        wrk_threads=args.wrk_threads,
    )


def _model(args: argparse.Namespace) -> int:
    from kdserve.bench.model_bench import ModelBenchConfig, run_model_bench

    return _finish(run_model_bench(build_from_args(ModelBenchConfig, args), _log), args, "model")


def _http(args: argparse.Namespace) -> int:
    if args.target == "trivial":
        # The generator against the trivial server: its ceiling on this machine, as a full sweep.
        from kdserve.bench.servers import start_server

        with start_server("trivial", start_timeout_s=30) as server:
            args.target, args.label = server.url, args.label or "trivial server"
            return _http_run(args)
    return _http_run(args)


def _http_run(args: argparse.Namespace) -> int:
    from kdserve.bench.common import sample_texts
    from kdserve.bench.http_bench import check_target, render_bodies, run_http_bench
    from kdserve.bench.loadgen import Target

    target = Target.parse(args.target, args.path)
    sweep_config = _sweep_config(args)  # bad flags are reported before anything is sent
    check_target(target, render_bodies(["kdserve bench probe"], args.body_template)[0], args.timeout)  # fail fast
    texts = sample_texts(args.data, args.texts, args.seed)
    result = run_http_bench(
        target,
        texts,
        sweep_config,
        args.body_template,
        args.label or "",
        ceiling=not args.no_ceiling,
        log=_log,
        batch_size=args.batch_size,
    )
    if result.get("note"):
        _log(f"note: {result['note']}")
    return _finish(result, args, "http")


def _compare(args: argparse.Namespace) -> int:
    from kdserve.bench.common import parse_int_list
    from kdserve.bench.compare import CompareConfig, run_compare

    folder = _output(args, "compare")
    config = CompareConfig(
        bundles_root=args.bundles,
        models=[m for m in (args.models or "").split(",") if m],
        server=args.server,
        server_args=shlex.split(args.server_args or ""),
        short_data=args.short_data,
        long_data=args.long_data,
        http_data=args.http_data,
        texts=args.texts,
        seed=args.seed,
        latency_iterations=args.latency_iterations,
        latency_seconds=args.latency_seconds,
        threads=args.threads,
        teacher_batch_sizes=parse_int_list(args.teacher_batch_sizes, "--teacher-batch-sizes"),
        sweep=_sweep_config(args, rates=False),
        common_rate=args.common_rate,
        baselines=[b for b in (args.baselines or "").split(",") if b],
        baseline_model=args.baseline_model,
        baseline_rounds=args.baseline_rounds,
        batch_size=args.batch_size,
        ceiling=not args.no_ceiling,
        start_timeout_s=args.start_timeout,
        log_dir=str(folder / "logs"),
    )
    args.output = str(folder)
    return _finish(run_compare(config, _log), args, "compare")


def _footprint(args: argparse.Namespace) -> int:
    from kdserve.bench.footprint import FootprintConfig, run_footprint

    folder = _output(args, "footprint")
    config = dataclasses.replace(build_from_args(FootprintConfig, args), log_dir=str(folder / "logs"))
    args.output = str(folder)
    return _finish(run_footprint(config, _log), args, "footprint")


def _ab(args: argparse.Namespace) -> int:
    from kdserve.bench.ab import ABConfig, run_ab

    return _finish(run_ab(build_from_args(ABConfig, args), _log), args, "ab")


def _explain(args: argparse.Namespace) -> int:
    from kdserve.bench.explain_bench import ExplainBenchConfig, run_explain_bench

    return _finish(run_explain_bench(build_from_args(ExplainBenchConfig, args), _log), args, "explain")


def _report(args: argparse.Namespace) -> int:
    from kdserve.bench.common import read_json
    from kdserve.bench.report import write_report

    result = read_json(args.result)
    written = write_report(result, args.output or Path(args.result).parent, with_plots=not args.no_plots)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _common(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """--output and --no-plots; --seed too, unless the command's config declares it."""
    parser.add_argument(
        "--output", help="folder for result.json, report.md and plots (default benchmarks/results/<command>-<UTC time>)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the text sample (default 0)")


def _load_flags(parser: argparse.ArgumentParser, duration: float, rates: bool = True) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="closed-loop levels, or 'none'")
    if rates:
        group.add_argument(
            "--rates", help="open-loop arrival rates (req/s), or 'none'; default: --rate-fractions of the best"
        )
        group.add_argument(
            "--rate-fractions",
            default="0.25,0.5,0.75,0.9",
            help="open-loop rates as fractions of the best closed-loop throughput",
        )
    group.add_argument(
        "--duration", type=float, default=duration, help=f"measured seconds per run (default {duration:g})"
    )
    group.add_argument("--warmup", type=float, default=1.0, help="discarded seconds before each run (default 1)")
    group.add_argument("--connections", type=int, default=64, help="open-loop connection pool (default 64)")
    group.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds (default 10)")
    group.add_argument("--drain", type=float, default=5.0, help="open loop: seconds to finish late sends (default 5)")
    group.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the generator against the trivial server"
    )
    group.add_argument(
        "--generator",
        default="builtin",
        choices=["builtin", "wrk"],
        help="client of the closed-loop levels: the built-in asyncio generator or the system's wrk "
        "(apt-get install wrk); open-loop runs are always built-in (default builtin)",
    )
    group.add_argument("--wrk-threads", type=int, default=1, help="wrk threads, -t (default 1)")
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help='texts per request: more than 1 sends {"texts": [...]} bodies and reports texts/s (default 1)',
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # benchmarks/configs.py imports the standard library and core only: the flags come from its fields.
    from kdserve.bench.configs import ABConfig, ExplainBenchConfig, FootprintConfig, ModelBenchConfig

    bench = sub.add_parser(
        "bench",
        help="latency and throughput: model, http, compare, footprint, ab, explain, report",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    what = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")

    model = what.add_parser("model", help="in-process latency/throughput per bundle (ONNX Runtime, torch reference)")
    add_options(model, ModelBenchConfig)
    _common(model, seed=False)
    model.set_defaults(func=_model)

    http = what.add_parser("http", help="load a running server: closed-loop and open-loop sweeps")
    http.add_argument(
        "--target",
        required=True,
        help="base URL, e.g. http://127.0.0.1:8000, or 'trivial' to start and load the trivial server "
        "(the generator's own ceiling)",
    )
    http.add_argument("--path", default="/classify")
    http.add_argument(
        "--body-template",
        default='{"text": {text}}',
        help='JSON body; {text} becomes each text as a JSON string (default {"text": {text}})',
    )
    http.add_argument("--data", default=DEFAULT_SHORT, help=f"dataset spec of the texts (default {DEFAULT_SHORT})")
    http.add_argument("--texts", type=int, default=1000, help="texts sampled (default 1000)")
    http.add_argument("--label", help="name of the target in the report")
    _load_flags(http, duration=5.0)
    _common(http)
    http.set_defaults(func=_http)

    compare = what.add_parser("compare", help="teacher vs students (and vs baselines): the headline table")
    compare.add_argument("--bundles", required=True, help="folder of bundles (as for kdserve serve)")
    compare.add_argument("--models", help="comma-separated bundle names (default: all)")
    compare.add_argument(
        "--server",
        default="kdserve",
        choices=["kdserve", "naive", "litserve"],
        help="what serves each bundle for the headline table (default kdserve)",
    )
    compare.add_argument("--server-args", help='extra kdserve serve flags, quoted, e.g. "--max-wait-ms 0"')
    compare.add_argument("--short-data", default=DEFAULT_SHORT)
    compare.add_argument("--long-data", default=DEFAULT_LONG)
    compare.add_argument("--http-data", help="texts for the HTTP load (default: --short-data)")
    compare.add_argument("--texts", type=int, default=512)
    compare.add_argument("--latency-iterations", type=int, default=200)
    compare.add_argument("--latency-seconds", type=float, default=10.0)
    compare.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads in process")
    compare.add_argument(
        "--teacher-batch-sizes",
        default="1,8,32",
        help="in-process batch sizes whose best throughput each teacher's HTTP figure is compared with",
    )
    compare.add_argument(
        "--common-rate", type=float, help="req/s for the p99 column (default: half the teacher's best)"
    )
    compare.add_argument("--baselines", help="also serve one bundle with naive,litserve,hf and compare")
    compare.add_argument("--baseline-model", help="the bundle the baselines serve (default: the teacher)")
    compare.add_argument(
        "--baseline-rounds",
        type=int,
        default=1,
        help="sweep kdserve and each baseline this many times, in turn, and compare medians",
    )
    compare.add_argument("--start-timeout", type=float, default=180.0, help="seconds a server may take to be ready")
    _load_flags(compare, duration=5.0, rates=False)
    _common(compare)
    compare.set_defaults(func=_compare)

    footprint = what.add_parser(
        "footprint", help="one server holding several bundles: time to ready and resident memory"
    )
    add_options(footprint, FootprintConfig)
    _common(footprint, seed=False)
    footprint.set_defaults(func=_footprint)

    ab = what.add_parser("ab", help="replay a labelled dataset through a running server's A/B, shadow or cascade route")
    add_options(ab, ABConfig)
    _common(ab, seed=False)
    ab.set_defaults(func=_ab)

    explain = what.add_parser(
        "explain", help="explanations against a running server: the deletion test and the cost of one"
    )
    add_options(explain, ExplainBenchConfig)
    _common(explain, seed=False)
    explain.set_defaults(func=_explain)

    report = what.add_parser("report", help="re-render report.md and plots from a result.json")
    report.add_argument("result", help="a result.json written by kdserve bench")
    report.add_argument("--output", help="folder (default: the result's folder)")
    report.add_argument("--no-plots", action="store_true")
    report.set_defaults(func=_report)
