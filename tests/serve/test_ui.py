"""The /ui comparison page: served from the package (and off with ``ui=False``), self-contained
(no other origin, so it works offline), shipped in the wheel, and driven in a real Chromium.

The browser tests use the system's Chromium (Debian's ``chromium``; ``.ci/run`` installs it)
through Playwright; Playwright's own browser download is never used (it needs the internet).
Set ``KDSERVE_UI_SCREENSHOTS=DIR`` to also save the page's screenshots there (docs/screenshots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.serve.conftest import make_settings, ready_client, real_server

UI = REPO / "serve" / "ui"
ROUTES = {
    "routes": {
        "ab-test": {"policy": "ab", "variants": {"tiny-bilstm": 0.5, "tiny-textcnn": 0.5}},
        "shadow-teacher": {"policy": "shadow", "primary": "tiny-bilstm", "shadow": "tiny-teacher", "sample_rate": 1.0},
        # the tiny students are confident on their training words: a high bar makes escalations happen
        "cascade": {"policy": "cascade", "student": "tiny-bilstm", "teacher": "tiny-teacher", "threshold": 0.999},
    }
}
TEXTS = ["the film was very good .", "a dull , boring plot", "the acting was not great but the plot was good"]


# ---------------------------------------------------------------------- served, and off


def test_ui_is_served_with_a_strict_policy(tiny_bundles: Path) -> None:
    from kdserve.serve.ui import FILES

    with ready_client(tiny_bundles) as client:
        redirect = client.get("/ui", follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"] == "ui/"
        for name, media_type in FILES.items():
            response = client.get(f"/ui/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == media_type
            assert response.content == (UI / name).read_bytes()
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
        assert client.get("/ui/").content == (UI / "index.html").read_bytes()
        # only the page's own files: not the package's Python, not a path outside it
        for name in ("__init__.py", "..%2Fapp.py", "nope.js"):
            missing = client.get(f"/ui/{name}")
            assert missing.status_code == 404, name
            assert missing.json()["error"]["code"] in ("not_found", "unknown_route"), missing.json()
        assert not any(p.startswith("/ui") for p in client.get("/openapi.json").json()["paths"])


def test_ui_off_is_404(tiny_bundles: Path) -> None:
    with ready_client(tiny_bundles, ui=False) as client:
        for path in ("/ui", "/ui/", "/ui/app.js"):
            assert client.get(path, follow_redirects=False).status_code == 404, path
        assert client.get("/models").status_code == 200


def test_ui_setting_from_flag_and_env(tiny_bundles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from kdserve.serve.config import add_flags, settings_from_args

    assert make_settings(tiny_bundles).ui is True
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert settings_from_args(parser.parse_args(["--bundles", str(tiny_bundles), "--no-ui"])).ui is False
    monkeypatch.setenv("KDSERVE_UI", "false")
    assert settings_from_args(parser.parse_args(["--bundles", str(tiny_bundles)])).ui is False


def test_page_loads_nothing_from_another_origin() -> None:
    """Works offline: every URL in the page's files is relative (no CDN, no web font, no http(s)://)."""
    from kdserve.serve.ui import FILES

    shipped = {p.name for p in UI.iterdir() if p.suffix in (".html", ".js", ".css")}
    assert shipped == set(FILES), "a file of the page is not in FILES (it would 404), or FILES names a missing one"
    for name in FILES:
        text = (UI / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{name} names another origin"
    html = (UI / "index.html").read_text()
    assert re.findall(r'<script src="([^"]+)"', html) == ["prom.js", "charts.js", "app.js"]
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', html) == ["style.css"]
    assert "<script>" not in html and "style=" not in html, "inline script or style breaks the CSP"


def test_wheel_ships_the_page(tmp_path: Path) -> None:
    """A built wheel (what the Docker image installs) carries every file of the page."""
    from kdserve.serve.ui import FILES

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("kdserve-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in FILES:
        assert f"kdserve/serve/ui/{name}" in names, name
    assert "kdserve/serve/ui/__init__.py" in names


def test_ci_installs_chromium_before_the_tests() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    install = ci.index("apt-get install -y -qq chromium")
    assert install < ci.index("python -m pytest"), "CI must install Chromium before running the browser tests"


# ---------------------------------------------------------------------- in a real browser


def chromium_path() -> str:
    """The system Chromium (KDSERVE_CHROMIUM overrides), or skip saying how to get one."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    for candidate in (os.environ.get("KDSERVE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    pytest.skip("no Chromium on this machine (apt-get install -y chromium; .ci/run does it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # the system binary: Playwright's own browser download does not work offline
        launched = p.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def routed_server(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    routing = tmp_path_factory.mktemp("ui") / "routing.json"
    routing.write_text(json.dumps(ROUTES))
    with real_server(tiny_bundles, routing_file=routing) as url:
        yield url


class Page:
    """A page of the browser with every console error and uncaught exception recorded."""

    def __init__(self, browser: Any, width: int = 1400, height: int = 1000) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.page.close()


def screenshot(target: Any, name: str) -> None:
    """Save a page (whole) or a locator's element as DIR/name when KDSERVE_UI_SCREENSHOTS=DIR."""
    folder = os.environ.get("KDSERVE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        whole = {"full_page": True} if hasattr(target, "goto") else {}
        target.screenshot(path=str(Path(folder) / name), **whole)


@contextmanager
def traffic(url: str) -> Iterator[list[int]]:
    """A load loop sending texts through every route until the block ends; yields its answer count."""
    stop = threading.Event()
    answered = [0]

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                route = ("ab-test", "shadow-teacher", "cascade", "tiny-teacher")[i % 4]
                response = client.post("/classify", json={"texts": [TEXTS[i % 3], TEXTS[(i + 1) % 3]], "model": route})
                assert response.status_code == 200, response.text
                answered[0] += 1
                i += 1

    thread = threading.Thread(target=loop, name="ui-load", daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(15)


def api_answer(url: str, text: str, model: str) -> dict[str, Any]:
    response = httpx.post(url + "/classify", json={"text": text, "model": model, "all_scores": True}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.browser
def test_typed_texts_get_every_models_answer(browser: Any, routed_server: str) -> None:
    from playwright.sync_api import expect

    with Page(browser) as p:
        page = p.page
        page.goto(routed_server + "/ui")
        assert page.url == routed_server + "/ui/"
        expect(page.locator("#status")).to_have_text("ready")
        # every model checked; of the routes, the configured ones (not the implicit aliases)
        checked = page.locator("#targets input:checked")
        expect(checked).to_have_count(6)
        targets = [checked.nth(i).get_attribute("value") for i in range(6)]
        assert targets == ["tiny-bilstm", "tiny-teacher", "tiny-textcnn", "ab-test", "cascade", "shadow-teacher"]

        page.fill("#texts", "\n".join(TEXTS))
        page.keyboard.press("Control+Enter")  # focus is in the text box
        expect(page.locator("td.pending")).to_have_count(0, timeout=30_000)
        expect(page.locator("#run")).to_be_enabled()
        expect(page.locator("td.failed")).to_have_count(0)
        assert re.fullmatch(r"3 text\(s\) × 6 target\(s\) in [0-9.]+ s", page.inner_text("#run-status"))

        rows = page.locator("table.results tbody tr")
        expect(rows).to_have_count(3)
        for i, text in enumerate(TEXTS):
            row = rows.nth(i)
            assert row.locator(".text").inner_text() == text
            for target in targets:
                cell = row.locator(f'td[data-target="{target}"]')
                # an A/B route picks a variant per request (no routing key): ask the model it picked
                asked = cell.locator(".answered-by").inner_text() if target == "ab-test" else target
                result = api_answer(routed_server, text, asked)["results"][0]
                # the same label and scores the API gives, to the digits shown
                assert cell.locator(".top .label").inner_text() == result["label"]
                assert cell.locator(".top .score").inner_text() == f"{result['score']:.3f}"
                bars = cell.locator(".bar-row")
                assert [bars.nth(k).locator(".bar-label").inner_text() for k in range(bars.count())] == [
                    s["label"] for s in result["scores"]
                ]
                assert re.fullmatch(r"[0-9.]+ ms", cell.locator(".latency").inner_text())
                badges = cell.locator(".badge").all_inner_texts()
                if target == "ab-test":
                    assert len(badges) == 1 and badges[0].removeprefix("A/B variant: ") in (
                        "tiny-bilstm",
                        "tiny-textcnn",
                    )
                    assert cell.locator(".answered-by").inner_text() == badges[0].removeprefix("A/B variant: ")
                elif target == "cascade":
                    # the cascade is deterministic: the page shows the decision the API makes
                    expected = "escalated → tiny-teacher" if result["escalated"] else "kept by student"
                    assert badges == [expected]
                    assert cell.locator(".answered-by").inner_text() == result["model"]
                elif target == "shadow-teacher":
                    assert badges == ["shadowed"]
                else:
                    assert badges == [] and cell.locator(".answered-by").inner_text() == target
            labels = {row.locator(f'td[data-target="{t}"] .top .label').inner_text() for t in targets}
            assert row.locator(".agreement").inner_text() == ("all agree" if len(labels) == 1 else "disagree")
        assert page.locator("#summary").inner_text().startswith("agreement with tiny-teacher: tiny-bilstm ")
        expected = sum(api_answer(routed_server, t, "cascade")["results"][0]["escalated"] for t in TEXTS)
        expect(page.locator('td[data-target="cascade"] .badge.escalated')).to_have_count(expected)
        screenshot(page.locator("#compare"), "ui-compare.png")

        assert p.errors == []

        # a refused request shows the API's error code and message in its cell, not a broken page
        page.fill("#texts", "y" * 20_001)  # over max_text_chars
        page.click("#run")
        expect(page.locator("td.pending")).to_have_count(0, timeout=30_000)
        expect(page.locator("td.failed")).to_have_count(6)
        expect(page.locator("td.failed .error-code").first).to_have_text("invalid_request")
        expect(page.locator("td.failed .error-message").first).to_contain_text("over max_text_chars (20000)")
        # the browser itself logs each refused request; nothing else went wrong
        assert (
            p.errors
            == [
                "console error: Failed to load resource: the server responded with a status of 422 "
                "(Unprocessable Entity)"
            ]
            * 6
        )


@pytest.mark.browser
def test_live_panel_follows_the_traffic(browser: Any, routed_server: str) -> None:
    from playwright.sync_api import expect

    with Page(browser) as p:
        page = p.page
        page.goto(routed_server + "/ui/")
        expect(page.locator("#status")).to_have_text("ready")
        with traffic(routed_server) as answered:
            # the tiles show a positive rate once a rate window holds some of the load
            expect(page.locator("#tile-texts .value")).to_have_text(re.compile(r"^[1-9][0-9]*\.[0-9]$"), timeout=20_000)
            expect(page.locator("#tile-requests .value")).to_have_text(re.compile(r"^[1-9][0-9]*\.[0-9]$"))
            expect(page.locator("#tile-p99 .value")).to_have_text(re.compile(r"^[0-9]+\.[0-9]$"))
            expect(page.locator("#live-status")).to_have_text(re.compile(r"^live · rates over the last [1-5] s$"))
            # each chart's legend carries the latest value of each series
            for model in ("tiny-bilstm", "tiny-teacher"):
                expect(page.locator("#legend-throughput .legend-item", has_text=model)).to_have_text(
                    re.compile(model + r"[0-9.]+ /s")
                )
                expect(page.locator("#legend-latency .legend-item", has_text=model + " p99")).to_have_text(
                    re.compile(r"[0-9.]+ ms$")
                )
                expect(page.locator("#legend-batch .legend-item", has_text=model)).to_have_text(
                    re.compile(model + r"[0-9.]+$")
                )
            # the tiny models agree on these texts: the shadow route's agreement is 100 %
            expect(page.locator("#legend-shadow .legend-item")).to_have_text("shadow-teacher100 %", timeout=10_000)
            expect(page.locator("#legend-cascade .legend-item")).to_have_text(re.compile(r"^cascade[0-9.]+ %$"))
            before = int(page.locator("body").get_attribute("data-scrapes") or 0)
            expect(page.locator("body")).not_to_have_attribute("data-scrapes", str(before), timeout=5_000)
            # a comparison typed while traffic flows: the whole page, as the README shows it
            page.fill("#texts", "\n".join(TEXTS))
            page.click("#run")
            expect(page.locator("td.pending")).to_have_count(0, timeout=30_000)
            time.sleep(3)  # a few more points on the charts
            screenshot(page, "ui.png")
        assert answered[0] > 0
        # the charts are drawn (pixels other than the background) and no script failed
        # the first model's line is on the throughput canvas: pixels of its colour (#2563eb), not just grid
        line_pixels = page.evaluate(
            """() => {
              const c = document.getElementById("chart-throughput");
              const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4) {
                if (d[i] < 90 && d[i + 1] < 140 && d[i + 2] > 190 && d[i + 3] > 200) n++;
              }
              return n;
            }"""
        )
        assert line_pixels > 20
        assert p.errors == []


@pytest.mark.browser
def test_metrics_arithmetic_in_the_page(browser: Any, routed_server: str) -> None:
    """prom.js: the text-format parser and histogram_quantile, on fixed inputs with exact answers."""
    with Page(browser) as p:
        page = p.page
        page.goto(routed_server + "/ui/")
        got = page.evaluate(
            r"""() => {
              const b = [{le: 0.001, count: 2}, {le: 0.0025, count: 6}, {le: 0.005, count: 9},
                         {le: 0.01, count: 10}, {le: Infinity, count: 10}];
              const tail = b.slice(0, 4).concat([{le: Infinity, count: 12}]);
              const old = new Prom.Scrape(
                'x_bucket{m="a",le="1.0"} 1\nx_bucket{m="a",le="+Inf"} 2\n' + 'c_total{r="q\\"z"} 5', 0);
              const now = new Prom.Scrape(
                '# HELP x h\nx_bucket{m="a",le="1.0"} 4\nx_bucket{m="a",le="+Inf"} 6\n' +
                'c_total{r="q\\"z"} 7 1700000000', 2);
              return {
                p50: Prom.histogramQuantile(0.5, b), p99: Prom.histogramQuantile(0.99, b),
                inf: Prom.histogramQuantile(1.0, tail), none: Prom.histogramQuantile(0.5, []),
                window: Prom.quantiles(old, now, "x", "m", 0.5),
                counter: Prom.increases(old, now, "c_total", "r"),
                reset: Prom.increase(9, 3),
              };
            }"""
        )
        assert got["p50"] == pytest.approx(0.002125, abs=1e-12)  # 0.001 + 0.0015 * (5 - 2) / (6 - 2)
        assert got["p99"] == pytest.approx(0.0095, abs=1e-12)  # 0.005 + 0.005 * (9.9 - 9) / (10 - 9)
        assert got["inf"] == 0.01  # in the +Inf bucket: the highest finite bound, as Prometheus answers
        assert got["none"] is None
        # the window's increases: 3 of 4 in le=1.0, so the median (rank 2) is 2/3 of the way to 1.0
        assert got["window"] == {"a": pytest.approx(2 / 3, abs=1e-12)}
        assert got["counter"] == {'q"z': 2}
        assert got["reset"] == 3  # a counter reset counts from zero
        assert p.errors == []
