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

from kdserve.core.errors import KdserveError

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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        lifespan="on",
        http=_http_protocol(),
        ws="none",
        timeout_graceful_shutdown=settings.graceful_timeout_s,
    )  # type: ignore[arg-type]
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
    log.info("server stopped%s", " on SIGTERM after draining in-flight requests" if terms else "")
    return 0


def _http_protocol() -> Any:
    """One socket write per response (``kdserve.serve.http_protocol``) when httptools is there, else
    uvicorn's own choice."""
    try:
        from kdserve.serve.http_protocol import CoalescingHttpToolsProtocol
    except ImportError:  # no httptools: uvicorn falls back to h11
        return "auto"
    return CoalescingHttpToolsProtocol


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
