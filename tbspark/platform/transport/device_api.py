"""Device API payloads (contract §6.2, §6.5): telemetry and attribute publishes → TbMsgs, attribute
request answers, and the session limits the official client asks for. No socket code here."""

from __future__ import annotations

import json
import re

from tbspark.mqtt.topics import ATTRIBUTES_TOPIC, TELEMETRY_TOPIC
from tbspark.platform import lenient_json, values
from tbspark.platform.rules.msg import POST_ATTRIBUTES, POST_TELEMETRY, TO_SERVER_RPC, TbMsg

TELEMETRY_TOPICS = (TELEMETRY_TOPIC, "v2/t", "v2/t/j")
ATTRIBUTES_TOPICS = (ATTRIBUTES_TOPIC, "v2/a", "v2/a/j")
ATTR_REQUEST_PREFIX = "v1/devices/me/attributes/request/"
ATTR_RESPONSE_PREFIX = "v1/devices/me/attributes/response/"
RPC_REQUEST_PREFIX = "v1/devices/me/rpc/request/"
RPC_RESPONSE_PREFIX = "v1/devices/me/rpc/response/"
# Where devices answer server-side RPC (v1 and the v2 short topics; the longer "j/" one first).
RPC_RESPONSE_PREFIXES = (RPC_RESPONSE_PREFIX, "v2/r/res/j/", "v2/r/res/")

# Subscription bits: what a session has asked to receive.
SUB_ATTRIBUTES = 1
SUB_ATTR_RESPONSE = 2
SUB_RPC_REQUEST = 4
SUB_RPC_RESPONSE = 8
SUB_GW_ATTRIBUTES = 16
SUB_GW_ATTR_RESPONSE = 32
SUB_GW_RPC = 64
SUB_OTHER = 128

# The filters ThingsBoard's processSubscribe accepts (§6.2), and what each one turns on.
ALLOWED_FILTERS = {
    "v1/devices/me/attributes": SUB_ATTRIBUTES, "v2/a": SUB_ATTRIBUTES, "v2/a/j": SUB_ATTRIBUTES,
    "v1/devices/me/attributes/response/+": SUB_ATTR_RESPONSE, "v2/a/res/+": SUB_ATTR_RESPONSE,
    "v2/a/res/j/+": SUB_ATTR_RESPONSE,
    "v1/devices/me/rpc/request/+": SUB_RPC_REQUEST, "v2/r/req/+": SUB_RPC_REQUEST, "v2/r/req/j/+": SUB_RPC_REQUEST,
    "v1/devices/me/rpc/response/+": SUB_RPC_RESPONSE, "v2/r/res/+": SUB_RPC_RESPONSE,
    "v2/r/res/j/+": SUB_RPC_RESPONSE,
    "v1/gateway/attributes": SUB_GW_ATTRIBUTES, "v1/gateway/attributes/response": SUB_GW_ATTR_RESPONSE,
    "v1/gateway/rpc": SUB_GW_RPC,
    "v2/fw/response/+/chunk/+": SUB_OTHER, "v2/sw/response/+/chunk/+": SUB_OTHER,
    "v1/devices/me/claim": SUB_OTHER, "/provision/response": SUB_OTHER, "v1/devices/me/provision/response": SUB_OTHER,
}

_COMPACT = (",", ":")


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=_COMPACT, ensure_ascii=False).encode("utf-8")


def _data_of(kv: dict) -> dict:
    """Typed (kind, value) pairs → message data (JSON kinds back to nested JSON)."""
    return {k: (json.loads(v) if kind == values.JSON else v) for k, (kind, v) in kv.items()}


# Numbers whose spelling matters to ThingsBoard's typing (exponents, > 16 decimals): only payloads
# holding one need the slower spelling-aware parser; everything else parses with the C decoder.
_SPELLING = re.compile(rb"[0-9.][eE][-+0-9]|\.[0-9]{17}|NaN|Infinity")
# What orjson reads differently from the json module: the spellings above, and integers beyond 64 bits
# (orjson turns those into floats). Payloads with neither (nearly all) take orjson when installed.
_NOT_FAST = re.compile(rb"[0-9.][eE][-+0-9]|\.[0-9]{17}|NaN|Infinity|[0-9]{19}")
_I64 = (-(2**63), 2**63 - 1)

try:
    from orjson import JSONDecodeError as _FastError, loads as _fast_loads
except ImportError:  # optional: the json module gives the same results, only slower
    _fast_loads = None


