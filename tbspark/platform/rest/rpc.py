"""Server-side RPC over REST, as ThingsBoard's RpcV2Controller (``/api/rpc/{oneway|twoway}/{deviceId}``)
and the older RpcV1Controller (``/api/plugins/rpc/...``, what tb-rest-client's
``handle_one_way_device_rpc_request`` / ``handle_two_way_device_rpc_request`` call).

Body ``{"method": str, "params": any, "timeout": ms?, "expirationTime": epoch ms?}``. Like
AbstractRpcController: the request expires at ``expirationTime``, else now + max(5000, timeout), timeout
defaulting to 10000. Answers: 200 with the device's reply parsed as JSON (406, empty, if it is not JSON;
200, empty, for a one-way call or an empty reply); when it expires, empty-bodied 504 on v2, and on v1
408 if the device got the request but did not answer or 409 if no session could receive it.
The request goes through the device's rule chain (platform/rpc.py ``call_via_chain``): a chain
without an RPC call request node drops it, and the caller gets the time-out answer.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform import rpc as rpc_mod
from tbspark.platform.rest.common import PRINCIPAL_KEY, ok_json, parse_uuid, platform, route

MIN_TIMEOUT_MS = 5000       # server.rest.server_side_rpc.min_timeout
DEFAULT_TIMEOUT_MS = 10000  # server.rest.server_side_rpc.default_timeout

# (status on TIMEOUT, status on NO_ACTIVE_CONNECTION) per controller generation.
_V2 = (504, 504)
_V1 = (408, 409)


def _invalid(detail: str) -> errors.BadRequest:
    return errors.BadRequest(f"Invalid request body: {detail}")


def _number(body: dict, key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        raise _invalid(f"'{key}' must be a number of milliseconds")
    try:
        n = int(v) if isinstance(v, (int, float)) else int(float(v.strip())) if isinstance(v, str) else None
    except (ValueError, OverflowError):  # "soon", NaN, Infinity
        n = None
    if n is not None and -(2**63) <= n < 2**63:  # a Java long, as ThingsBoard reads it
        return n
    raise _invalid(f"'{key}' must be a number of milliseconds")


def parse_request(text: str, now_ms: int) -> tuple[str, object, int]:
    """(method, params, expires_at_ms) of an RPC request body; TB's 400 "Invalid request body" otherwise."""
    if not text.strip():
        raise errors.BadRequest("Required request body is missing")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise errors.BadRequest("Invalid request body") from None
    if not isinstance(body, dict):
        raise _invalid("expected a JSON object {\"method\": ..., \"params\": ...}")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise _invalid("'method' (a non-empty string) is required")
    if "params" not in body:
        raise _invalid("'params' is required (use {} when the method takes none)")
    if body.get("persistent") is True:
        raise _invalid("persistent RPC is not supported by the embedded platform")
    expires = _number(body, "expirationTime")
    if expires is None:
        timeout = _number(body, "timeout")
        expires = now_ms + max(MIN_TIMEOUT_MS, DEFAULT_TIMEOUT_MS if timeout is None else timeout)
    return method, body["params"], expires


async def _handle(request: web.Request, oneway: bool, statuses: tuple[int, int]) -> web.Response:
    raw_id = request.match_info["deviceId"]
    device_id = parse_uuid(raw_id)  # a bad UUID is rejected before the body is looked at
    try:
        text = await request.text()
    except ValueError:  # bytes that are not UTF-8
        raise errors.BadRequest("Invalid request body") from None
    method, params, expires = parse_request(text, int(time.time() * 1000))
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise errors.AuthFailed()
    if principal.authority == "SYS_ADMIN":  # AccessValidator.validateDevice
        raise errors.PlainTextError("System administrator is not allowed to perform this operation!", status=403)
    p = platform(request)
    device = p.store.device_by_id(device_id)
    if device is None or device.tenant_id != principal.tenant_id:
        raise errors.PlainTextError("Device with requested id wasn't found!", status=404)
    service = getattr(p.mqtt, "rpc", None)
    if service is None:  # no MQTT transport running: nobody can receive it
        outcome = rpc_mod.Outcome(rpc_mod.NO_ACTIVE_CONNECTION)
    elif p.engine is None:
        outcome = await service.call(device, method, params, oneway, expires)
    else:  # through the device's rule chain, as on ThingsBoard (its RPC call request node sends it)
        outcome = await service.call_via_chain(p.engine, device, method, params, oneway, expires)
    if outcome.status == rpc_mod.TIMEOUT:
        return web.Response(status=statuses[0])
    if outcome.status == rpc_mod.NO_ACTIVE_CONNECTION:
        return web.Response(status=statuses[1])
    reply = outcome.reply
    if not reply:
        return web.Response(status=200)
    try:
        return ok_json(json.loads(reply))
    except (ValueError, RecursionError):  # JacksonUtil.toJsonNode fails → NOT_ACCEPTABLE
        return web.Response(status=406)


_SUMMARY = "Send a {kind} RPC to a device: 200 {ok}; {late}"


@route("POST", "/api/rpc/oneway/{deviceId}",
       _SUMMARY.format(kind="one-way", ok="once delivered to a connected device",
                       late="504 if nobody received it in time"),
       "rpc", body="json")
async def oneway_v2(request: web.Request) -> web.Response:
    return await _handle(request, True, _V2)


@route("POST", "/api/rpc/twoway/{deviceId}",
       _SUMMARY.format(kind="two-way", ok="with the device's reply", late="504 when it does not answer in time"),
       "rpc", body="json")
async def twoway_v2(request: web.Request) -> web.Response:
    return await _handle(request, False, _V2)


@route("POST", "/api/plugins/rpc/oneway/{deviceId}",
       _SUMMARY.format(kind="one-way (v1 path)", ok="once delivered", late="409 if no session could receive it"),
       "rpc", body="json")
async def oneway_v1(request: web.Request) -> web.Response:
    return await _handle(request, True, _V1)


@route("POST", "/api/plugins/rpc/twoway/{deviceId}",
       _SUMMARY.format(kind="two-way (v1 path)", ok="with the device's reply",
                       late="408 if the device did not answer in time, 409 if no session could receive it"),
       "rpc", body="json")
async def twoway_v1(request: web.Request) -> web.Response:
    return await _handle(request, False, _V1)
