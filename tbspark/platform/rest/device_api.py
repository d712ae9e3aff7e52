"""ThingsBoard's HTTP device API (DeviceApiController, ``/api/v1/{deviceToken}/…``): what devices
without MQTT use. The device's access token in the path is its only credential.

As ThingsBoard 4.3.1.3 answers (read from its source, checked by tests/differential against the real
server): an unknown token is an empty-bodied 401; a written telemetry/attributes payload is an empty
200 once stored (the same messages through the rule chain as MQTT); a payload its lenient Gson cannot
read is a 500 whose plain body is Gson's message, one JsonConverter refuses a 500 with its message
(``Can't parse value: 1``); a null value is skipped as on MQTT;
``GET …/attributes`` answers ``{"client": {…}, "shared": {…}}`` (empty sections left out);
``GET …/rpc`` long-polls for a server-side RPC ``{"id", "method", "params"}`` and answers an empty 408
when ``timeout`` ms (below 30 s) pass without one, a 503 after 30 s (Spring's async timeout) otherwise
(``GET …/attributes/updates`` long-polls the same way for a shared-attribute change); ``POST …/rpc/{requestId}`` is the device's reply; ``POST …/rpc``
sends a client-side RPC into the rule chain and waits for a reply the same way.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from tbspark.platform import errors, values
from tbspark.platform.rest.common import Param, platform, route
from tbspark.platform.transport import device_api as api

P = "/api/v1/{deviceToken}"
TAG = "device-api"
DEFAULT_TIMEOUT_MS = 60_000   # transport.http.request_timeout
ASYNC_TIMEOUT_MS = 30_000     # spring.mvc.async.request-timeout: ends any longer wait first, with a 503
RPC_MAX_PAYLOAD = 65_536      # transport.http.max_payload_size for /api/v1/*/rpc/**
TIMEOUT_PARAM = Param("timeout", "integer", description="Long-poll timeout in ms (0: the default)")


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


def _device(request: web.Request):
    """The device whose token is in the path, or None; a request of a known device is its activity
    (device state, as ThingsBoard's HTTP transport reports it)."""
    p = platform(request)
    device = p.store.device_by_token(request.match_info["deviceToken"])
    if device is not None and p.devstate is not None:
        p.devstate.touch(device.id, int(time.time() * 1000))
    return device


def _timeout_ms(request: web.Request) -> int | None:
    """The ``timeout`` query parameter (0: the default); None when it is not a number (a 400)."""
    raw = request.query.get("timeout", "0")
    try:
        ms = int(raw)
    except ValueError:
        return None
    return ms if ms > 0 else DEFAULT_TIMEOUT_MS


async def _expired(timeout_ms: int) -> web.Response:
    """How a long poll ends when nothing came: the session's own timeout is a 408 with no body, but
    Spring's async timeout (30 s) ends a longer one first, as a 503 with a null message (checked live)."""
    if timeout_ms < ASYNC_TIMEOUT_MS:
        return _empty(408)
    body = {"message": None, "errorCode": errors.GENERAL, "status": 503, "timestamp": int(time.time() * 1000)}
    return web.Response(status=503, text=json.dumps(body), content_type="application/json")


def _conversion_error(name: str, raw: str, java_type: str) -> errors.BadRequest:
    """Spring's answer to a path or query value that is not a number (ThingsBoard's JSON 400)."""
    return errors.BadRequest(f"Method parameter '{name}': Failed to convert value of type 'java.lang.String' "
                             f"to required type '{java_type}'; For input string: \"{raw}\"")


def _too_large(request: web.Request) -> web.Response | None:
    """PayloadSizeFilter: an RPC body over 64 KiB is a 413 (a JSON string body), before the token."""
    if (request.content_length or 0) > RPC_MAX_PAYLOAD:
        return web.Response(status=413, text=json.dumps(f"Payload size exceeds the limit of {RPC_MAX_PAYLOAD} bytes"),
                            content_type="application/json")
    return None


def _gson_error(exc: ValueError) -> web.Response:
    """DeviceAuthCallback.onError: a JsonParseException's message is the (plain) body of a 500 —
    Gson's for a syntax error (lenient_json words it as Gson does), JsonConverter's for a bad shape."""
    return web.Response(status=500, text=str(exc))


async def _ingest(request: web.Request, build) -> web.Response:
    device = _device(request)
    if device is None:
        return _empty(401)
    body = await request.read()
    try:
        api.loads(body)  # Gson's parse first: a syntax error has its own answer
    except ValueError as exc:
        return _gson_error(exc)
    try:
        msgs = build(device, body, int(time.time() * 1000))
    except ValueError as exc:  # JsonConverter refused the shape or a value ("Can't parse value: 1")
        return _gson_error(exc)
    if msgs:
        await platform(request).engine.process(msgs)
    return _empty(200)


def _attributes(device, body: bytes, now: int) -> list:
    msg = api.attributes_msg(device, body, now)
    return [msg] if msg is not None else []


@route("POST", P + "/telemetry", "Post time series data on behalf of a device", TAG, body="text", auth=False)
async def post_telemetry(request: web.Request) -> web.Response:
    return await _ingest(request, api.telemetry_msgs)


@route("POST", P + "/attributes", "Post client attributes on behalf of a device", TAG, body="text", auth=False)
async def post_attributes(request: web.Request) -> web.Response:
    return await _ingest(request, _attributes)


@route("GET", P + "/attributes", "Client and shared attributes of a device", TAG, auth=False,
       params=[Param("clientKeys", description="Comma-separated client attribute keys"),
               Param("sharedKeys", description="Comma-separated shared attribute keys")])
async def get_attributes(request: web.Request) -> web.Response:
    device = _device(request)
    if device is None:
        return _empty(401)
    req = {k: request.query[k] for k in ("clientKeys", "sharedKeys") if request.query.get(k)}
    return _json(api.attribute_response(platform(request).store, device.id, api.dumps(req)))


class _LongPoll:
    """A device's HTTP long poll, registered with the MQTT server like a session subscribed to RPC
    requests or attribute updates: the first thing published to it answers the poll."""

    gateway = None

    def __init__(self, device, subs: int) -> None:
        self.device = device
        self.subs = subs
        self.answer: asyncio.Future = asyncio.get_running_loop().create_future()

    def publish(self, topic: str, payload: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result((topic, payload))


async def _long_poll(request: web.Request, subs: int) -> tuple[str, bytes] | web.Response:
    """Wait, as a session with ``subs``, for the first message; a Response when none comes (or the
    request is refused)."""
    device = _device(request)
    if device is None:
        return _empty(401)
    timeout_ms = _timeout_ms(request)
    if timeout_ms is None:
        raise _conversion_error("timeout", request.query["timeout"], "long")
    mqtt = platform(request).mqtt
    poll = _LongPoll(device, subs)
    mqtt.by_device.setdefault(device.id, []).append(poll)
    try:
        if subs & api.SUB_RPC_REQUEST:
            mqtt.rpc.on_subscribed(poll, ["v1/devices/me/rpc/request/+"])  # sends what was waiting
        try:
            return await asyncio.wait_for(asyncio.shield(poll.answer), min(timeout_ms, ASYNC_TIMEOUT_MS) / 1000)
        except asyncio.TimeoutError:
            return await _expired(timeout_ms)
    finally:
        sessions = mqtt.by_device.get(device.id)
        if sessions and poll in sessions:
            sessions.remove(poll)
            if not sessions:
                del mqtt.by_device[device.id]


def _json(body) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), content_type="application/json")