# Value types of a flat object orjson may hand back without the scan above: a number whose spelling
# matters (an exponent, more than 16 decimals, an integer beyond 64 bits) comes out of orjson as a
# float, so an object of only these holds none, and the json module would build the same object.
_PLAIN = frozenset((str, int, bool))


def _plain_floats(obj: dict) -> int:
    """0: only text, integers and booleans (one nested object deep); 1: floats below 1e18 among
    them too; 2: anything else (nulls, lists, deeper objects, huge floats)."""
    floats = 0
    for v in obj.values():  # (a loop: cheaper than _PLAIN.issuperset(map(type, ...)))
        t = type(v)
        if t is str or t is int or t is bool:
            continue
        if t is float:
            if not -1e18 < v < 1e18:
                return 2
            floats = 1
        elif t is dict:
            for w in v.values():
                u = type(w)
                if u is float:
                    if not -1e18 < w < 1e18:
                        return 2
                    floats = 1
                elif u is not str and u is not int and u is not bool:
                    return 2
        else:
            return 2
    return floats


_EXP_BEFORE = frozenset(b"0123456789.")
_EXP_AFTER = frozenset(b"-+0123456789")
_LONG_DECIMALS = re.compile(rb"\.[0-9]{17}")


def _spelled(payload: bytes) -> bool:
    """Whether a number in the text has an exponent (``4.2e1``) or 17+ decimals: what
    ``_SPELLING`` looks for, found with a few ``find`` calls instead of a regex over every byte."""
    n = len(payload)
    for ch in (b"e", b"E"):
        i = payload.find(ch, 1)
        while i > 0:
            if payload[i - 1] in _EXP_BEFORE and i + 1 < n and payload[i + 1] in _EXP_AFTER:
                return True
            i = payload.find(ch, i + 1)
    return _LONG_DECIMALS.search(payload) is not None


def loads(payload: bytes):
    if _fast_loads is not None:
        try:
            obj = _fast_loads(payload)
        except _FastError:
            pass  # the json module decides (BOMs, lone surrogates, depth, NaN) and words the error
        else:
            # The usual telemetry objects — flat, or {"ts": …, "values": {flat}} — need no regex scan
            # of their text: without floats nothing in them can be spelled in a way that matters (see
            # _PLAIN); with floats, only an exponent or 17+ decimals can (_spelled), or a float that
            # was an integer too large for orjson (>= 1e18). Nulls and deeper nesting: the scan.
            if type(obj) is dict:
                floats = _plain_floats(obj)
                if floats == 0 or (floats == 1 and not _spelled(payload)):
                    return obj
            if not _NOT_FAST.search(payload):
                return obj
    if _SPELLING.search(payload):
        return values.loads(payload)  # (checks for lone surrogates itself)
    try:
        obj = json.loads(payload)
    except RecursionError:  # "[[[[…" nested thousands deep (found by tests/fuzz): malformed, not a crash
        raise ValueError("JSON nested too deeply") from None
    except ValueError:  # not strict JSON: ThingsBoard's Gson parses leniently (off the hot path)
        obj = lenient_json.loads(payload)
    if b"\\u" in payload:  # orjson refuses lone surrogates; the json module decodes them
        values.check_text(obj)
    return obj


def _flat_data(obj: dict) -> dict | None:
    """Typed message data of a flat telemetry object (§5.5), or None when it needs the full parser
    (a {ts, values} object, a null, an out-of-range integer)."""
    if "ts" in obj and "values" in obj:
        return None
    out = {}
    parsable = values.PARSABLE
    for k, v in obj.items():
        t = type(v)
        if t is str:
            if len(v) < 19 and v.isdigit() and v.isascii():  # "33": a LONG, without the regex
                out[k] = int(v)
            else:
                out[k] = values.numeric_from_string(v)[1] if parsable(v) is not None else v
        elif t is float or t is bool or (t is int and _I64[0] <= v <= _I64[1]) or t is dict or t is list:
            out[k] = v
        else:
            return None
    return out


# The last receive time and its text: the messages of a busy second share a few thousand
# milliseconds, and the text (metadata "ts") is then made once per millisecond, not per message.
_last_ts: tuple[int, str] = (0, "0")


def _ts_text(now_ms: int) -> str:
    global _last_ts
    text = str(now_ms)
    _last_ts = (now_ms, text)
    return text


