"""REST exchanges: auth, devices (CRUD, paging, credentials, bodies), assets, telemetry, attributes."""

from __future__ import annotations

import time

import requests

from tests.differential.exchanges import exchange
from tests.differential.exchanges.helpers import (
    attributes, delete_devices, device_view, keys_of, latest, latest_values, make_device, ts_url, without,
)
from tests.differential.harness import T0, MqttDevice, Target, Transcript


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
    make_device(t, s, f"tbdiff-{u}-cred2", token=f"TBDIFF2{u}")  # holds the token the update tries to take
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
    tr.http("agg AVG DESC", s.get(hist, params={**q, "interval": 10_000, "agg": "AVG", "orderBy": "DESC"},
                                  timeout=30))
    tr.http("agg MAX limit 2", s.get(hist, params={**q, "interval": 10_000, "agg": "MAX", "limit": 2}, timeout=30))
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
    # Both write a new device's `active` asynchronously (ThingsBoard through its state service, the
    # embedded platform in its next 3 s report round): wait for it, up to 10 s, before comparing.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            a["key"] == "active" for a in attributes(t, s, dev, "SERVER_SCOPE")):
        time.sleep(0.25)  # the next read; bounded by the deadline
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


@exchange
def telemetry_extras(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    dev = make_device(t, s, f"tbdiff-{u}-tsx")
    url = ts_url(t, dev)
    day = 86_400_000
    points = [{"ts": T0 + i * day, "values": {"d": i}} for i in range(10)]
    tr.http("with TTL", s.post(f"{url}/timeseries/ANY/3600", json=points, timeout=30))
    tr.http("TTL not a number", s.post(f"{url}/timeseries/ANY/soon", json={"x": 1}, timeout=30))
    hist = f"{url}/values/timeseries"
    q = {"keys": "d", "startTs": T0, "endTs": T0 + 10 * day, "agg": "SUM", "useStrictDataTypes": True}
    tr.http("calendar week UTC", s.get(hist, params={**q, "intervalType": "WEEK", "timeZone": "UTC"}, timeout=30))
    tr.http("calendar week ISO Berlin", s.get(hist, params={**q, "intervalType": "WEEK_ISO",
                                                            "timeZone": "Europe/Berlin"}, timeout=30))
    tr.http("calendar month", s.get(hist, params={**q, "intervalType": "MONTH", "timeZone": "UTC"}, timeout=30))
    tr.http("interval type milliseconds", s.get(hist, params={**q, "intervalType": "MILLISECONDS",
                                                              "interval": 5 * day}, timeout=30))
    tr.http("latest without keys", s.get(hist, params={"useStrictDataTypes": True}, timeout=30),
            lambda b: {k: [p["value"] for p in v] for k, v in b.items()})
    for n in (255, 256, 1000):
        tr.http(f"key of {n} characters", s.post(f"{url}/timeseries/ANY", json={"k" * n: 1}, timeout=30))
    tr.http("attribute key of 1000 characters", s.post(f"{url}/attributes/SERVER_SCOPE", json={"a" * 1000: 1},
                                                        timeout=30))
    tr.add("long keys stored", body=sorted(len(k) for k in (s.get(f"{url}/keys/timeseries", timeout=30).json())
                                            if k.startswith("kkk")))
    delete_devices(t, s, f"tbdiff-{u}-")
