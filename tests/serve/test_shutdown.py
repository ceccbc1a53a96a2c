"""Graceful shutdown of the real ``kdserve serve`` process: SIGTERM with requests in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.serve.conftest import free_port, wait_process_ready


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_drains_in_flight_requests_and_exits_0(tiny_bundles: Path) -> None:
    port = free_port()
    env = {**os.environ, "KDSERVE_WARMUP_BATCH_SIZES": "1", "KDSERVE_WARMUP_LENGTHS": "8"}
    # a long batching wait keeps the requests in flight (queued) when SIGTERM arrives
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kdserve",
            "serve",
            "--bundles",
            str(tiny_bundles),
            "--models",
            "tiny-textcnn",
            "--port",
            str(port),
            "--max-wait-ms",
            "1000",
            "--no-adaptive-wait",
            "--max-batch-size",
            "64",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_process_ready(proc, url, lambda: proc.communicate()[1])
        results: list[int] = []
        lock = threading.Lock()

        def ask(i: int) -> None:
            r = httpx.post(url + "/classify", json={"text": f"the movie was great {i} ."}, timeout=20)
            with lock:
                results.append(r.status_code)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        # SIGTERM once all six are accepted and queued, waiting for their batch (a connection the
        # server has not read a request from yet is not "in flight": uvicorn closes it)
        deadline = time.monotonic() + 5
        while 'kdserve_queue_depth{model="tiny-textcnn"} 6.0' not in httpx.get(url + "/metrics", timeout=2).text:
            assert time.monotonic() < deadline, "the six requests never were all queued"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        code = proc.wait(30)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert results == [200] * 6
    assert code == 0, stderr[-3000:]
    assert "server stopped on SIGTERM after draining in-flight requests" in stderr
