"""What the exchanges share: entities made and removed, and reads that pick what matters."""

from __future__ import annotations

import requests

from tests.differential.harness import Target


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


def sweep(t: Target, prefix: str = "tbdiff-") -> int:
    """Delete what the suite made and an interrupted exchange may have left (devices, assets, device
    and asset profiles made for their types, rule chains): only names with the suite's prefix."""
    s = t.session()
    gone = 0
    for listing, item in (("/api/tenant/devices", "/api/device/"), ("/api/tenant/assets", "/api/asset/"),
                          ("/api/deviceProfiles", "/api/deviceProfile/"), ("/api/assetProfiles", "/api/assetProfile/"),
                          ("/api/ruleChains", "/api/ruleChain/")):
        r = s.get(t.url + listing, params={"pageSize": 1000, "page": 0, "textSearch": prefix}, timeout=30)
        for e in r.json().get("data", []) if r.ok else []:
            if e.get("name", "").startswith(prefix):
                gone += s.delete(f"{t.url}{item}{e['id']['id']}", timeout=30).ok
    return gone
