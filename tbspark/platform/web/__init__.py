"""The embedded platform's live telemetry page at /tbspark/ui: zone averages and raw wind speeds.

The page is one self-contained HTML file (no CDN: it must work on a closed network). Its script reads
the data through the platform's public REST API, the same calls a ThingsBoard dashboard client makes,
so the page needs nothing from the store's internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

PAGE = Path(__file__).with_name("index.html")
UI_PATH = "/tbspark/ui"


async def _page(request: web.Request) -> web.Response:
    # Read per request so an edited page shows up without restarting the platform.
    return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(UI_PATH)


def setup(app: web.Application, platform: Any = None) -> None:
    """Register the page's routes on the platform's aiohttp app (called by platform/app.py)."""
    app.router.add_get(UI_PATH, _page)
    app.router.add_get(UI_PATH + "/", _redirect)
