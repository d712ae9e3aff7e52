"""The scripted exchanges. Each is ``fn(t: Target, tr: Transcript)``: it talks to one server and
records, step by step, what a user of that server would see. Entities are named ``tbdiff-<u>-…``
(``<u>`` unique per run) and deleted at the end; nothing else on a shared ThingsBoard is touched.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

import requests

from tests.differential.harness import T0, MqttDevice, Target, Transcript, wait_for

EXCHANGES: dict[str, Callable[[Target, Transcript], None]] = {}
NEEDS_KAFKA = {"chain_to_kafka"}  # exchanges whose target needs ``kafka_bootstrap``


def exchange(fn):
    EXCHANGES[fn.__name__] = fn
    return fn


# -- helpers -----------------------------------------------------------------------------------------

def keys_of(body) -> list:
    return sorted(body) if isinstance(body, dict) else body


def device_view(d: dict) -> dict:
    return {"name": d.get("name"), "type": d.get("type"), "label": d.get("label"),
            "id_type": (d.get("id") or {}).get("entityType"), "fields": sorted(d)}


def make_device(t: Target, s: requests.Session, name: str, token: str | None = None, dtype: str = "default",
                gateway: bool = False) -> dict:
    body = {"name": name, "type": dtype}
    if gateway:
        body["additionalInfo"] = {"gateway": True}
    params = {"accessToken": token} if token else None
    r = s.post(f"{t.url}/api/device", json=body, params=params, timeout=30)
    r.raise_for_status()
    return r.json()


def delete_devices(t: Target, s: requests.Session, prefix: str) -> None:
    r = s.get(f"{t.url}/api/tenant/devices", params={"pageSize": 1000, "page": 0, "textSearch": prefix}, timeout=30)
    for d in r.json().get("data", []) if r.ok else []:
        if d["name"].startswith(prefix):
            s.delete(f"{t.url}/api/device/{d['id']['id']}", timeout=30)


def ts_url(t: Target, entity: dict) -> str:
    return f"{t.url}/api/plugins/telemetry/{entity['id']['entityType']}/{entity['id']['id']}"


def latest(t: Target, s: requests.Session, dev: dict, keys: str, strict: bool = True) -> dict:
    r = s.get(f"{ts_url(t, dev)}/values/timeseries", params={"keys": keys, "useStrictDataTypes": strict},
              timeout=30)
    return r.json() if r.ok else {"status": r.status_code}


def latest_values(got: dict) -> dict:
    """{key: [value, ts-is-now-or-fixed]}: the latest point of each key."""
    return {k: v[0]["value"] for k, v in sorted(got.items())} if isinstance(got, dict) else got


def attributes(t: Target, s: requests.Session, dev: dict, scope: str, keys: str | None = None) -> list | dict:
    params = {"keys": keys} if keys else None
    r = s.get(f"{ts_url(t, dev)}/values/attributes/{scope}", params=params, timeout=30)
    if not r.ok:
        return {"status": r.status_code}
    return sorted(({"key": a["key"], "value": a["value"]} for a in r.json()), key=lambda a: a["key"])


def without(items: list, *keys: str) -> list:
    """Attribute lists minus the keys ThingsBoard adds on its own (device state: ``active`` …)."""
    return [a for a in items if a["key"] not in keys] if isinstance(items, list) else items


def token_of(t: Target, s: requests.Session, dev: dict) -> str:
    return s.get(f"{t.url}/api/device/{dev['id']['id']}/credentials", timeout=30).json()["credentialsId"]


# -- REST: auth ----------------------------------------------------------------------------------------

@exchange
def auth(t: Target, tr: Transcript) -> None:
    url = t.url
    r = requests.post(f"{url}/api/auth/login", json={"username": t.username, "password": t.password}, timeout=30)
    pair = tr.http("login", r, keys_of)
    r = requests.post(f"{url}/api/auth/login", json={"username": t.username, "password": "wrong"}, timeout=30)
    tr.http("login wrong password", r)
    r = requests.post(f"{url}/api/auth/login", json={"username": f"nobody-{tr.unique}@example.com",
                                                     "password": "x"}, timeout=30)
    tr.http("login unknown user", r)
    tr.http("login by GET", requests.get(f"{url}/api/auth/login", timeout=30))
    r = requests.post(f"{url}/api/auth/token", json={"refreshToken": pair["refreshToken"]}, timeout=30)
    tr.http("refresh", r, keys_of)
    tr.http("refresh with garbage", requests.post(f"{url}/api/auth/token", json={"refreshToken": "garbage"},
                                                  timeout=30))
    tr.http("refresh with access token", requests.post(f"{url}/api/auth/token",
                                                       json={"refreshToken": pair["token"]}, timeout=30))
    tr.http("refresh without body", requests.post(f"{url}/api/auth/token", json={}, timeout=30))
    h = {"X-Authorization": f"Bearer {pair['token']}"}
    tr.http("current user", requests.get(f"{url}/api/auth/user", headers=h, timeout=30),
            lambda u: {"email": u["email"], "authority": u["authority"]})
    tr.http("garbage token", requests.get(f"{url}/api/auth/user", headers={"X-Authorization": "Bearer x.y"},
                                          timeout=30))
    tr.http("no token", requests.get(f"{url}/api/auth/user", timeout=30))


# -- REST: devices -----------------------------------------------------------------------------------

@exchange
def device_crud(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    name = f"tbdiff-{u}-crud"
    r = s.post(f"{t.url}/api/device", json={"name": name, "type": f"tbdiff-{u}-type", "label": "L1"},
               params={"accessToken": f"TBDIFF{u}"}, timeout=30)
    dev = tr.http("create", r, device_view)
    did = dev["id"]["id"]
    r = s.get(f"{t.url}/api/device/{did}", timeout=30)
    tr.http("get by id", r, lambda d: {**device_view(d), "same_id": d["id"]["id"] == did})
    r = s.get(f"{t.url}/api/tenant/devices", params={"deviceName": name}, timeout=30)
    tr.http("get by name", r, lambda d: {"same_id": d["id"]["id"] == did})
    r = s.get(f"{t.url}/api/device/info/{did}", timeout=30)
    tr.http("info", r, lambda d: {"deviceProfileName": d.get("deviceProfileName"), "fields": sorted(d)})
    tr.http("duplicate name", s.post(f"{t.url}/api/device", json={"name": name, "type": "default"}, timeout=30))
    tr.http("missing name", s.post(f"{t.url}/api/device", json={"type": "default"}, timeout=30))
    dev["label"] = "changed"
    tr.http("update", s.post(f"{t.url}/api/device", json=dev, timeout=30),
            lambda d: {"label": d["label"], "same_id": d["id"]["id"] == did})
    tr.http("update stale version", s.post(f"{t.url}/api/device", json=dev, timeout=30),
            lambda d: {"label": d["label"]})
    tr.http("types", s.get(f"{t.url}/api/device/types", timeout=30),
            lambda ts: sorted(x["type"] for x in ts if x["type"].startswith(f"tbdiff-{u}")))
    tr.http("delete", s.delete(f"{t.url}/api/device/{did}", timeout=30))
    tr.http("get deleted", s.get(f"{t.url}/api/device/{did}", timeout=30))
    tr.http("get unknown", s.get(f"{t.url}/api/device/11111111-2222-3333-4444-555555555555", timeout=30))
    tr.http("get bad uuid", s.get(f"{t.url}/api/device/not-a-uuid", timeout=30))
    tr.http("name not found", s.get(f"{t.url}/api/tenant/devices", params={"deviceName": f"{name}-nope"},
                                    timeout=30))


@exchange
def device_paging(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    dtype = f"tbdiff-{u}-pg"
    for i in (3, 0, 4, 1, 2):
        make_device(t, s, f"tbdiff-{u}-pg-{i}", dtype=dtype)
    base = {"type": dtype}

    def names(body):
        return {"names": [d["name"] for d in body["data"]], "totalPages": body["totalPages"],
                "totalElements": body["totalElements"], "hasNext": body["hasNext"], "fields": sorted(body)}

    def unordered(body):
        return {**names(body), "names": sorted(d["name"] for d in body["data"])}

    url = f"{t.url}/api/tenant/devices"
    for page in (0, 1, 2, 3):
        tr.http(f"name ASC page {page}", s.get(url, params={**base, "pageSize": 2, "page": page,
                                                              "sortProperty": "name", "sortOrder": "ASC"},
                                               timeout=30), names)
    tr.http("name DESC", s.get(url, params={**base, "pageSize": 10, "page": 0, "sortProperty": "name",
                                            "sortOrder": "DESC"}, timeout=30), names)
    tr.http("createdTime DESC", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                   "sortProperty": "createdTime", "sortOrder": "DESC"},
                                      timeout=30), names)
    tr.http("sortProperty without order", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                             "sortProperty": "name"}, timeout=30), names)
    tr.http("no sort", s.get(url, params={**base, "pageSize": 10, "page": 0}, timeout=30), unordered)
    tr.http("sortOrder UP without sortProperty", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                                    "sortOrder": "UP"}, timeout=30), unordered)
    tr.http("sortOrder UP with sortProperty", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                                 "sortProperty": "name", "sortOrder": "UP"},
                                                    timeout=30), names)
    tr.http("sortOrder lower-case desc", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                            "sortProperty": "name", "sortOrder": "desc"},
                                               timeout=30), names)
    tr.http("unknown sortProperty", s.get(url, params={**base, "pageSize": 10, "page": 0,
                                                       "sortProperty": "nope"}, timeout=30), names)
    tr.http("textSearch", s.get(url, params={**base, "pageSize": 10, "page": 0, "textSearch": f"{u}-PG-3"},
                                timeout=30), unordered)
    tr.http("pageSize 0", s.get(url, params={**base, "pageSize": 0, "page": 0}, timeout=30), unordered)
    tr.http("page -1", s.get(url, params={**base, "pageSize": 2, "page": -1}, timeout=30), unordered)
    tr.http("pageSize not a number", s.get(url, params={**base, "pageSize": "x", "page": 0}, timeout=30),
            unordered)
    tr.http("infos page", s.get(f"{t.url}/api/tenant/deviceInfos",
                                params={**base, "pageSize": 2, "page": 0, "sortProperty": "name",
                                        "sortOrder": "ASC"}, timeout=30), names)
    delete_devices(t, s, f"tbdiff-{u}-")


@exchange
def malformed_bodies(t: Target, tr: Transcript) -> None:
    s = t.session()
    url = f"{t.url}/api/device"
    tr.http("broken JSON", s.post(url, data="{broken", headers={"Content-Type": "application/json"}, timeout=30))
    tr.http("truncated JSON", s.post(url, data='{"name": "x"', headers={"Content-Type": "application/json"},
                                     timeout=30))
    tr.http("empty body", s.post(url, data="", headers={"Content-Type": "application/json"}, timeout=30))
    tr.http("JSON array", s.post(url, data="[1]", headers={"Content-Type": "application/json"}, timeout=30))
    tr.http("text/plain", s.post(url, data='{"name": "x"}', headers={"Content-Type": "text/plain"}, timeout=30))


@exchange
def device_credentials(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    dev = make_device(t, s, f"tbdiff-{u}-cred")
    other = make_device(t, s, f"tbdiff-{u}-cred2", token=f"TBDIFF2{u}")
    r = s.get(f"{t.url}/api/device/{dev['id']['id']}/credentials", timeout=30)
    creds = tr.http("get", r, lambda c: {"credentialsType": c["credentialsType"], "fields": sorted(c),
                                         "token_len": len(c["credentialsId"]),
                                         "token_alnum": c["credentialsId"].isalnum(),
                                         "credentialsValue": c.get("credentialsValue")})
    creds["credentialsId"] = f"TBDIFF3{u}"
    tr.http("update token", s.post(f"{t.url}/api/device/credentials", json=creds, timeout=30),
            lambda c: {"credentialsId": c["credentialsId"]})
    tr.http("read back", s.get(f"{t.url}/api/device/{dev['id']['id']}/credentials", timeout=30),
            lambda c: {"credentialsId": c["credentialsId"]})
    again = s.get(f"{t.url}/api/device/{dev['id']['id']}/credentials", timeout=30).json()
    again["credentialsId"] = f"TBDIFF2{u}"
    tr.http("token taken by another device", s.post(f"{t.url}/api/device/credentials", json=again, timeout=30))
    mqtt = MqttDevice(t, f"TBDIFF3{u}")
    tr.add("mqtt with new token", connect=mqtt.connect())
    mqtt.close()
    tr.http("unknown device", s.get(f"{t.url}/api/device/11111111-2222-3333-4444-555555555555/credentials",
                                    timeout=30))
    del other
    delete_devices(t, s, f"tbdiff-{u}-")


@exchange
def assets(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    name = f"tbdiff-{u}-zone"
    r = s.post(f"{t.url}/api/asset", json={"name": name, "type": f"tbdiff-{u}-ws"}, timeout=30)
    asset = tr.http("create", r, device_view)
    aid = asset["id"]["id"]
    tr.http("by name", s.get(f"{t.url}/api/tenant/assets", params={"assetName": name}, timeout=30),
            lambda a: {"same_id": a["id"]["id"] == aid})
    tr.http("page by type", s.get(f"{t.url}/api/tenant/assets", params={"pageSize": 10, "page": 0,
                                                                         "type": f"tbdiff-{u}-ws"}, timeout=30),
            lambda p: [a["name"] for a in p["data"]])
    tr.http("duplicate", s.post(f"{t.url}/api/asset", json={"name": name, "type": "x"}, timeout=30))
    window = {"ts": T0 + 5000, "values": {"windSpeed": 42.5, "windSpeedCount": 10}}
    tr.http("window", s.post(f"{ts_url(t, asset)}/timeseries/ANY", json=window, timeout=30))
    tr.http("window replayed", s.post(f"{ts_url(t, asset)}/timeseries/ANY", json=window, timeout=30))
    r = s.get(f"{ts_url(t, asset)}/values/timeseries", params={"keys": "windSpeed,windSpeedCount", "startTs": T0,
                                                               "endTs": T0 + 10_000, "useStrictDataTypes": True},
              timeout=30)
    tr.http("window read back", r)
    tr.http("delete", s.delete(f"{t.url}/api/asset/{aid}", timeout=30))
    tr.http("get deleted", s.get(f"{t.url}/api/asset/{aid}", timeout=30))


# -- REST: telemetry and attributes ------------------------------------------------------------------

@exchange
def telemetry_rest(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    dev = make_device(t, s, f"tbdiff-{u}-ts")
    url = ts_url(t, dev)
    typed = {"dbl": 21.0, "lng": 33, "str_num": "33", "str_dbl": "21.5", "bool": True, "str": "abc",
             "obj": {"a": 1, "b": [1, 2]}, "big": 12345678901234567890, "exp": 1e5, "neg": -7}
    tr.http("with ts", s.post(f"{url}/timeseries/ANY", json={"ts": T0, "values": typed}, timeout=30))
    keys = ",".join(typed)
    tr.add("latest strict", body=latest_values(latest(t, s, dev, keys)))
    tr.add("latest as strings", body=latest_values(latest(t, s, dev, keys, strict=False)))
    tr.http("without ts", s.post(f"{url}/timeseries/ANY", json={"now": 1}, timeout=30))
    tr.add("latest without ts", body=latest(t, s, dev, "now"))
    points = [{"ts": T0 + i * 1000, "values": {"w": float(i), "n": i}} for i in range(30)]
    tr.http("array", s.post(f"{url}/timeseries/ANY", json=points, timeout=30))
    hist = f"{url}/values/timeseries"
    q = {"keys": "w", "startTs": T0, "endTs": T0 + 30_000, "useStrictDataTypes": True}
    tr.http("range limit 5 ASC", s.get(hist, params={**q, "limit": 5, "orderBy": "ASC", "agg": "NONE"},
                                       timeout=30))
    tr.http("range default order", s.get(hist, params={**q, "keys": "n", "limit": 3, "useStrictDataTypes": False},
                                         timeout=30))
    for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
        tr.http(f"agg {agg}", s.get(hist, params={**q, "keys": "n", "interval": 10_000, "agg": agg,
                                                  "orderBy": "ASC"}, timeout=30))
    tr.http("agg AVG default order", s.get(hist, params={**q, "interval": 10_000, "agg": "AVG"}, timeout=30))
    tr.http("agg without interval", s.get(hist, params={**q, "agg": "AVG"}, timeout=30))
    tr.http("range missing endTs", s.get(hist, params={"keys": "w", "startTs": T0}, timeout=30))
    tr.http("same ts overwrites", s.post(f"{url}/timeseries/ANY", json={"ts": T0, "values": {"w": 99.5}},
                                         timeout=30))
    tr.http("overwritten", s.get(hist, params={**q, "endTs": T0 + 1}, timeout=30))
    tr.http("keys", s.get(f"{url}/keys/timeseries", timeout=30), sorted)
    tr.http("missing key is null", s.get(hist.replace("/values/timeseries", "/values/timeseries"),
                                         params={"keys": "w,missing"}, timeout=30),
            lambda b: {k: [p["value"] for p in v] for k, v in sorted(b.items())})
    for name, body in (("not JSON", "{not json"), ("empty object", "{}"), ("null value", '{"a": null}'),
                       ("array of number", "[1]"), ("lenient single quotes", "{'lq': 1}"),
                       ("lenient unquoted", "{lu: 2}"), ("trailing comma", '{"a": 1,}'),
                       ("ts as string", '{"ts": "1700000000000", "values": {"tsstr": 1}}'),
                       ("values not object", '{"ts": 1700000000000, "values": 5}')):
        tr.http(f"body {name}", s.post(f"{url}/timeseries/ANY", data=body, headers={"Content-Type": "text/plain"},
                                       timeout=30))
    tr.add("lenient stored", body=latest_values(latest(t, s, dev, "lq,lu,tsstr")))
    tr.http("unknown device", s.post(f"{t.url}/api/plugins/telemetry/DEVICE/11111111-2222-3333-4444-555555555555"
                                     "/timeseries/ANY", json={"a": 1}, timeout=30))
    tr.http("bad entity type", s.get(f"{t.url}/api/plugins/telemetry/device/{dev['id']['id']}/values/timeseries",
                                     timeout=30))
    tr.http("delete keys", s.delete(f"{url}/timeseries/delete", params={"keys": "n", "deleteAllDataForKeys": True},
                                    timeout=30))
    tr.http("keys after delete", s.get(f"{url}/keys/timeseries", timeout=30), sorted)
    delete_devices(t, s, f"tbdiff-{u}-")


@exchange
def attributes_rest(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    dev = make_device(t, s, f"tbdiff-{u}-attr")
    url = ts_url(t, dev)
    server = {"threshold": 20, "ratio": 0.5, "on": False, "zone": "Zone A", "cfg": {"x": [1, 2]}, "num_str": "7"}
    tr.http("save server", s.post(f"{url}/attributes/SERVER_SCOPE", json=server, timeout=30))
    tr.http("save shared", s.post(f"{url}/attributes/SHARED_SCOPE", json={"target": 7}, timeout=30))
    tr.http("save client refused", s.post(f"{url}/attributes/CLIENT_SCOPE", json={"x": 1}, timeout=30))
    tr.http("save bad scope", s.post(f"{url}/attributes/NOPE", json={"x": 1}, timeout=30))
    tr.add("server scope", body=without(attributes(t, s, dev, "SERVER_SCOPE"), "active", "lastActivityTime",
                                        "lastConnectTime", "lastDisconnectTime", "inactivityAlarmTime"))
    tr.add("server scope state keys", body=sorted(a["key"] for a in attributes(t, s, dev, "SERVER_SCOPE")
                                                  if a["key"] not in server))
    tr.add("server scope by keys", body=attributes(t, s, dev, "SERVER_SCOPE", "threshold,cfg,missing"))
    tr.add("shared scope", body=attributes(t, s, dev, "SHARED_SCOPE"))
    r = s.get(f"{url}/values/attributes", params={"keys": "target,zone"}, timeout=30)
    tr.http("all scopes by keys", r, lambda b: sorted((a["key"], a["value"]) for a in b))
    r = s.get(f"{url}/keys/attributes/SHARED_SCOPE", timeout=30)
    tr.http("shared keys", r, sorted)
    tr.http("v1 path", s.post(f"{t.url}/api/plugins/telemetry/DEVICE/{dev['id']['id']}/SERVER_SCOPE",
                              json={"v1": "yes"}, timeout=30))
    tr.http("device shortcut", s.post(f"{t.url}/api/plugins/telemetry/{dev['id']['id']}/SHARED_SCOPE",
                                      json={"short": 1}, timeout=30))
    tr.add("after shortcuts", body=attributes(t, s, dev, "SERVER_SCOPE", "v1") + attributes(t, s, dev,
                                                                                             "SHARED_SCOPE", "short"))
    for name, body in (("not JSON", "{x"), ("array", "[1]"), ("empty", "{}"), ("null value", '{"n": null}'),
                       ("blank key", '{" ": 1}'), ("lenient", "{lenient: 'yes'}")):
        tr.http(f"body {name}", s.post(f"{url}/attributes/SERVER_SCOPE", data=body,
                                       headers={"Content-Type": "application/json"}, timeout=30))
    tr.http("delete", s.delete(f"{url}/SERVER_SCOPE", params={"keys": "threshold,ratio"}, timeout=30))
    tr.add("after delete", body=attributes(t, s, dev, "SERVER_SCOPE", "threshold,ratio,on"))
    delete_devices(t, s, f"tbdiff-{u}-")


# -- MQTT device API ---------------------------------------------------------------------------------

def _mqtt_device(level: int):
    def run(t: Target, tr: Transcript) -> None:
        s = t.session()
        u = tr.unique
        token = f"TBDIFFM{level}{u}"
        dev = make_device(t, s, f"tbdiff-{u}-mqtt{level}", token=token)
        bad = MqttDevice(t, f"nope-{u}", level)
        tr.add("connect unknown token", result=bad.connect())
        bad.close()
        m = MqttDevice(t, token, level)
        tr.add("connect", result=m.connect())
        tr.add("telemetry without ts", acked=m.publish("v1/devices/me/telemetry", json.dumps(
            {"t": 21.5, "n": 3, "s": "x", "b": True, "o": {"k": [1]}, "sn": "42"})))
        got = wait_for(lambda: (v := latest(t, s, dev, "t,n,s,b,o,sn")) and all(v[k][0]["value"] is not None
                                                                              for k in v) and v, "telemetry")
        tr.add("telemetry read back", body=latest_values(got),
               ts_now=all(abs(p[0]["ts"] - time.time() * 1000) < 60_000 for p in got.values()))
        tr.add("telemetry with ts", acked=m.publish("v1/devices/me/telemetry", json.dumps(
            [{"ts": T0, "values": {"h": 1}}, {"ts": T0 + 1000, "values": {"h": 2}}])))
        r = wait_for(lambda: (b := s.get(f"{ts_url(t, dev)}/values/timeseries", params={
            "keys": "h", "startTs": T0, "endTs": T0 + 2000, "orderBy": "ASC", "useStrictDataTypes": True},
            timeout=30).json()) and len(b.get("h", [])) == 2 and b, "history")
        tr.add("history read back", body=r)
        # Value typing where the spelling matters (the payload is sent as written here).
        edge = ('{"ts": 1700000005000, "values": {"e5": 1e5, "e5f": 1.5e1, "big": 12345678901234567890, '
                '"dec17": 0.12345678901234567, "sdec": "1.50", "neg0": -0, "bigs": "99999999999999999999", '
                '"btrue": "true", "empty": "", "arr": [1, "a"], "n": null}}')
        tr.add("typing edge cases", acked=m.publish("v1/devices/me/telemetry", edge))
        keys = "e5,e5f,big,dec17,sdec,neg0,bigs,btrue,empty,arr,n"
        got = wait_for(lambda: (v := latest(t, s, dev, keys)) and v["arr"][0]["value"] is not None and v, "edge values")
        tr.add("typing edge cases read back", body=latest_values(got))
        tr.add("typing edge cases as strings", body=latest_values(latest(t, s, dev, keys, strict=False)))
        tr.add("lenient telemetry", acked=m.publish("v1/devices/me/telemetry", "{lenient: 'yes', lnum: 5}"))
        got = wait_for(lambda: (v := latest(t, s, dev, "lenient,lnum")) and v["lnum"][0]["value"] is not None and v,
                       "lenient telemetry")
        tr.add("lenient read back", body=latest_values(got))
        tr.add("client attributes", acked=m.publish("v1/devices/me/attributes", json.dumps(
            {"fw": "1.0", "slots": 4, "geo": {"lat": 1.5}})))
        got = wait_for(lambda: len(attributes(t, s, dev, "CLIENT_SCOPE", "fw,slots,geo")) == 3 and
                       attributes(t, s, dev, "CLIENT_SCOPE", "fw,slots,geo"), "client attributes")
        tr.add("client attributes read back", body=got)
        s.post(f"{ts_url(t, dev)}/attributes/SHARED_SCOPE", json={"cfg": 5, "mode": "eco"}, timeout=30)
        m.subscribe("v1/devices/me/attributes/response/+")
        m.publish("v1/devices/me/attributes/request/1", json.dumps({"clientKeys": "fw,nope", "sharedKeys": "cfg"}))
        tr.add("attribute request", response=m.next_message("v1/devices/me/attributes/response/"))
        m.publish("v1/devices/me/attributes/request/2", json.dumps({"sharedKeys": "mode"}))
        tr.add("attribute request shared only", response=m.next_message("v1/devices/me/attributes/response/"))
        m.publish("v1/devices/me/attributes/request/3", "{}")
        resp = m.next_message("v1/devices/me/attributes/response/")
        if resp and isinstance(resp[1], dict):  # every attribute: what ThingsBoard adds is its own business
            resp = (resp[0], {k: sorted(v) for k, v in resp[1].items()})
        tr.add("attribute request all", response=resp)
        m.subscribe("v1/devices/me/attributes")
        # ThingsBoard registers a subscription after its SUBACK: one request answered after it proves it.
        m.publish("v1/devices/me/attributes/request/4", json.dumps({"sharedKeys": "mode"}))
        m.next_message("v1/devices/me/attributes/response/")
        s.post(f"{ts_url(t, dev)}/attributes/SHARED_SCOPE", json={"mode": "turbo"}, timeout=30)
        tr.add("shared update pushed", message=m.next_message("v1/devices/me/attributes"))
        s.delete(f"{ts_url(t, dev)}/SHARED_SCOPE", params={"keys": "cfg"}, timeout=30)
        tr.add("shared delete pushed", message=m.next_message("v1/devices/me/attributes"))
        tr.add("malformed telemetry", acked=m.publish("v1/devices/me/telemetry", "{bad json"))
        wait_for(lambda: not m.connected(), "the session to close", 3)
        tr.add("session after malformed", connected=m.connected())
        m.close()
        delete_devices(t, s, f"tbdiff-{u}-")
    run.__name__ = f"mqtt_device_v{level}"
    return run


exchange(_mqtt_device(4))
exchange(_mqtt_device(5))


# -- MQTT gateway API --------------------------------------------------------------------------------

def _mqtt_gateway(level: int):
    def run(t: Target, tr: Transcript) -> None:
        s = t.session()
        u = tr.unique
        token = f"TBDIFFG{level}{u}"
        make_device(t, s, f"tbdiff-{u}-gw{level}", token=token, gateway=True)
        sub = f"tbdiff-{u}-sub{level}"
        g = MqttDevice(t, token, level)
        tr.add("connect", result=g.connect())
        tr.add("device connect", acked=g.publish("v1/gateway/connect", json.dumps({"device": sub,
                                                                                    "type": f"tbdiff-{u}-st"})))
        created = wait_for(lambda: (r := s.get(f"{t.url}/api/tenant/devices", params={"deviceName": sub},
                                               timeout=30)).ok and r.json(), "the sub-device")
        tr.add("sub-device created", body={"name": created.get("name"), "type": created.get("type")}
               if created else created)
        tr.add("telemetry", acked=g.publish("v1/gateway/telemetry", json.dumps(
            {sub: [{"ts": T0, "values": {"g": 1.5, "gs": "2"}}, {"ts": T0 + 1000, "values": {"g": 2.5}}]})))
        got = wait_for(lambda: (r := s.get(f"{ts_url(t, created)}/values/timeseries", params={
            "keys": "g,gs", "startTs": T0, "endTs": T0 + 2000, "orderBy": "ASC", "useStrictDataTypes": True},
            timeout=30).json()) and len(r.get("g", [])) == 2 and len(r.get("gs", [])) == 1 and r,
            "gateway telemetry")
        tr.add("telemetry read back", body=got)
        tr.add("attributes", acked=g.publish("v1/gateway/attributes", json.dumps({sub: {"model": "X1", "n": 2}})))
        got = wait_for(lambda: len(a := attributes(t, s, created, "CLIENT_SCOPE", "model,n")) == 2 and a,
                       "gateway attributes")
        tr.add("attributes read back", body=got)
        s.post(f"{ts_url(t, created)}/attributes/SHARED_SCOPE", json={"sp": 1, "sq": "two"}, timeout=30)
        # ThingsBoard subscribes a connected sub-device to its attribute updates on its own.
        tr.add("shared update pushed unsubscribed", message=g.next_message("v1/gateway/attributes", timeout_s=5))
        g.subscribe("v1/gateway/attributes/response")
        g.publish("v1/gateway/attributes/request", json.dumps({"id": 1, "device": sub, "client": False,
                                                               "key": "sp"}))
        tr.add("attribute request one key", response=g.next_message("v1/gateway/attributes/response"))
        g.publish("v1/gateway/attributes/request", json.dumps({"id": 2, "device": sub, "client": False,
                                                               "keys": ["sp", "sq"]}))
        tr.add("attribute request several keys", response=g.next_message("v1/gateway/attributes/response"))
        g.publish("v1/gateway/attributes/request", json.dumps({"id": 3, "device": sub, "client": True,
                                                               "key": "model"}))
        tr.add("attribute request client key", response=g.next_message("v1/gateway/attributes/response"))
        g.subscribe("v1/gateway/attributes")
        s.post(f"{ts_url(t, created)}/attributes/SHARED_SCOPE", json={"sp": 9}, timeout=30)
        tr.add("shared update pushed", message=g.next_message("v1/gateway/attributes"))
        g.subscribe("v1/gateway/rpc")
        holder: list = []

        def answer():
            got = g.next_message("v1/gateway/rpc")
            holder.append(got)
            if got and isinstance(got[1], dict):
                data = got[1].get("data", {})
                g.publish("v1/gateway/rpc", json.dumps({"device": sub, "id": data.get("id"),
                                                        "data": {"done": data.get("method")}}))

        th = threading.Thread(target=answer, daemon=True)
        th.start()
        r = s.post(f"{t.url}/api/rpc/twoway/{created['id']['id']}", json={"method": "reboot", "params": {"in": 1},
                                                                          "timeout": 10_000}, timeout=30)
        th.join(30)
        tr.add("rpc to sub-device", request=holder[0] if holder else None)
        tr.http("rpc reply through gateway", r)
        tr.add("device disconnect", acked=g.publish("v1/gateway/disconnect", json.dumps({"device": sub})))
        tr.add("malformed", acked=g.publish("v1/gateway/telemetry", "[not json"))
        wait_for(lambda: not g.connected(), "the session to close", 3)
        tr.add("session after malformed", connected=g.connected())
        g.close()
        delete_devices(t, s, f"tbdiff-{u}-")
    run.__name__ = f"mqtt_gateway_v{level}"
    return run


exchange(_mqtt_gateway(4))
exchange(_mqtt_gateway(5))


# -- RPC ---------------------------------------------------------------------------------------------

@exchange
def rpc_mqtt(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    token = f"TBDIFFR{u}"
    dev = make_device(t, s, f"tbdiff-{u}-rpc", token=token)
    did = dev["id"]["id"]
    m = MqttDevice(t, token)
    m.connect()
    m.subscribe("v1/devices/me/rpc/request/+")

    def answer():
        got = m.next_message("v1/devices/me/rpc/request/")
        if got:
            rid = got[0].rsplit("/", 1)[1]
            m.publish(f"v1/devices/me/rpc/response/{rid}", json.dumps({"echo": got[1]}))
        holder.append(got)

    holder: list = []
    th = threading.Thread(target=answer, daemon=True)
    th.start()
    r = s.post(f"{t.url}/api/rpc/twoway/{did}", json={"method": "getTemp", "params": {"unit": "C"},
                                                      "timeout": 10_000}, timeout=30)
    th.join(30)
    tr.add("device got", request=holder[0] if holder else None)
    tr.http("twoway reply", r)
    r = s.post(f"{t.url}/api/rpc/oneway/{did}", json={"method": "blink", "params": 3}, timeout=30)
    tr.http("oneway", r)
    tr.add("device got oneway", request=m.next_message("v1/devices/me/rpc/request/"))
    m.close()
    r = s.post(f"{t.url}/api/rpc/twoway/{did}", json={"method": "x", "params": {}, "timeout": 5000}, timeout=30)
    tr.http("twoway nobody connected", r)
    r = s.post(f"{t.url}/api/rpc/twoway/{did}", data="{broken", headers={"Content-Type": "application/json"},
               timeout=30)
    tr.http("broken body", r)
    r = s.post(f"{t.url}/api/rpc/twoway/11111111-2222-3333-4444-555555555555", json={"method": "x", "params": {}},
               timeout=30)
    tr.http("unknown device", r)
    delete_devices(t, s, f"tbdiff-{u}-")


# -- HTTP device API ---------------------------------------------------------------------------------

@exchange
def http_device_api(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    token = f"TBDIFFH{u}"
    dev = make_device(t, s, f"tbdiff-{u}-http", token=token)
    base = f"{t.url}/api/v1/{token}"
    tr.http("telemetry", requests.post(f"{base}/telemetry", json={"ht": 1.5, "hs": "7"}, timeout=30))
    got = wait_for(lambda: (v := latest(t, s, dev, "ht,hs")) and all(p[0]["value"] is not None for p in v.values())
                   and v, "telemetry")
    tr.add("telemetry read back", body=latest_values(got))
    tr.http("telemetry with ts", requests.post(f"{base}/telemetry", json=[{"ts": T0, "values": {"hh": 1}}],
                                               timeout=30))
    got = wait_for(lambda: (b := s.get(f"{ts_url(t, dev)}/values/timeseries", params={
        "keys": "hh", "startTs": T0, "endTs": T0 + 1, "useStrictDataTypes": True}, timeout=30).json()) and b,
        "history")
    tr.add("history read back", body=got)
    tr.http("attributes", requests.post(f"{base}/attributes", json={"hc": "v", "hn": 2}, timeout=30))
    got = wait_for(lambda: len(a := attributes(t, s, dev, "CLIENT_SCOPE", "hc,hn")) == 2 and a, "attributes")
    tr.add("attributes read back", body=got)
    s.post(f"{ts_url(t, dev)}/attributes/SHARED_SCOPE", json={"hsh": True}, timeout=30)
    tr.http("get attributes by keys", requests.get(f"{base}/attributes", params={"clientKeys": "hc,nope",
                                                                                 "sharedKeys": "hsh"}, timeout=30))
    tr.http("get client keys only", requests.get(f"{base}/attributes", params={"clientKeys": "hn"}, timeout=30))
    tr.http("get all attributes", requests.get(f"{base}/attributes", timeout=30),
            lambda b: {k: sorted(v) for k, v in b.items()})
    tr.http("unknown token telemetry", requests.post(f"{t.url}/api/v1/nope{u}/telemetry", json={"a": 1}, timeout=30))
    tr.http("unknown token attributes", requests.get(f"{t.url}/api/v1/nope{u}/attributes", timeout=30))
    tr.http("lenient telemetry", requests.post(f"{base}/telemetry", data="{hl: 'yes'}", timeout=30))
    got = wait_for(lambda: (v := latest(t, s, dev, "hl")) and v["hl"][0]["value"] is not None and v, "lenient")
    tr.add("lenient read back", body=latest_values(got))
    tr.http("malformed telemetry", requests.post(f"{base}/telemetry", data="{bad json", timeout=30))
    tr.http("null value telemetry", requests.post(f"{base}/telemetry", data='{"a": null}', timeout=30))
    tr.http("array of number telemetry", requests.post(f"{base}/telemetry", data="[1]", timeout=30))
    tr.http("attributes array", requests.post(f"{base}/attributes", data="[1]", timeout=30))
    tr.http("rpc poll timeout", requests.get(f"{base}/rpc", params={"timeout": 1000}, timeout=30))
    holder: list = []

    def poll():
        r = requests.get(f"{base}/rpc", params={"timeout": 20_000}, timeout=40)
        holder.append(r)
        if r.ok:
            rid = r.json()["id"]
            holder.append(requests.post(f"{base}/rpc/{rid}", json={"ok": True}, timeout=30))

    th = threading.Thread(target=poll, daemon=True)
    th.start()  # either order works: a request waits for the device's poll, as on ThingsBoard
    r = s.post(f"{t.url}/api/rpc/twoway/{dev['id']['id']}", json={"method": "hp", "params": {"x": 1},
                                                                  "timeout": 10_000}, timeout=30)
    th.join(40)
    if holder:
        tr.http("rpc poll got request", holder[0])
    if len(holder) > 1:
        tr.http("rpc reply posted", holder[1])
    tr.http("rpc caller got reply", r)
    tr.http("rpc reply bad id", requests.post(f"{base}/rpc/abc", json={}, timeout=30))
    tr.http("rpc poll bad timeout", requests.get(f"{base}/rpc", params={"timeout": "soon"}, timeout=30))
    tr.http("client rpc unknown token", requests.post(f"{t.url}/api/v1/nope{u}/rpc", json={"method": "m", "params": {}},
                                                      timeout=30))
    tr.http("client rpc malformed", requests.post(f"{base}/rpc", data="{method: 'm',", timeout=30))
    tr.http("rpc reply unknown token", requests.post(f"{t.url}/api/v1/nope{u}/rpc/1", json={}, timeout=30))
    tr.http("attributes malformed", requests.post(f"{base}/attributes", data="{'a': }", timeout=30))
    big = json.dumps({"pad": "x" * 70_000})
    tr.http("rpc reply too large", requests.post(f"{base}/rpc/1", data=big, timeout=30))
    tr.http("client rpc too large unknown token", requests.post(f"{t.url}/api/v1/nope{u}/rpc", data=big, timeout=30))
    tr.http("telemetry of 70 KB", requests.post(f"{base}/telemetry", data=big, timeout=30))
    delete_devices(t, s, f"tbdiff-{u}-")


# -- a device profile's rule chain forwarding to Kafka (tbspark's own chain) ---------------------------

def _kafka_records(bootstrap: str, topic: str, want: int) -> list:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tbdiff-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    try:
        def more():
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append({"key": m.key().decode(), "value": json.loads(m.value())})
            return len(out) >= want
        wait_for(more, "Kafka records")
    finally:
        c.close()
    return sorted(out, key=lambda r: str(r["value"].get("ts")))


@exchange
def chain_to_kafka(t: Target, tr: Transcript) -> None:
    from types import SimpleNamespace

    from tbspark.stack.kafka import ensure_topic
    from tbspark.thingsboard.rulechain import build_rule_chain

    s = t.session()
    u = tr.unique
    topic = f"tbdiff-{u}-{t.name}"
    ensure_topic(t.kafka_bootstrap, topic)
    scenario = SimpleNamespace(name=f"tbdiff-{u}", aggregation=SimpleNamespace(value_key="windSpeed", zone_key="geoZone"),
                               kafka=SimpleNamespace(topic=topic))
    chain = build_rule_chain(scenario, t.kafka_bootstrap)
    r = s.post(f"{t.url}/api/ruleChain", json={"name": f"tbdiff-{u} to Kafka", "type": "CORE"}, timeout=30)
    rc = tr.http("chain created", r, lambda b: {"type": b["type"], "root": b["root"]})
    meta = {**chain["metadata"], "ruleChainId": rc["id"]}
    tr.http("chain metadata saved", s.post(f"{t.url}/api/ruleChain/metadata", json=meta, timeout=30),
            lambda b: {"nodes": sorted(n["type"].rsplit(".", 1)[1] for n in b["nodes"]),
                       "connections": len(b["connections"])})
    r = s.post(f"{t.url}/api/deviceProfile", json={
        "name": f"tbdiff-{u}-kprof", "type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED",
        "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "defaultRuleChainId": rc["id"]}, timeout=30)
    prof = tr.http("profile with the chain", r, lambda b: {"chain": b["defaultRuleChainId"]["id"] == rc["id"]["id"]})
    token = f"TBDIFFK{u}"
    r = s.post(f"{t.url}/api/device", json={"name": f"tbdiff-{u}-turbine", "type": f"tbdiff-{u}-kprof",
                                            "deviceProfileId": prof["id"]}, params={"accessToken": token}, timeout=30)
    dev = tr.http("device", r, lambda b: {"profile": b["deviceProfileId"]["id"] == prof["id"]["id"]})
    m = MqttDevice(t, token)
    m.connect()
    # The chain reads both client attributes (tellFailureIfAbsent): provision sets them the same way.
    tr.add("zone attribute", acked=m.publish("v1/devices/me/attributes", json.dumps({"geoZone": "Zone A",
                                                                                     "deviceType": "turbine"})))
    tr.add("zone stored", body=wait_for(lambda: len(a := attributes(t, s, dev, "CLIENT_SCOPE", "geoZone,deviceType"))
                                        == 2 and a, "the zone"))
    for i in range(3):
        m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + i * 1000, "values": {"windSpeed": 10 + i}}))
    tr.add("no value: filtered", acked=m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + 5000,
                                                                                       "values": {"temp": 1}})))
    m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + 9000, "values": {"windSpeed": "13.5"}}))
    tr.add("kafka records", records=_kafka_records(t.kafka_bootstrap, topic, 4))
    got = wait_for(lambda: (b := s.get(f"{ts_url(t, dev)}/values/timeseries", params={
        "keys": "windSpeed,temp", "startTs": T0, "endTs": T0 + 10_000, "orderBy": "ASC", "useStrictDataTypes": True},
        timeout=30).json()) and len(b.get("windSpeed", [])) == 4 and b, "stored points")
    tr.add("stored points", body=got)
    m.close()
    delete_devices(t, s, f"tbdiff-{u}-")
    tr.http("profile deleted", s.delete(f"{t.url}/api/deviceProfile/{prof['id']['id']}", timeout=30))
    tr.http("chain deleted", s.delete(f"{t.url}/api/ruleChain/{rc['id']['id']}", timeout=30))
