"""The embedded platform's live telemetry page at /tbspark/ui: zone averages and raw wind speeds.

The page is three files served by the platform (no CDN: it must work on a closed network): the HTML,
app.css and app.js, because the page's Content-Security-Policy allows no inline script or style.
Its script logs in with the form on the page and reads the data through the platform's public REST
API, the same calls a ThingsBoard dashboard client makes, so the page needs nothing from the store's
internals. The page itself needs no token (a browser cannot send one when it opens a URL); it holds
no data and no secret, everything it shows comes through the JWT-protected API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from tbspark.platform.web.security import PAGE_HEADERS

HERE = Path(__file__).parent
UI_PATH = "/tbspark/ui"
# name → content type; nothing else under /tbspark/ui is served.
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
PUBLIC_PATHS = frozenset([UI_PATH, UI_PATH + "/", *(f"{UI_PATH}/{name}" for name in ASSETS)])


def _file(name: str, content_type: str) -> web.Response:
    # Read per request so an edited page shows up without restarting the platform.
    return web.Response(text=(HERE / name).read_text(encoding="utf-8"), content_type=content_type,
                        charset="utf-8", headers=PAGE_HEADERS)


async def _page(request: web.Request) -> web.Response:
    return _file("index.html", "text/html")


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _file(name, ASSETS[name])


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(UI_PATH)


def setup(app: web.Application, platform: Any = None) -> None:
    """Register the page's routes on the platform's aiohttp app (called by platform/app.py)."""
    app.router.add_get(UI_PATH, _page)
    app.router.add_get(UI_PATH + "/", _redirect)
    app.router.add_get(UI_PATH + "/{name}", _asset)
