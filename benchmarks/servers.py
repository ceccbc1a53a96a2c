"""Servers the harness starts itself: kdserve, the baselines, the trivial server.

Each runs as a subprocess in its own process group (so uvicorn/LitServe workers go with it),
is waited on until its readiness URL answers 200 (bounded: a server that exits or never
becomes ready is an error naming its last log lines) and is always torn down: SIGTERM, then
SIGKILL after a grace period, from ``__exit__`` whatever happened inside the ``with``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from kdserve.bench.common import BenchError

#: What ``compare`` and ``http`` can start: kdserve itself, the three baselines and the trivial server.
SERVER_KINDS = ("kdserve", "naive", "litserve", "hf", "trivial")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the OS picks it; a race with another process is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(
    kind: str,
    port: int,
    bundle: str | Path | None = None,
    bundles_root: str | Path | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The argv that starts a server of ``kind`` on 127.0.0.1:``port``; each answers ``GET /ready``."""
    python = sys.executable
    if kind == "kdserve":
        if bundles_root is None or model is None:
            raise BenchError("starting kdserve needs the bundles folder and a model name")
        # warning: no access-log line per request, as in the baselines (the comparison is about serving).
        cmd = [
            python,
            "-m",
            "kdserve",
            "serve",
            "--bundles",
            str(bundles_root),
            "--models",
            model,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    elif kind in ("naive", "litserve"):
        if bundle is None:
            raise BenchError(f"the {kind} baseline needs a bundle folder")
        module = "naive_fastapi" if kind == "naive" else "litserve_app"
        cmd = [python, "-m", f"kdserve.bench.baselines.{module}", str(bundle), "--port", str(port)]
    elif kind == "hf":
        if checkpoint is None:
            raise BenchError("the transformers-pipeline baseline needs a checkpoint folder")
        cmd = [python, "-m", "kdserve.bench.baselines.hf_pipeline_app", str(checkpoint), "--port", str(port)]
    elif kind == "trivial":
        cmd = [python, "-m", "kdserve.bench.trivial_server", "--port", str(port)]
    else:
        raise BenchError(f"unknown server kind {kind!r}; expected one of {', '.join(SERVER_KINDS)}")
    return cmd + list(extra or [])


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """Status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - local URL we built
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ServerProcess:
    """A server subprocess with a readiness wait and guaranteed teardown (a context manager)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        ready_path: str = "/ready",
        start_timeout_s: float = 120.0,
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.start_timeout_s = start_timeout_s
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"kdserve-bench-{name}-", suffix=".log")[1])
        )
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def rss_bytes(self) -> int | None:
        """Resident memory of the server's whole process group (LitServe's workers included), from
        /proc; None off Linux or once stopped."""
        if self.process is None or not Path("/proc/self/status").exists():
            return None
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                status = (entry / "status").read_text()
            except (OSError, ProcessLookupError):
                continue  # gone meanwhile
            total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return total or None

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
            )
        except OSError as exc:
            raise BenchError(f"cannot start {self.name} ({self.command[0]}): {exc}") from None
        finally:
            log.close()
        deadline = started + self.start_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                tail = self.log_tail()
                self.process = None
                raise BenchError(f"{self.name} exited with status {code} before it was ready: {tail or '(no output)'}")
            if http_status(self.ready_url) == 200:
                self.startup_s = time.monotonic() - started
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise BenchError(
                    f"{self.name} was not ready at {self.ready_url} within {self.start_timeout_s:.0f} s: "
                    f"{tail or '(no output)'}"
                )
            time.sleep(0.1)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)  # our own child's group: start_new_session=True
        except ProcessLookupError:
            return
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_server(
    kind: str,
    log_dir: str | Path | None = None,
    start_timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    **kwargs: object,
) -> ServerProcess:
    """A not-yet-started ``ServerProcess`` of ``kind`` on a free port (use it in a ``with``)."""
    port = free_port()
    command = server_command(kind, port, **kwargs)  # type: ignore[arg-type]
    label = str(kwargs.get("model") or (Path(str(kwargs["bundle"])).name if kwargs.get("bundle") else kind))
    name = f"{kind}:{label}" if label != kind else kind
    log_path = Path(log_dir) / f"{kind}-{label}-{port}.log" if log_dir else None
    return ServerProcess(name, command, port, "/ready", start_timeout_s, log_path, env)
