"""`kdserve serve`: registered on the main parser; the server is imported only when it runs.

The flags come from ``kdserve.serve.config.Settings`` (one per field). Importing pydantic to build them
would slow every ``kdserve`` command, so they are added on the first parse that reaches the
``serve`` subparser: ``kdserve serve --help`` lists them all, ``kdserve train ...`` never pays.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from typing import Any

from kdserve.core.errors import ConfigError, KdserveError

log = logging.getLogger("kdserve.serve")


class ServeError(KdserveError):
    """The server could not start or stopped on an error."""


def _serve(args: argparse.Namespace) -> int:
    if getattr(args, "_serve_flags_missing", None):
        raise ServeError(args._serve_flags_missing)
    import uvicorn

    from kdserve.serve.app import create_app
    from kdserve.serve.config import settings_from_args
    from kdserve.serve.service import Service

    settings = settings_from_args(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    # Verifies every checksum and the routing file before a port is bound: a corrupted bundle is
    # one line naming the file and a non-zero exit, not a server that never gets ready.
    service = Service(settings)
    failures: list[str] = []
    server: uvicorn.Server | None = None

    def on_startup_failure(reason: str) -> None:
        failures.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, service, on_startup_failure)
    raise_fd_limit(settings.max_connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        lifespan="on",
        http=_http_protocol(app),
        ws="none",
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        # between keep-alive requests; before the first one the edge protocol applies the same limit
        timeout_keep_alive=settings.idle_timeout_s,  # type: ignore[arg-type]
    )  # type: ignore[arg-type]
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogRedactor) for f in access.filters):
        access.addFilter(AccessLogRedactor())
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the previous
    # handler; with the default one that would kill us with status 143 after a clean drain.
    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: terms.append(sig))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        raise ServeError(
            f"could not serve on {settings.host}:{settings.port} (exit {exc.code}; see the log above)"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failures:
        raise ServeError(f"start-up failed: {failures[0]}")
    cancelled = app.state.edge.closed.get("cancelled", 0)
    if terms and cancelled:
        log.info(
            "server stopped on SIGTERM; %d request(s) (stalled uploads included) were still running after "
            "graceful_timeout_s and were cancelled",
            cancelled,
        )
    else:
        log.info("server stopped%s", " on SIGTERM after draining in-flight requests" if terms else "")
    return 0


class AccessLogRedactor(logging.Filter):
    """uvicorn's access line without the query string (it may carry a token pasted into a URL) and
    with the path cut to ``MAX_LOGGED_PATH`` characters (a 60 KB path must not fill the log)."""

    MAX_LOGGED_PATH = 256

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2], self.MAX_LOGGED_PATH), *args[3:])
        return True


def redact_target(target: str, limit: int = 256) -> str:
    path, query = target.split("?", 1) if "?" in target else (target, None)
    if len(path) > limit:
        path = f"{path[:limit]}...({len(path)} chars)"
    return path if query is None else f"{path}?<query redacted>"


#: file descriptors kept beyond max_connections: the listening socket, bundles, logs, ORT threads
FD_RESERVE = 64


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one so max_connections sockets fit; a hard limit
    too low for them is a ConfigError rather than accept() failing silently under a flood."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigError(
            f"max_connections ({max_connections}) needs {needed} file descriptors but the limit is {soft} "
            f"(ulimit -n); lower max_connections or raise the limit"
        )


def _http_protocol(app: Any = None) -> Any:
    """The edge protocol (``kdserve.serve.http_protocol``: connection limits and timeouts, one socket
    write per response) bound to ``app``'s settings and edge state. Without httptools uvicorn falls
    back to h11, and the header limits and timeouts are h11's own (logged)."""
    try:
        from kdserve.serve.http_protocol import CoalescingHttpToolsProtocol, edge_protocol
    except ImportError:  # no httptools: uvicorn falls back to h11
        log.warning("httptools is not installed: the connection limits of kdserve serve are not enforced")
        return "auto"
    if app is None:
        return CoalescingHttpToolsProtocol
    from kdserve.serve.edge import EdgeLimits

    return edge_protocol(EdgeLimits.from_settings(app.state.settings), app.state.edge)


def _add_flags_lazily(parser: argparse.ArgumentParser) -> None:
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        if not getattr(parser, "_kdserve_flags_added", False):
            parser._kdserve_flags_added = True  # type: ignore[attr-defined]
            try:
                from kdserve.serve.config import add_flags
            except ImportError as exc:  # a train-only install
                parser.set_defaults(
                    _serve_flags_missing=f"kdserve serve needs the serve extra (pip install 'kdserve[serve]'): {exc}"
                )
            else:
                add_flags(parser)
        return original(args, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "serve",
        help="serve bundles over HTTP: /classify, Hugging Face and Open Inference (V2) protocols",
        description="Serve every bundle in --bundles (or --models a,b) with dynamic batching and routing. "
        "Each flag is also a KDSERVE_* environment variable; flags win.",
    )
    parser.set_defaults(func=_serve)
    _add_flags_lazily(parser)
