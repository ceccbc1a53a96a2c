"""Server test helpers: settings over the tiny bundles, a ready TestClient, a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")


def make_settings(bundles: Path, **overrides: Any) -> Any:
    from kdserve.serve.config import load_settings

    # small warm-up: the tests do not measure latency, and the machine is shared
    base: dict[str, Any] = {"bundles": bundles, "warmup_batch_sizes": [1], "warmup_lengths": [8]}
    base.update(overrides)
    return load_settings(**base)


def wait_ready(get: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"server not ready within {timeout} s")


def wait_process_ready(proc: Any, url: str, output: Callable[[], str], timeout: float = 60.0) -> None:
    """Poll ``url``/ready until 200; fail with the tail of ``output()`` if the server process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, output()[-3000:]
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never got ready"
        time.sleep(0.1)


@contextmanager
def ready_client(bundles: Path, **overrides: Any) -> Iterator[Any]:
    """A TestClient over a fresh app, after start-up finished (models loaded and warm)."""
    from fastapi.testclient import TestClient

    from kdserve.serve.app import create_app

    app = create_app(make_settings(bundles, **overrides))
    with TestClient(app) as client:
        wait_ready(client.get)
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def real_server(bundles: Path, **overrides: Any) -> Iterator[str]:
    """A real uvicorn serving a fresh app on a free loopback port, in a thread; yields its URL."""
    from kdserve.serve.app import create_app

    with serving(create_app(make_settings(bundles, **overrides))) as url:
        yield url


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """A real uvicorn serving ``app`` on a free loopback port, in a thread; yields its URL once ready."""
    import uvicorn

    from kdserve.serve.cli import _http_protocol

    port = free_port()
    # the server's own HTTP protocol (one write per response), as `kdserve serve` runs it
    settings = app.state.settings
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            http=_http_protocol(app),
            ws="none",
            timeout_keep_alive=settings.idle_timeout_s,
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.02)
        wait_ready(lambda path: httpx.get(url + path, timeout=5))
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not stop"
