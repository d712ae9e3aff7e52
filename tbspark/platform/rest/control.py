"""Platform-only controls under the reserved /tbspark/ prefix (never under /api): health, stats, reset.

Only health answers without a token (a liveness probe must work before anyone logs in); stats and
reset take the same JWT as /api, in ``X-Authorization: Bearer …``, from a tenant administrator or
the system administrator. A browser sends that header cross-site only after a CORS preflight,
which the platform never grants, so no web page can reset the platform through a visitor's browser
(the middleware in app.py enforces the token; docs/security.md)."""

from __future__ import annotations

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import PRINCIPAL_KEY, ok_json, platform, route

CONTROL_AUTHORITIES = ("TENANT_ADMIN", "SYS_ADMIN")


def _operator(request: web.Request) -> None:
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise errors.AuthFailed()
    if principal.authority not in CONTROL_AUTHORITIES:
        raise errors.Forbidden()


@route("GET", "/tbspark/health", "Liveness: 200 once the platform serves requests", "tbspark", auth=False)
async def health(request: web.Request) -> web.Response:
    return ok_json({"status": "UP"})


@route("GET", "/tbspark/stats", "Store, rule-engine and MQTT counters", "tbspark")
async def stats(request: web.Request) -> web.Response:
    _operator(request)
    return ok_json(platform(request).stats())


@route("POST", "/tbspark/reset", "Delete all devices, assets, custom chains and data (tests)", "tbspark")
async def reset(request: web.Request) -> web.Response:
    _operator(request)
    platform(request).reset()
    return ok_json({"reset": True})
