"""The comparison page at ``/ui/``: static files shipped in this package, served from memory.

The page only calls the server's public routes (``/models``, ``/routing``, ``/classify``,
``/metrics``) from the browser, so it needs no route or permission of its own: what a visitor can
do with it they can already do with curl. It loads nothing from another origin (no CDN: it works
offline, and the Content-Security-Policy below forbids any other origin), and every text a user
types is put into the page as text, never as HTML.

Only the files named in ``FILES`` are served (no directory listing, no path to walk): they are
read once when the app is built, so a request costs a dict lookup.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from kdserve.serve.errors import error_response

#: file name -> media type; the whole page
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "prom.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

#: 'self' only: a page that shows moderation texts must not be able to send them anywhere else,
#: nor be framed by another site.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # an upgraded server must not run yesterday's script against today's API
    "Cache-Control": "no-cache",
}


def read_files() -> dict[str, bytes]:
    """Every file of the page, as shipped in the installed package."""
    root = resources.files(__name__)
    return {name: (root / name).read_bytes() for name in FILES}


def mount_ui(app: FastAPI) -> None:
    """``GET /ui`` (redirect) and ``GET /ui/{file}``: the page's files, kept out of the OpenAPI schema."""
    files = read_files()

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:
        # the page lives at /ui/ so that its relative URLs (app.js, ../classify) also work behind a
        # proxy that serves the API under a path prefix
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    async def ui_index() -> Response:
        return Response(files["index.html"], media_type=FILES["index.html"], headers=HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    async def ui_file(name: str) -> Response:
        if name not in files:
            return error_response(404, "not_found", f"no file {name!r} in the UI; it has {', '.join(sorted(files))}")
        return Response(files[name], media_type=FILES[name], headers=HEADERS)
