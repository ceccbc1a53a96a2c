"""Every server setting, in one pydantic-settings class: a ``KDSERVE_*`` environment variable
or a ``kdserve serve`` flag each. The flags are generated from the fields (``add_flags``), so a
new setting is a flag at once and the two cannot drift; flags override the environment.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kdserve.core.errors import ConfigError

ENV_PREFIX = "KDSERVE_"


def _split_commas(value: Any) -> Any:
    # "a,b" from an env var or a flag; a real list (from Python) passes through
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaStrs = Annotated[list[str], NoDecode]
CommaInts = Annotated[list[int], NoDecode]


class Settings(BaseSettings):
    """Server settings. Limits are explicit so that memory stays bounded under any load:
    queued texts per model <= ``max_queue_texts``, each <= ``max_text_chars`` characters."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    bundles: Path = Field(description="folder of bundles (each subfolder with a manifest.json)")
    models: CommaStrs = Field(
        default_factory=list, description="comma-separated subset of bundle (folder) names to load; none = all"
    )
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="server log level")

    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="cuda needs onnxruntime-gpu and a GPU; falls back to cpu with a log line"
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="ONNX Runtime intra-op threads per model (0 = auto: 1 for a "
        "BiLSTM on the CPU, whose LSTM runs step by step, with model_workers running its "
        "batches side by side instead; else ONNX Runtime's default of one per core)",
    )
    intra_op_spinning: bool = Field(
        False,
        description="let idle ONNX Runtime intra-op threads busy-wait for the next op: lower latency for a "
        "lone request, but on a machine where the event loop shares the cores they take CPU it needs (2 cores, "
        "int8 BiLSTM: about 15% less throughput at 32 connections with spinning, 0.3 ms less p50 at 1)",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level"
    )
    warmup_batch_sizes: CommaInts = Field(
        default_factory=lambda: [1, 8], description="batch sizes run at start-up before ready"
    )
    warmup_lengths: CommaInts = Field(
        default_factory=lambda: [16, 64], description="token lengths run at start-up (capped at each model's max)"
    )

    max_batch_size: int = Field(32, ge=1, le=4096, description="texts per inference batch")
    max_batch_tokens: int = Field(8192, ge=1, description="padded tokens per batch (batch size x longest text)")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long a batch waits to fill (0 = never waits)")
    adaptive_wait: bool = Field(
        True,
        description="a request alone in the queue runs at once when traffic is sparse or no company "
        "arrived during the previous batch, instead of waiting for a batch (false: always wait max_wait_ms)",
    )
    inline_lone: bool = Field(
        True,
        description="with adaptive_wait, a single-text request that is the only one in progress (one busy "
        "connection) runs on the event loop's thread when its model is idle: no hand-off to the batch worker",
    )
    max_queue_texts: int = Field(1024, ge=1, description="texts waiting per model before 429")
    model_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="batches one model runs at once: worker threads sharing its "
        "queue and session, like Triton's model instances (0 = auto: one per core, at most 4, for "
        "a BiLSTM on one intra-op thread; else 1)",
    )
    request_timeout_s: float = Field(10.0, gt=0, le=3600, description="per-request deadline before 503")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After seconds on 429 and 503")
    max_text_chars: int = Field(20000, ge=1, description="characters per text (422 above)")
    max_texts_per_request: int = Field(256, ge=1, description="texts per request (422 above)")
    max_body_bytes: int = Field(1 << 20, ge=64, description="request body bytes, checked before parsing (413 above)")
    max_inflight_requests: int = Field(
        512,
        ge=1,
        description="HTTP requests handled at once (503 above; health, "
        "readiness and metrics exempt): bounds memory at this x max_body_bytes",
    )
    max_buffered_body_bytes: int = Field(
        256 << 20,
        ge=64,
        description="request body bytes being read, all requests together, before they are admitted (503 "
        "above): reading a body holds no in-flight slot, so this bounds the memory of slow uploads",
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="a request body must arrive within this many seconds plus its size over "
        "body_min_rate_bytes_s (408 otherwise): a stalled or dribbled upload is cut, a slow large one is not",
    )
    body_min_rate_bytes_s: int = Field(
        1024, ge=1, description="the slowest body upload accepted past body_timeout_s, in bytes per second"
    )
    # 4096, not 1024: a client pool of 1,024 connections plus a few probes must not push the server
    # into evicting connections that are about to carry a request (the 3x overload test does this)
    max_connections: int = Field(
        4096,
        ge=1,
        description="open client connections; past it the longest-idle connection is closed to make room, "
        "or the newcomer gets 503 when none is idle (kdserve serve raises the file descriptor limit to fit it)",
    )
    idle_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="how long a connection may stay open without a request: before its first one, and "
        "between keep-alive requests",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="how long a request's line and headers may take to arrive (408 after)"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line plus headers, counted before buffering (431 above)"
    )
    max_header_count: int = Field(100, ge=8, description="headers per request (431 above)")
    max_url_bytes: int = Field(8 * 1024, ge=256, description="request target (path and query) bytes (414 above)")

    admin_token: SecretStr | None = Field(
        None,
        description="bearer token for /admin/*; admin routes are 404 without one "
        "(prefer the env var: flags show in ps)",
    )
    routing_file: Path | None = Field(None, description="routing config (JSON or YAML); default routes otherwise")
    shadow_log: Path | None = Field(None, description="JSONL file for shadow disagreements")
    shadow_max_inflight: int = Field(8, ge=0, description="shadow calls running at once (more are skipped)")
    log_texts: bool = Field(False, description="write request texts to logs and the shadow log (off: only hashes)")
    cors_origins: CommaStrs = Field(
        default_factory=list, description="comma-separated CORS origins (default: CORS off)"
    )
    graceful_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long in-flight requests may take to finish"
    )
    ui: bool = Field(
        True,
        description="the comparison page at /ui/ (static files; it calls only the public routes, "
        "so it grants nothing curl could not do); off: /ui is 404",
    )
    otel: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans and metrics (for a deployment with an OTEL "
        "provider configured); off, FastAPI skips its per-request telemetry check",
    )

    # -- long posts and explanations (issue 19): kdserve.core.windows, kdserve.core.explain
    long_text: Literal["truncate", "head_tail", "chunk"] = Field(
        "truncate",
        description="how a text over a model's token limit is read when the request does not say: truncate "
        "(its first max_length tokens), head_tail (its start and its end), chunk (overlapping windows "
        "covering all of it, run in one batch and aggregated)",
    )
    chunk_overlap: float = Field(
        0.25,
        ge=0,
        le=0.75,
        description="long_text chunk: the fraction of a window's text tokens it shares with the previous window",
    )
    chunk_aggregation: Literal["mean", "max"] = Field(
        "mean",
        description="long_text chunk, single-label models: a text's probabilities are the mean of its windows' "
        "or each label's max over them, renormalised (multi-label categories always take the max)",
    )
    max_windows_per_text: int = Field(
        32, ge=1, le=4096, description="long_text chunk: windows one text may need (413 above)"
    )
    max_explain_tokens: int = Field(
        128,
        ge=1,
        le=4096,
        description="explain: words occluded per text, each one more row in the text's one batch (a longer "
        "text is explained for its first words and says complete=false)",
    )
    max_explain_texts: int = Field(16, ge=1, le=4096, description="explain: texts per request (422 above)")

    # ---- moderation API (issue #19): policies, API key
    policy_file: Path | None = Field(
        None,
        description="moderation policy file (JSON or YAML): per model and named policy, category thresholds and "
        "benign labels over the manifests' default policy; replaceable live with PUT /admin/policies",
    )
    api_key: SecretStr | None = Field(
        None,
        description="bearer API key required on every route but /health, /ready, /metrics, the V2 health probes, "
        "the API docs and /admin (own token); off when unset (prefer the env var: flags show in ps)",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_api_key_is_none(cls, value: Any) -> Any:
        # KDSERVE_API_KEY= (set but empty) must not turn auth on with an empty key that anyone can send
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", "cors_origins", "warmup_batch_sizes", "warmup_lengths", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("warmup_batch_sizes", "warmup_lengths")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"every value must be >= 1, got {value}")
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: Any) -> Any:
        # KDSERVE_ADMIN_TOKEN= (set but empty) must not enable admin with an empty password
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_url_bytes > self.max_header_bytes:
            raise ValueError(
                f"max_url_bytes ({self.max_url_bytes}) exceeds max_header_bytes ({self.max_header_bytes}), "
                f"which counts the request line too"
            )
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_body_bytes ({self.max_buffered_body_bytes}) is below max_body_bytes "
                f"({self.max_body_bytes}): a body of the largest size could never be read"
            )
        if self.max_texts_per_request > self.max_queue_texts:
            raise ValueError(
                f"max_texts_per_request ({self.max_texts_per_request}) exceeds max_queue_texts "
                f"({self.max_queue_texts}): such a request could never be queued"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, ``overrides`` winning; a bad value is a one-line ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                flag = "--" + name.replace("_", "-")
                message = f"required (give {flag} or {ENV_PREFIX}{name.upper()})"
            problems.append(f"{name}: {message}")
        raise ConfigError("invalid server settings: " + "; ".join(problems)) from None


# ------------------------------------------------------------------ flags generated from the fields


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """(base type, extra argparse kwargs) for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0])
    if origin is Annotated:
        return _flag_type(typing.get_args(annotation)[0])
    if origin is Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if origin is list:
        return str, {"metavar": "A,B"}
    if annotation is bool:
        return bool, {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float):
        return annotation, {"type": annotation}
    return str, {}  # str, Path, SecretStr: validated by Settings


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per Settings field. Defaults are suppressed so that only the flags given
    reach ``Settings``, where they beat the environment; the default shown is the field's."""
    for name, info in Settings.model_fields.items():
        _, kwargs = _flag_type(info.annotation)
        default = info.get_default(call_default_factory=True)
        shown = "required" if info.is_required() else f"default: {_show(default)}"
        help_text = f"{info.description} ({shown}; env {ENV_PREFIX}{name.upper()})"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%"),
            **kwargs,
        )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment with the flags given in ``args`` on top."""
    given = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return load_settings(**given)
