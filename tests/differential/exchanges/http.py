"""The HTTP device API (/api/v1/{token}/…) exchange."""

from __future__ import annotations

import json
import threading

import requests

from tests.differential.exchanges import exchange
from tests.differential.exchanges.helpers import attributes, delete_devices, latest, latest_values, make_device, ts_url
from tests.differential.harness import T0, Target, Transcript, wait_for


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
    tr.http("attribute updates poll timeout", requests.get(f"{base}/attributes/updates", params={"timeout": 1000},
                                                           timeout=30))
    upd: list = []
    th = threading.Thread(target=lambda: upd.append(requests.get(f"{base}/attributes/updates",
                                                                 params={"timeout": 20_000}, timeout=40)), daemon=True)
    th.start()
    # The update must come after the poll is registered; ThingsBoard gives no sign of that, so the
    # poll is retried below with an update per attempt until one is answered (normally the first).
    for i in range(10):
        s.post(f"{ts_url(t, dev)}/attributes/SHARED_SCOPE", json={"hsh": i}, timeout=30)
        th.join(2)
        if upd:
            break
    if upd and upd[0].ok:
        tr.add("attribute updates poll got", status=upd[0].status_code, keys=sorted(upd[0].json()))
    elif upd:
        tr.http("attribute updates poll got", upd[0])
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
