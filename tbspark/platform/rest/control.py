"""Platform-only controls under the reserved /tbspark/ prefix (never under /api): health, stats, reset."""

from __future__ import annotations

from aiohttp import web

from tbspark.platform.rest.common import ok_json, platform, route


@route("GET", "/tbspark/health", "Liveness: 200 once the platform serves requests", "tbspark", auth=False)
async def health(request: web.Request) -> web.Response:
    return ok_json({"status": "UP"})


@route("GET", "/tbspark/stats", "Store, rule-engine and MQTT counters", "tbspark", auth=False)
async def stats(request: web.Request) -> web.Response:
    return ok_json(platform(request).stats())


@route("POST", "/tbspark/reset", "Delete all devices, assets, custom chains and data (tests)", "tbspark",
       auth=False)
async def reset(request: web.Request) -> web.Response:
    platform(request).reset()
    return ok_json({"reset": True})
