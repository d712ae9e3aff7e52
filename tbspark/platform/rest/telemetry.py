"""/api/plugins/telemetry: time series and attributes, every write and read form of §5.

Bodies are read as text whatever the Content-Type (tb-rest-client sends text/plain), and validation
errors are the telemetry controller's bare strings; a bad entity type or UUID is a JSON 400.
"""

from __future__ import annotations

import time

from aiohttp import web

from tbspark.platform import errors, events, values
from tbspark.platform.rest.common import (
    PRINCIPAL_KEY, Param, ok_empty, ok_json, parse_uuid, platform, q_bool, q_int, q_keys, route, stored,
)
from tbspark.platform.store import intervals
from tbspark.platform.store.telemetry import AGGREGATIONS

P = "/api/plugins/telemetry"
ENTITY_TYPES = {"TENANT", "CUSTOMER", "USER", "DASHBOARD", "ASSET", "DEVICE", "ALARM", "RULE_CHAIN", "RULE_NODE",
                "ENTITY_VIEW", "WIDGETS_BUNDLE", "WIDGET_TYPE", "TENANT_PROFILE", "DEVICE_PROFILE", "ASSET_PROFILE",
                "API_USAGE_STATE", "TB_RESOURCE", "OTA_PACKAGE", "EDGE", "RPC", "QUEUE", "NOTIFICATION_TARGET",
                "NOTIFICATION_TEMPLATE", "NOTIFICATION_REQUEST", "NOTIFICATION", "NOTIFICATION_RULE"}
SCOPES = ("CLIENT_SCOPE", "SERVER_SCOPE", "SHARED_SCOPE")
WRITABLE_SCOPES = ("SERVER_SCOPE", "SHARED_SCOPE")
_TITLE = {"DEVICE": "Device", "ASSET": "Asset", "TENANT": "Tenant", "CUSTOMER": "Customer", "USER": "User"}

HISTORY_PARAMS = [
    Param("keys", description="Comma-separated keys (all keys when absent)"),
    Param("startTs", "integer", True, "Start of the range, epoch ms (inclusive)"),
    Param("endTs", "integer", True, "End of the range, epoch ms (exclusive)"),
    Param("interval", "integer", description="Aggregation bucket in ms (0 = no aggregation)"),
    Param("intervalType", enum=["MILLISECONDS", "WEEK", "WEEK_ISO", "MONTH", "QUARTER"],
          description="Calendar buckets (WEEK = Sunday–Saturday, WEEK_ISO = Monday–Sunday) instead of interval"),
    Param("timeZone", description="Zone of the calendar buckets, e.g. Europe/Berlin (default: the server's)"),
    Param("limit", "integer", description="Max points per key when agg=NONE (default 100)"),
    Param("agg", enum=list(AGGREGATIONS)),
    Param("orderBy", enum=["ASC", "DESC"]),
    Param("useStrictDataTypes", "boolean", description="Native JSON types instead of strings"),
]


