"""/api/auth: login, refresh, current user, logout (§1).

Login and refresh take no token, so they insist on ``Content-Type: application/json``: a browser
sends that cross-site only after a CORS preflight, which the platform never grants, so no web page
can log in (or lock a username with failed guesses) through a visitor's browser (docs/security.md)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import PRINCIPAL_KEY, eid, ok_json, platform, route
from tbspark.platform.store import NULL_UUID


def require_json(request: web.Request) -> None:
    """415 unless the body is declared JSON: text/plain, form encodings and a missing type are what
    a cross-site page can send without a preflight."""
    ctype = request.content_type.lower()  # aiohttp: application/octet-stream when absent
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        shown = request.headers.get("Content-Type", "")
        raise errors.PlatformError(f"Content-Type '{shown}' is not supported" if shown else
                                   "Content-Type 'application/json' is required", status=415)


async def _body(request: web.Request) -> dict:
    require_json(request)
    try:
        body = json.loads(await request.text() or "null")
    except (ValueError, RecursionError):  # not UTF-8 / nested thousands deep (tests/fuzz)
        raise errors.AuthFailed("Authentication failed") from None
    if not isinstance(body, dict):
        raise errors.AuthFailed("Authentication failed")
    return body


@route("POST", "/api/auth/login", "Log in with username and password; returns a JWT pair", "auth",
       body="json", auth=False)
async def login(request: web.Request) -> web.Response:
    body = await _body(request)
    # Password hashing (scrypt) takes tens of ms: off the loop, so MQTT sessions never stall on a login.
    loop = asyncio.get_running_loop()
    pair = await loop.run_in_executor(None, platform(request).auth.login, body.get("username"), body.get("password"))
    return ok_json(pair)


@route("GET", "/api/auth/login", "Not supported (ThingsBoard answers 401)", "auth", auth=False)
async def login_get(request: web.Request) -> web.Response:
    raise errors.AuthFailed("Authentication method not supported")


@route("POST", "/api/auth/token", "Exchange a refresh token for a new JWT pair", "auth", body="json", auth=False)
async def refresh(request: web.Request) -> web.Response:
    body = await _body(request)
    return ok_json(platform(request).auth.refresh(body.get("refreshToken")))


@route("GET", "/api/auth/user", "The current user", "auth")
async def current_user(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL_KEY]
    u = principal.user
    return ok_json({
        "id": eid("USER", u.id), "createdTime": u.created_time,
        "tenantId": eid("TENANT", u.tenant_id or NULL_UUID), "customerId": eid("CUSTOMER", u.customer_id),
        "email": u.email, "name": u.email, "authority": u.authority,
        "firstName": u.first_name, "lastName": u.last_name, "phone": None,
        "additionalInfo": u.additional_info or {}, "version": 1,
    })


@route("POST", "/api/auth/logout", "Log out: this session's access and refresh tokens stop working", "auth")
async def logout(request: web.Request) -> web.Response:
    platform(request).auth.logout(request[PRINCIPAL_KEY])
    return web.Response(status=200)
