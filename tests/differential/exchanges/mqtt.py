"""MQTT exchanges (3.1.1 and 5): the device API, the gateway API, server-side RPC to both."""

from __future__ import annotations

import json
import threading
import time

from tests.differential.exchanges import exchange
from tests.differential.exchanges.helpers import attributes, delete_devices, latest, latest_values, make_device, ts_url
from tests.differential.harness import T0, MqttDevice, Target, Transcript, wait_for


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
        tr.add("shared update pushed unsubscribed", message=g.next_message("v1/gateway/attributes"))
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