def telemetry_msgs(device, payload: bytes, now_ms: int) -> list[TbMsg]:
    """One POST_TELEMETRY_REQUEST per payload element (arrays are not merged, §6.5).
    Raises ValueError (values.PayloadError included) on malformed JSON or a wrong shape."""
    obj = loads(payload)
    origin = ("DEVICE", device.id)
    name, dtype = device.name, device.type
    # Fast path: the flat object real devices send (or tb-mqtt-client's one-element array of it).
    flat = obj[0] if type(obj) is list and len(obj) == 1 and type(obj[0]) is dict else obj
    if type(flat) is dict:
        if "ts" in flat and "values" in flat:
            # The device-timestamped form {"ts": 1700000000000, "values": {...flat...}}: the same
            # fast path for its values when ts is an integer (anything else: the full parser).
            ts, vals = flat["ts"], flat["values"]
            data = (_flat_data(vals) if type(ts) is int and type(vals) is dict and _I64[0] <= ts <= _I64[1]
                    else None)
            ts_text = str(ts) if data else None
        else:
            data = _flat_data(flat)
            last = _last_ts
            ts_text = (last[1] if last[0] == now_ms else _ts_text(now_ms)) if data else None
        if data is not None:
            if not data:
                return []
            # ThingsBoard's key rules, O(1) here: only a payload longer than the limit can hold a
            # key longer than it; an empty key is one dict lookup.
            if len(payload) > values.MAX_KEY_LENGTH or "" in data:
                for k in data:
                    values.check_key(k)
            return [TbMsg(POST_TELEMETRY, origin, data, {"deviceName": name, "deviceType": dtype, "ts": ts_text},
                          device.tenant_id, device.customer_id, None, device.profile_id, now_ms)]
    out = []
    for ts, kv in values.parse_telemetry(obj, now_ms):
        out.append(TbMsg(POST_TELEMETRY, origin, _data_of(kv),
                         {"deviceName": name, "deviceType": dtype, "ts": str(ts)},
                         device.tenant_id, device.customer_id, None, device.profile_id, now_ms))
    return out


def attributes_msg(device, payload: bytes, now_ms: int) -> TbMsg | None:
    kv = values.parse_attributes(loads(payload))
    if not kv:
        return None
    return TbMsg(POST_ATTRIBUTES, ("DEVICE", device.id), _data_of(kv),
                 {"deviceName": device.name, "deviceType": device.type, "notifyDevice": "false",
                  "ts": str(now_ms)},
                 device.tenant_id, device.customer_id, None, device.profile_id, now_ms)


def rpc_msg(device, request_id: str, body, now_ms: int) -> TbMsg:
    return TbMsg(TO_SERVER_RPC, ("DEVICE", device.id), body,
                 {"deviceName": device.name, "deviceType": device.type, "requestId": request_id,
                  "ts": str(now_ms)},
                 device.tenant_id, device.customer_id, None, device.profile_id, now_ms)


def _keys(text) -> list[str] | None:
    if text is None:
        return None
    if isinstance(text, list):
        return [str(k).strip() for k in text if str(k).strip()]
    return [k.strip() for k in str(text).split(",") if k.strip()]


def attribute_response(store, device_id: str, payload: bytes) -> dict:
    """``{"clientKeys":"a,b","sharedKeys":"c"}`` → ``{"client":{…},"shared":{…}}``; no keys at all
    asks for every client and shared attribute; empty sections are omitted (§6.2)."""
    req = loads(payload) if payload.strip() else {}
    if not isinstance(req, dict):
        raise values.PayloadError("attribute request must be a JSON object")
    client, shared = _keys(req.get("clientKeys")), _keys(req.get("sharedKeys"))
    if client is None and shared is None:
        client_found = store.get_attributes("DEVICE", device_id, "CLIENT_SCOPE", None)
        shared_found = store.get_attributes("DEVICE", device_id, "SHARED_SCOPE", None)
    else:
        client_found = store.get_attributes("DEVICE", device_id, "CLIENT_SCOPE", client) if client else {}
        shared_found = store.get_attributes("DEVICE", device_id, "SHARED_SCOPE", shared) if shared else {}
    out = {}
    if client_found:
        out["client"] = {k: values.render_typed(e[0], e[1]) for k, e in client_found.items()}
    if shared_found:
        out["shared"] = {k: values.render_typed(e[0], e[1]) for k, e in shared_found.items()}
    return out


def session_limits(max_payload: int, gateway: bool) -> dict:
    """Answer to the getSessionLimits client RPC (§6.6): no rate limits configured."""
    limits = {"maxPayloadSize": max_payload, "maxInflightMessages": 100,
              "rateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""}}
    if gateway:
        limits["gatewayRateLimits"] = {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""}
    return limits
