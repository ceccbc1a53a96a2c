"""serve/ must import and answer requests with torch (and transformers) unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.modules["torch"] = None          # any `import torch` now raises ImportError
    sys.modules["transformers"] = None
    from fastapi.testclient import TestClient
    import kdserve.serve.app, kdserve.serve.cli, kdserve.serve.service, kdserve.serve.batching
    import kdserve.serve.runtime, kdserve.core.bundle
    from kdserve.serve.config import load_settings
    app = kdserve.serve.app.create_app(load_settings(bundles=sys.argv[1], warmup_batch_sizes=[1], warmup_lengths=[8]))
    with TestClient(app) as client:
        for _ in range(500):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.02)
        r = client.post("/classify", json={"texts": ["the movie was really wonderful .", "the plot was very dull ."]})
        assert r.status_code == 200, r.text
        print([x["label"] for x in r.json()["results"]])
    assert sys.modules["torch"] is None
""")


def test_serve_runs_without_torch(tiny_bundles: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundles)], capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['positive', 'negative']"
