"""The configs of ``kdserve bench model``, ``footprint`` and ``ab``: their option() fields are the
commands' flags (kdserve.core.options).

Kept apart from the harness modules, which import asyncio, subprocess and the HTTP client, so
that building the ``kdserve`` parser (every command, ``kdserve serve`` included) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdserve.bench.common import parse_int_list, parse_shell_words
from kdserve.core.defaults import DEFAULT_DATA as DEFAULT_SHORT
from kdserve.core.errors import ConfigError
from kdserve.core.options import option

DEFAULT_LONG = "package:imdb"


@dataclass
class ModelBenchConfig:
    """``threads`` is ONNX Runtime's intra-op thread count (0: its default, one per core)."""

    # option() fields are the `kdserve bench model` flags (kdserve.core.options)
    bundles: list[str] = option(positional=True, help="bundle folders (fp32 and int8 are separate bundles)")
    batch_sizes: list[int] = option(default_factory=lambda: [1, 8, 32, 128], parse=parse_int_list)
    short_data: str | None = option(
        DEFAULT_SHORT, none_word="none", help="spec of short texts, or 'none' (default {default})"
    )
    long_data: str | None = option(
        DEFAULT_LONG, none_word="none", help="spec of long texts, or 'none' (default {default})"
    )
    texts: int = option(512, help="texts sampled per set (default {default})")
    seed: int = option(0, help="seed of the text sample (default {default})")
    warmup: int = option(5, help="untimed iterations per cell (default {default})")
    iterations: int = option(100, help="timed iterations per cell (default {default})")
    max_seconds: float = option(10.0, help="time budget per cell (default {default})")
    threads: int = option(0, help="ONNX Runtime intra-op threads (0: one per core)")
    torch_reference: bool = option(True, flag="--no-torch", negate=True, help="skip the PyTorch eager reference")

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("give at least one bundle folder")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.short_data is None and self.long_data is None:
            raise ConfigError("need short or long texts (or both)")
        if self.texts < 1 or self.warmup < 0 or self.iterations < 1 or not self.max_seconds > 0 or self.threads < 0:
            raise ConfigError("texts and iterations must be >= 1, warm-up and threads >= 0, max_seconds > 0")


@dataclass
class FootprintConfig:
    # option() fields are the `kdserve bench footprint` flags (kdserve.core.options)
    bundles_root: str = option(flag="--bundles", help="folder of bundles (as for kdserve serve)")
    # empty: every bundle under bundles_root
    models: list[str] = option(default_factory=list, help="comma-separated bundle names (default: all)")
    data: str = option(DEFAULT_SHORT, help="dataset spec of the request texts")
    requests: int = option(500, help="single-text requests sent to each model (default {default})")
    texts: int = option(200)
    seed: int = option(0, help="seed of the text sample (default {default})")
    server_args: list[str] = option(
        default_factory=list, parse=parse_shell_words, help="extra kdserve serve flags, quoted"
    )
    start_timeout_s: float = option(180.0, flag="--start-timeout", help="seconds the server may take to be ready")
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.requests < 0 or self.texts < 1:
            raise ConfigError(f"requests must be >= 0 and texts >= 1, got {self.requests} and {self.texts}")
        if not self.start_timeout_s > 0:
            raise ConfigError(f"start timeout must be > 0, got {self.start_timeout_s}")


@dataclass
class ABConfig:
    # option() fields are the `kdserve bench ab` flags (kdserve.core.options)
    target: str = option(help="base URL of a running kdserve")
    data: str = option("package:rotten_tomatoes")
    split: str = option("validation", choices=("train", "validation", "test"))
    limit: int | None = option(1000, none_word="0", help="examples replayed, 0 for all (default {default})")
    seed: int = option(0, help="seed of the text sample (default {default})")
    label_names: list[str] | None = option(
        None, help="dataset label names in id order, when the files hold ids (e.g. negative,positive)"
    )
    route: str | None = option(None, help='route to request as "model" (default: the server\'s default route)')
    key_prefix: str = option("user-", help="routing_key of example i is PREFIX + i")
    concurrency: int = option(4)
    timeout_s: float = option(30.0, flag="--timeout")
    agreement: bool = option(
        True, flag="--no-agreement", negate=True, help="skip asking every model about every example"
    )
    # request fields sent with every text, so one replay measures a reading of long posts or a
    # named moderation policy (kdserve.serve.schemas.ClassifyRequest documents them)
    long_text: str | None = option(
        None,
        choices=("truncate", "head_tail", "chunk"),
        help="long_text sent with each text (default: the server's setting)",
    )
    policy: str | None = option(None, help="named moderation policy sent with each text (default: the model's)")

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ConfigError(f"--split must be train, validation or test, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.concurrency < 1 or not self.timeout_s > 0:
            raise ConfigError("--concurrency must be >= 1 and --timeout > 0")


@dataclass
class ExplainBenchConfig:
    # option() fields are the `kdserve bench explain` flags (kdserve.core.options)
    target: str = option(help="base URL of a running kdserve")
    data: str = option(help="labelled texts to flag, explain and cut (a dataset source)")
    split: str = option("validation", choices=("train", "validation", "test"))
    limit: int | None = option(1000, none_word="0", help="texts classified for the deletion test, 0 for all")
    seed: int = option(0, help="seed of the text sample and of the random deletions (default {default})")
    model: str | None = option(None, help='model or route requested as "model" (default: the server\'s default)')
    policy: str | None = option(None, help="named moderation policy (default: the model's)")
    k: int = option(3, help="words deleted from each flagged text (default {default})")
    random_draws: int = option(3, help="random deletions of k words per text (default {default})")
    deletion: bool = option(True, flag="--no-deletion", negate=True, help="skip the deletion test")
    cost_words: int = option(64, help="words in each text the cost is measured on (default {default})")
    cost_requests: int = option(200, help="requests with and without explain, each; 0 skips the cost")
    concurrency: int = option(4, help="requests in flight during the deletion test (default {default})")
    timeout_s: float = option(30.0, flag="--timeout")

    def __post_init__(self) -> None:
        if self.k < 1 or self.random_draws < 1 or self.cost_words < 1 or self.cost_requests < 0:
            raise ConfigError("--k, --random-draws and --cost-words must be >= 1, --cost-requests >= 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.concurrency < 1 or not self.timeout_s > 0:
            raise ConfigError("--concurrency must be >= 1 and --timeout > 0")