def _entity(request: web.Request, entity_type: str, raw_id: str) -> tuple[str, str]:
    """(entity type, uuid) of an entity the caller owns; TB's errors otherwise."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise errors.AuthFailed()
    if entity_type not in ENTITY_TYPES:
        raise errors.BadRequest(f"No enum constant org.thingsboard.server.common.data.EntityType.{entity_type}")
    store = platform(request).store
    # Fast path: a known device id as ThingsBoard prints it (canonical uuid) needs no parsing.
    if entity_type == "DEVICE":
        hit = store.device_by_id(raw_id)
        if hit is not None and hit.tenant_id == principal.tenant_id:
            return entity_type, raw_id
    eid = parse_uuid(raw_id)
    found = None
    if entity_type == "DEVICE":
        found = store.device_by_id(eid)
    elif entity_type == "ASSET":
        found = store.asset_by_id(eid)
    elif entity_type == "TENANT":
        found = store.tenants.get(eid)
        if found is not None and found.id != principal.tenant_id:
            found = None
    if found is not None and entity_type != "TENANT" and found.tenant_id != principal.tenant_id:
        found = None
    if found is None:
        title = _TITLE.get(entity_type, entity_type.replace("_", " ").capitalize())
        raise errors.PlainTextError(f"{title} with requested id wasn't found!", status=404)
    return entity_type, eid


def _now() -> int:
    return int(time.time() * 1000)


# -- writes -----------------------------------------------------------------------------------------

async def _save_timeseries(request: web.Request, entity_type: str, raw_id: str, ttl_s: int = 0) -> web.Response:
    etype, eid = _entity(request, entity_type, raw_id)
    try:
        text = await request.text()  # UnicodeDecodeError (a ValueError) on bytes that are not UTF-8
        obj = values.loads(text)  # (a lone surrogate in the text is a ValueError too)
    except ValueError:
        raise errors.PlainTextError("Unable to parse time series payload: Invalid JSON body!") from None
    try:
        parsed = values.parse_telemetry(obj, _now(), skip_nulls=False)
    except values.ValidationError as exc:  # KvUtils.validate's DataValidationException: its bare message
        raise errors.PlainTextError(str(exc)) from None
    except values.PayloadError as exc:
        raise errors.PlainTextError(f"Unable to parse time series payload. Invalid JSON body: {exc}") from None
    entries = [(ts, k, kind, v) for ts, kv in parsed for k, (kind, v) in kv.items()]
    if not entries:
        raise errors.PlainTextError("No time series data found in request body!")
    await stored(platform(request).store.save_timeseries(etype, eid, entries, batch=False, ttl_s=ttl_s))
    _post_event(request, etype, eid, lambda ent, user: events.timeseries_updated_msg(etype, ent, entries, user))
    return ok_empty()


def _post_event(request: web.Request, etype: str, eid: str, build) -> None:
    """After a save through the API: ThingsBoard's entity action message into the entity's chain."""
    p = platform(request)
    if p.devstate is None:
        return
    store = p.store
    entity = store.device_by_id(eid) if etype == "DEVICE" else store.asset_by_id(eid) if etype == "ASSET" else None
    if entity is not None:
        principal = request.get(PRINCIPAL_KEY)
        p.devstate.post(build(entity, principal.user if principal is not None else None))


@route("POST", P + "/{entityType}/{entityId}/timeseries/{scope}", "Save time series (scope is ignored)",
       "telemetry", body="text")
async def save_timeseries(request: web.Request) -> web.Response:
    m = request.match_info
    return await _save_timeseries(request, m["entityType"], m["entityId"])


@route("POST", P + "/{entityType}/{entityId}/timeseries/{scope}/{ttl}", "Save time series with a TTL (seconds)",
       "telemetry", body="text")
async def save_timeseries_ttl(request: web.Request) -> web.Response:
    m = request.match_info
    try:
        ttl_s = int(m["ttl"])
    except ValueError:
        raise errors.BadRequest(f"Method parameter 'ttl': Failed to convert value of type 'java.lang.String' to "
                                f"required type 'java.lang.Long'; For input string: \"{m['ttl']}\"") from None
    # Points expire ttl seconds after the save, as on ThingsBoard with Cassandra (0: kept).
    return await _save_timeseries(request, m["entityType"], m["entityId"], max(ttl_s, 0))


async def _save_attributes(request: web.Request, entity_type: str, raw_id: str, scope: str) -> web.Response:
    etype, eid = _entity(request, entity_type, raw_id)
    if scope not in SCOPES:  # Spring cannot convert the path variable to AttributeScope (checked live)
        raise errors.BadRequest(
            "Method parameter 'scope': Failed to convert value of type 'java.lang.String' to required type "
            "'org.thingsboard.server.common.data.AttributeScope'; Failed to convert from type [java.lang.String] "
            "to type [@io.swagger.v3.oas.annotations.Parameter @org.springframework.web.bind.annotation.PathVariable "
            f"org.thingsboard.server.common.data.AttributeScope] for value [{scope}]")
    if scope not in WRITABLE_SCOPES:
        raise errors.PlainTextError(f"Invalid scope: {scope}")
    try:
        text = await request.text()  # UnicodeDecodeError (a ValueError) on bytes that are not UTF-8
        obj = values.loads(text) if text.strip() else None
    except ValueError:
        raise errors.PlainTextError("Invalid JSON") from None
    if obj is None:
        raise errors.PlainTextError("No attributes data found in request body!")
    if not isinstance(obj, dict):
        raise errors.PlainTextError("Request is not a JSON object")
    if not obj:
        raise errors.PlainTextError("No attributes data found in request body!")
    if any(not k.strip() for k in obj):
        raise errors.PlainTextError("Key cannot be blank")
    try:
        typed = values.parse_attributes(obj, skip_nulls=False)
    except values.ValidationError as exc:  # KvUtils.validate: 400 with its bare message (live)
        raise errors.PlainTextError(str(exc)) from None
    except values.PayloadError as exc:  # JsonConverter's exception escapes the controller: a 500 (live)
        raise errors.PlatformError(str(exc)) from None
    await stored(platform(request).store.save_attributes(etype, eid, scope, typed, _now()))
    _post_event(request, etype, eid, lambda ent, user: events.attributes_updated_msg(etype, ent, scope, typed, user))
    devstate = platform(request).devstate
    if devstate is not None and etype == "DEVICE" and scope == "SERVER_SCOPE":
        dev = platform(request).store.device_by_id(eid)
        if dev is not None:
            devstate.on_server_attributes(dev, typed)  # inactivityTimeout takes effect at once
    return ok_empty()


@route("POST", P + "/{entityType}/{entityId}/attributes/{scope}", "Save attributes (SERVER_SCOPE, SHARED_SCOPE)",
       "telemetry", body="text")
async def save_attributes_v2(request: web.Request) -> web.Response:
    m = request.match_info
    return await _save_attributes(request, m["entityType"], m["entityId"], m["scope"])


@route("POST", P + "/{entityType}/{entityId}/{scope}", "Save attributes (V1 path)", "telemetry", body="text")
async def save_attributes_v1(request: web.Request) -> web.Response:
    m = request.match_info
    return await _save_attributes(request, m["entityType"], m["entityId"], m["scope"])


@route("POST", P + "/{deviceId}/{scope}", "Save device attributes (device shortcut)", "telemetry", body="text")
async def save_device_attributes(request: web.Request) -> web.Response:
    m = request.match_info
    return await _save_attributes(request, "DEVICE", m["deviceId"], m["scope"])


async def _delete_attributes(request: web.Request, entity_type: str, raw_id: str, scope: str) -> web.Response:
    etype, eid = _entity(request, entity_type, raw_id)
    if scope not in SCOPES:
        raise errors.PlainTextError(f"Invalid scope: {scope}")
    keys = q_keys(request)
    if not keys:
        raise errors.BadRequest("Required request parameter 'keys' for method parameter type String is not present")
    await stored(platform(request).store.delete_attributes(eid, scope, keys))
    return ok_empty()


@route("DELETE", P + "/{entityType}/{entityId}/timeseries/delete", "Delete time series keys", "telemetry",
       params=[Param("keys", required=True), Param("deleteAllDataForKeys", "boolean")])
async def delete_timeseries(request: web.Request) -> web.Response:
    m = request.match_info
    etype, eid = _entity(request, m["entityType"], m["entityId"])
    keys = q_keys(request)
    if not keys:
        raise errors.BadRequest("Required request parameter 'keys' for method parameter type String is not present")
    await stored(platform(request).store.delete_timeseries(eid, keys))
    return ok_empty()


@route("DELETE", P + "/{entityType}/{entityId}/{scope}", "Delete attributes", "telemetry",
       params=[Param("keys", required=True)])
async def delete_attributes(request: web.Request) -> web.Response:
    m = request.match_info
    return await _delete_attributes(request, m["entityType"], m["entityId"], m["scope"])


@route("DELETE", P + "/{deviceId}/{scope}", "Delete device attributes (device shortcut)", "telemetry",
       params=[Param("keys", required=True)])
async def delete_device_attributes(request: web.Request) -> web.Response:
    m = request.match_info
    return await _delete_attributes(request, "DEVICE", m["deviceId"], m["scope"])


# -- reads ------------------------------------------------------------------------------------------

async def _history(request: web.Request, eid: str, keys: list[str] | None) -> web.Response:
    start = q_int(request, "startTs", required=True)
    end = q_int(request, "endTs", required=True)
    interval = q_int(request, "interval", 0)
    limit = q_int(request, "limit", 100)
    if limit is None or limit < 1:
        raise errors.BadRequest("Parameter 'limit' must be at least 1")
    agg = (request.query.get("agg") or "NONE").upper()
    if agg not in AGGREGATIONS:
        raise errors.BadRequest(f"No enum constant org.thingsboard.server.common.data.kv.Aggregation.{agg}")
    order = (request.query.get("orderBy") or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise errors.BadRequest(f"Unsupported sort order '{order}'! Only 'ASC' or 'DESC' types are allowed.")
    itype = request.query.get("intervalType") or "MILLISECONDS"
    if itype not in intervals.INTERVAL_TYPES:
        raise errors.BadRequest(f"Method parameter 'intervalType': Failed to convert value of type "
                                f"'java.lang.String' to required type "
                                f"'org.thingsboard.server.common.data.kv.IntervalType'; Failed to convert from type "
                                f"[java.lang.String] to type [@org.springframework.web.bind.annotation.RequestParam "
                                f"org.thingsboard.server.common.data.kv.IntervalType] for value [{itype}]")
    tz = intervals.zone(request.query.get("timeZone")) if itype != "MILLISECONDS" else None
    if interval < 0:
        raise errors.BadRequest("Parameter 'interval' must not be negative")
    strict = q_bool(request, "useStrictDataTypes")
    if keys is not None and not keys:
        return ok_json({})
    data = await platform(request).store.history(eid, keys, start, end, interval, agg, limit, order, itype, tz)
    return ok_json({k: [{"ts": ts, "value": values.render(kind, v, strict)} for ts, kind, v in pts]
                    for k, pts in data.items()})


@route("GET", P + "/{entityType}/{entityId}/values/timeseries",
       "Latest values; with startTs and endTs, history (TB ≤ 4.3.1.1 spelling)", "telemetry",
       params=[Param("keys"), Param("useStrictDataTypes", "boolean"), *HISTORY_PARAMS[1:-1]])
async def get_timeseries(request: web.Request) -> web.Response:
    m = request.match_info
    _, eid = _entity(request, m["entityType"], m["entityId"])
    keys = q_keys(request)
    if "startTs" in request.query and "endTs" in request.query:
        return await _history(request, eid, keys)
    strict = q_bool(request, "useStrictDataTypes")
    latest = platform(request).store.latest(eid, keys)
    if keys is None:
        keys = sorted(latest)
    now = _now()
    out = {}
    for k in keys:
        if k in latest:
            ts, kind, v = latest[k]
            out[k] = [{"ts": ts, "value": values.render(kind, v, strict)}]
        else:
            out[k] = [{"ts": now, "value": None}]
    return ok_json(out)


@route("GET", P + "/{entityType}/{entityId}/values/timeseries/history", "Time-series history (TB ≥ 4.3.1.2)",
       "telemetry", params=HISTORY_PARAMS)
async def get_history(request: web.Request) -> web.Response:
    m = request.match_info
    _, eid = _entity(request, m["entityType"], m["entityId"])
    return await _history(request, eid, q_keys(request))


def _attr_list(store, etype: str, eid: str, scopes: tuple[str, ...], keys: list[str] | None) -> list[dict]:
    out = []
    for scope in scopes:
        for k, (kind, v, ts) in store.get_attributes(etype, eid, scope, keys).items():
            out.append({"lastUpdateTs": ts, "key": k, "value": values.render_typed(kind, v)})
    return out


@route("GET", P + "/{entityType}/{entityId}/values/attributes", "Attributes of all scopes", "telemetry",
       params=[Param("keys")])
async def get_attributes(request: web.Request) -> web.Response:
    m = request.match_info
    etype, eid = _entity(request, m["entityType"], m["entityId"])
    return ok_json(_attr_list(platform(request).store, etype, eid, SCOPES, q_keys(request)))


@route("GET", P + "/{entityType}/{entityId}/values/attributes/{scope}", "Attributes of one scope", "telemetry",
       params=[Param("keys")])
async def get_attributes_by_scope(request: web.Request) -> web.Response:
    m = request.match_info
    etype, eid = _entity(request, m["entityType"], m["entityId"])
    if m["scope"] not in SCOPES:
        raise errors.BadRequest(f"Invalid attribute scope: {m['scope']}")
    return ok_json(_attr_list(platform(request).store, etype, eid, (m["scope"],), q_keys(request)))


@route("GET", P + "/{entityType}/{entityId}/keys/timeseries", "Time-series keys", "telemetry")
async def timeseries_keys(request: web.Request) -> web.Response:
    m = request.match_info
    _, eid = _entity(request, m["entityType"], m["entityId"])
    return ok_json(platform(request).store.timeseries_keys(eid))


@route("GET", P + "/{entityType}/{entityId}/keys/attributes", "Attribute keys of all scopes", "telemetry")
async def attribute_keys(request: web.Request) -> web.Response:
    m = request.match_info
    _, eid = _entity(request, m["entityType"], m["entityId"])
    return ok_json(platform(request).store.attribute_keys(eid))


@route("GET", P + "/{entityType}/{entityId}/keys/attributes/{scope}", "Attribute keys of one scope", "telemetry")
async def attribute_keys_by_scope(request: web.Request) -> web.Response:
    m = request.match_info
    _, eid = _entity(request, m["entityType"], m["entityId"])
    if m["scope"] not in SCOPES:
        raise errors.BadRequest(f"Invalid attribute scope: {m['scope']}")
    return ok_json(platform(request).store.attribute_keys(eid, m["scope"]))