@route("GET", P + "/rpc", "Long-poll for a server-side RPC request", TAG, params=[TIMEOUT_PARAM], auth=False)
async def subscribe_rpc(request: web.Request) -> web.Response:
    got = await _long_poll(request, api.SUB_RPC_REQUEST)
    if isinstance(got, web.Response):
        return got
    topic, payload = got
    return _json({"id": int(topic.rsplit("/", 1)[1]), **json.loads(payload)})


@route("GET", P + "/attributes/updates", "Long-poll for shared-attribute updates", TAG, params=[TIMEOUT_PARAM],
       auth=False)
async def subscribe_attributes(request: web.Request) -> web.Response:
    got = await _long_poll(request, api.SUB_ATTRIBUTES)
    if isinstance(got, web.Response):
        return got
    return _json(json.loads(got[1]))  # {"key": value, …} or {"deleted": [...]}, as over MQTT


@route("POST", P + "/rpc/{requestId}", "Reply to a server-side RPC request", TAG, body="text", auth=False)
async def reply_rpc(request: web.Request) -> web.Response:
    if (refused := _too_large(request)) is not None:
        return refused
    device = _device(request)
    raw_id = request.match_info["requestId"]
    try:
        rid = int(raw_id)
    except ValueError:
        raise _conversion_error("requestId", raw_id, "java.lang.Integer") from None
    if device is None:
        return _empty(401)
    platform(request).mqtt.rpc.on_reply(device.id, rid, await request.read())
    return _empty(200)


@route("POST", P + "/rpc", "Send a client-side RPC request into the rule chain", TAG, body="text", auth=False)
async def client_rpc(request: web.Request) -> web.Response:
    if (refused := _too_large(request)) is not None:
        return refused
    device = _device(request)
    if device is None:
        return _empty(401)
    try:
        body = values.loads(await request.read())
        method, params = body["method"], body["params"]
        if not isinstance(method, str):
            raise TypeError
    except ValueError as exc:
        return _gson_error(exc)
    except (KeyError, TypeError):  # getAsJsonObject / get("method").getAsString() throw: no answer body
        return _empty(500)
    now = int(time.time() * 1000)
    await platform(request).engine.process([api.rpc_msg(device, "0", {"method": method, "params": params}, now)])
    # The embedded rule engine has no node that replies to a device's RPC (ThingsBoard's root chain
    # only logs it too): the request ends as ThingsBoard's does when nothing replies, at its timeout.
    await asyncio.sleep(ASYNC_TIMEOUT_MS / 1000)
    return await _expired(DEFAULT_TIMEOUT_MS)
