"""/api/auth: login, refresh, current user (§1)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tbspark.platform.rest import errors
from tbspark.platform.rest.common import PRINCIPAL_KEY, eid, ok_json, platform, route
from tbspark.platform.store import NULL_UUID


async def _body(request: web.Request) -> dict:
    try:
        body = json.loads(await request.text() or "null")
    except (ValueError, RecursionError):  # not UTF-8 / nested thousands deep (tests/fuzz)
        raise errors.auth_failed("Authentication failed") from None
    if not isinstance(body, dict):
        raise errors.auth_failed("Authentication failed")
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
    raise errors.auth_failed("Authentication method not supported")


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


@route("POST", "/api/auth/logout", "Log out (tokens stay valid until they expire)", "auth")
async def logout(request: web.Request) -> web.Response:
    return web.Response(status=200)
