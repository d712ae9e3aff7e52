"""Device state and event messages as ThingsBoard keeps them, and the gateway's attribute responses:
SERVER_SCOPE ``active`` / ``lastConnectTime`` / ``lastActivityTime`` / ``lastDisconnectTime`` /
``inactivityAlarmTime`` after MQTT connect, publish, disconnect and silence; CONNECT / ACTIVITY /
DISCONNECT / INACTIVITY / ENTITY_CREATED / ATTRIBUTES_UPDATED / TIMESERIES_UPDATED reaching a chain.

The tests run against our own platform process (short state intervals through ThingsBoard's
environment names) and, marked ``realtb``, against a real ThingsBoard when TB_URL names one."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import pytest

from tbspark.mqtt import codec as c
from tests.fixtures.platform import start_platform
from tests.integration.test_mqtt import Endpoint, Rest, raw_connect, read_packets, wait_for

# Real ThingsBoard reports activity every 3 s and checks inactivity every 60 s (thingsboard.yml).
REAL_WAIT_S = 90.0
EMBEDDED_ENV = {"DEFAULT_STATE_CHECK_INTERVAL": "0.3", "TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT": "200"}


@pytest.fixture(scope="module")
def own_platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("devstate"), extra_env=EMBEDDED_ENV)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module", params=["embedded", pytest.param("realtb", marks=pytest.mark.realtb)])
def target(request):
    """(endpoint, how long state changes may take, embedded?) for each target."""
    if request.param == "realtb":
        url = os.environ.get("TB_URL")
        if not url:
            pytest.skip("TB_URL is unset: no real ThingsBoard to compare with")
        host = os.environ.get("TB_MQTT_HOST") or url.split("//", 1)[1].split(":", 1)[0]
        return Endpoint(url.rstrip("/"), host, int(os.environ.get("TB_MQTT_PORT", "1883"))), REAL_WAIT_S, False
    p = request.getfixturevalue("own_platform")
    return Endpoint(p.url, "127.0.0.1", p.mqtt_port), 15.0, True


def _name(what: str) -> str:
    return f"devstate {what} {uuid.uuid4().hex[:8]}"


def _server_attrs(rest: Rest, dev_id: str) -> dict:
    return rest.attrs(dev_id, "SERVER_SCOPE")


def _publish(s: socket.socket, payload: dict, packet_id: int = 1) -> None:
    s.sendall(c.encode_publish("v1/devices/me/telemetry", json.dumps(payload).encode(), 1, packet_id))
    got, closed = read_packets(s, 4)
    assert not closed and got[0].packet_id == packet_id  # PUBACK: stored


def _connected(ep: Endpoint, token: str) -> socket.socket:
    s = raw_connect(ep, token)
    (ack,), closed = read_packets(s, 4)
    assert not closed and ack.reason_code == 0
    return s


def test_state_attributes_follow_connect_publish_disconnect(target):
    ep, wait_s, _embedded = target
    rest = Rest(ep.url)
    token = uuid.uuid4().hex
    dev_id = rest.device(_name("sensor"), "devstate", token)
    # Every device carries `active` from creation on (false until it shows activity).
    assert wait_for(lambda: _server_attrs(rest, dev_id).get("active") is False, wait_s, "active=false")

    t0 = int(time.time() * 1000)
    s = _connected(ep, token)
    try:
        st = wait_for(lambda: (a := _server_attrs(rest, dev_id)).get("active") and a, wait_s, "active=true")
        assert st["lastConnectTime"] >= t0 - 1000
        first_activity = wait_for(lambda: _server_attrs(rest, dev_id).get("lastActivityTime"), wait_s,
                                  "lastActivityTime")
        assert first_activity >= t0 - 1000
        _publish(s, {"temperature": 21})
        later = wait_for(lambda: (v := _server_attrs(rest, dev_id).get("lastActivityTime", 0)) > first_activity and v,
                         wait_s, "lastActivityTime to move with the publish")
        assert later >= first_activity
        assert "lastDisconnectTime" not in _server_attrs(rest, dev_id)
    finally:
        s.close()
    st = wait_for(lambda: (a := _server_attrs(rest, dev_id)).get("lastDisconnectTime") and a, wait_s,
                  "lastDisconnectTime")
    assert st["lastDisconnectTime"] >= st["lastConnectTime"]
    assert st["active"] is True  # a disconnect alone does not make a device inactive: the timeout does


def test_inactivity_after_the_devices_timeout(target):
    ep, wait_s, _embedded = target
    rest = Rest(ep.url)
    token = uuid.uuid4().hex
    dev_id = rest.device(_name("quiet"), "devstate", token)
    s = _connected(ep, token)
    try:
        _publish(s, {"v": 1})
        wait_for(lambda: _server_attrs(rest, dev_id).get("active") is True, wait_s, "active=true")
    finally:
        s.close()
    # ThingsBoard's per-device override of the inactivity timeout, in ms.
    r = rest.post(f"/api/plugins/telemetry/DEVICE/{dev_id}/SERVER_SCOPE", {"inactivityTimeout": 1500})
    assert r.status_code == 200
    st = wait_for(lambda: (a := _server_attrs(rest, dev_id)).get("active") is False and a, wait_s + 5,
                  "active=false after 1.5 s of silence")
    assert st["inactivityAlarmTime"] >= st["lastActivityTime"] + 1500
    # Activity again: active, and the inactivity alarm time stays as it was (it is not in the future).
    s = _connected(ep, token)
    try:
        wait_for(lambda: _server_attrs(rest, dev_id).get("active") is True, wait_s, "active again")
    finally:
        s.close()


def test_default_inactivity_timeout_is_configurable(tmp_path):
    """DEFAULT_INACTIVITY_TIMEOUT (ThingsBoard's name, seconds) applies to devices without the attribute."""
    p = start_platform(tmp_path, extra_env={**EMBEDDED_ENV, "DEFAULT_INACTIVITY_TIMEOUT": "1"})
    try:
        ep = Endpoint(p.url, "127.0.0.1", p.mqtt_port)
        rest = Rest(ep.url)
        token = uuid.uuid4().hex
        dev_id = rest.device(_name("default-timeout"), "devstate", token)
        s = _connected(ep, token)
        try:
            wait_for(lambda: _server_attrs(rest, dev_id).get("active") is True, what="active=true")
            # Connected but silent (keep-alive 30 s, no PINGREQ yet): inactive after the 1 s default.
            st = wait_for(lambda: (a := _server_attrs(rest, dev_id)).get("active") is False and a,
                          what="active=false after the default timeout")
            assert st["inactivityAlarmTime"] >= st["lastActivityTime"] + 1000
            info = rest.get(f"/api/device/info/{dev_id}")
            assert info["active"] is False
        finally:
            s.close()
    finally:
        p.stop()


SWITCH = "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode"
EVENTS = ("ENTITY_CREATED", "CONNECT_EVENT", "ACTIVITY_EVENT", "POST_TELEMETRY_REQUEST", "DISCONNECT_EVENT",
          "ATTRIBUTES_UPDATED", "TIMESERIES_UPDATED", "INACTIVITY_EVENT")
RELATION = {"ENTITY_CREATED": "Entity Created", "CONNECT_EVENT": "Connect Event", "ACTIVITY_EVENT": "Activity Event",
            "POST_TELEMETRY_REQUEST": "Post telemetry", "DISCONNECT_EVENT": "Disconnect Event",
            "ATTRIBUTES_UPDATED": "Attributes Updated", "TIMESERIES_UPDATED": "Timeseries Updated",
            "INACTIVITY_EVENT": "Inactivity Event"}


def _switch_chain(rest: Rest) -> tuple[str, str, dict]:
    """A chain whose only node is a message type switch, in debug mode; (chain id, node id, chain)."""
    chain = rest.post("/api/ruleChain", {"name": _name("events"), "type": "CORE"}).json()
    meta = {"ruleChainId": chain["id"], "firstNodeIndex": 0,
            "nodes": [{"type": SWITCH, "name": "switch", "configuration": {"version": 0},
                       "debugSettings": {"failuresEnabled": True, "allEnabled": True, "allEnabledUntil": 0}}],
            "connections": []}
    r = rest.post("/api/ruleChain/metadata", meta)
    assert r.status_code == 200, r.text
    return chain["id"]["id"], r.json()["nodes"][0]["id"]["id"], chain


def _arrived(ep: Endpoint, rest: Rest, embedded: bool, chain_id: str, node_id: str, tenant_id: str) -> dict:
    """Message type → how many reached the switch with the device as originator: from the platform's
    chain counters (by relation), or from ThingsBoard's debug events of the node."""
    import requests

    if embedded:
        stats = requests.get(ep.url + "/tbspark/stats", headers=rest.h, timeout=5).json()
        outs = [n["out"] for n in stats["engine"]["nodes"] if n["chain"] == chain_id]
        out = outs[0] if outs else {}
        return {t: out[rel] for t, rel in RELATION.items() if rel in out}
    r = requests.get(f"{ep.url}/api/events/RULE_NODE/{node_id}/DEBUG_RULE_NODE",
                     params={"pageSize": 100, "page": 0, "tenantId": tenant_id}, headers=rest.h, timeout=10)
    counts: dict = {}
    for e in r.json()["data"]:
        body = e["body"]
        if body.get("type") == "IN" and body.get("entityType") == "DEVICE":
            counts[body["msgType"]] = counts.get(body["msgType"], 0) + 1
    return counts


def test_event_messages_reach_the_devices_chain(target):
    """Entity created, connect, activity, telemetry, disconnect, attributes and time series saved
    through the API, inactivity: each reaches the device profile's chain."""
    ep, wait_s, embedded = target
    rest = Rest(ep.url)
    chain_id, node_id, chain = _switch_chain(rest)
    profile = rest.post("/api/deviceProfile", {"name": _name("profile"), "type": "DEFAULT", "transportType": "DEFAULT",
                                               "defaultRuleChainId": chain["id"],
                                               "profileData": {"configuration": {"type": "DEFAULT"},
                                                               "transportConfiguration": {"type": "DEFAULT"}}})
    assert profile.status_code == 200, profile.text
    token = uuid.uuid4().hex
    r = rest.post("/api/device", {"name": _name("evented"), "deviceProfileId": profile.json()["id"]},
                  params={"accessToken": token})
    assert r.status_code == 200, r.text
    dev_id = r.json()["id"]["id"]
    s = _connected(ep, token)
    try:
        _publish(s, {"temperature": 20})
    finally:
        s.close()
    wait_for(lambda: _server_attrs(rest, dev_id).get("lastDisconnectTime"), wait_s, "the disconnect")
    assert rest.post(f"/api/plugins/telemetry/DEVICE/{dev_id}/SERVER_SCOPE", {"inactivityTimeout": 500}).ok
    assert rest.post(f"/api/plugins/telemetry/DEVICE/{dev_id}/timeseries/ANY", {"x": 1}).ok

    got = wait_for(lambda: (a := _arrived(ep, rest, embedded, chain_id, node_id, chain["tenantId"]["id"]))
                   and set(EVENTS) <= set(a) and a, wait_s, "every event type at the chain's switch")
    assert got["ENTITY_CREATED"] == 1 and got["CONNECT_EVENT"] == 1 and got["DISCONNECT_EVENT"] == 1


def test_gateway_attribute_response_with_several_keys(target):
    ep, wait_s, _embedded = target
    rest = Rest(ep.url)
    token, sub = uuid.uuid4().hex, _name("sub")
    rest.device(_name("gateway"), "gateway", token, gateway=True)
    s = _connected(ep, token)
    try:
        s.sendall(c.encode_publish("v1/gateway/connect", json.dumps({"device": sub}).encode(), 1, 1))
        read_packets(s, 4)
        sub_id = wait_for(lambda: _device_id(rest, sub), wait_s, "the sub-device")
        dec = c.StreamDecoder()

        def next_publish(topic: str, timeout_s: float):
            """The next PUBLISH on ``topic`` (others skipped), or None after ``timeout_s``."""
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    return None
                assert data, "the gateway's session was closed"
                for t, f, b in dec.feed(data):
                    pkt = c.decode_packet(t, f, b, 4)
                    if t == c.PUBLISH and pkt.topic == topic:
                        return pkt
            return None

        # The gateway gets the change without having subscribed to v1/gateway/attributes. ThingsBoard
        # subscribes the sub-device's session a moment after the connect: save again until it is.
        push = None
        for _ in range(10):
            assert rest.post(f"/api/plugins/telemetry/DEVICE/{sub_id}/SHARED_SCOPE", {"mode": "eco", "level": 3}).ok
            push = next_publish("v1/gateway/attributes", 2.0)
            if push is not None:
                break
        assert push is not None and json.loads(push.payload) == {"device": sub, "data": {"mode": "eco", "level": 3}}

        def ask(request: dict) -> dict:
            s.sendall(c.encode_publish("v1/gateway/attributes/request",
                                       json.dumps({"device": sub, **request}).encode(), 0))
            pub = next_publish("v1/gateway/attributes/response", wait_s)
            assert pub is not None, "no attribute response"
            return json.loads(pub.payload)

        assert ask({"id": 1, "client": False, "key": "mode"}) == {"id": 1, "device": sub, "value": "eco"}
        # Several keys requested: "values", even when only one of them exists.
        assert ask({"id": 2, "client": False, "keys": ["mode", "nothere"]}) == \
            {"id": 2, "device": sub, "values": {"mode": "eco"}}
        assert ask({"id": 3, "client": False, "keys": ["mode", "level"]}) == \
            {"id": 3, "device": sub, "values": {"mode": "eco", "level": 3}}
        assert ask({"id": 4, "client": False, "keys": ["level"]}) == {"id": 4, "device": sub, "value": 3}
        assert ask({"id": 5, "client": False, "keys": ["mode", "mode"]}) == {"id": 5, "device": sub, "value": "eco"}
        assert ask({"id": 6, "client": False, "key": "nothere"}) == {"id": 6, "device": sub}
        s.sendall(c.encode_publish("v1/gateway/attributes", json.dumps({sub: {"fw": "1.0", "cc": 7}}).encode(), 0))
        wait_for(lambda: _client_attrs(rest, sub_id) == {"fw": 1.0, "cc": 7}, wait_s, "the client attributes")
        assert ask({"id": 7, "client": True, "keys": ["fw", "cc"]}) == \
            {"id": 7, "device": sub, "values": {"fw": 1.0, "cc": 7}}
        # No key named: every client and every shared attribute (ThingsBoard merges them in "values").
        assert ask({"id": 8, "client": False, "keys": []}) == \
            {"id": 8, "device": sub, "values": {"fw": 1.0, "cc": 7, "mode": "eco", "level": 3}}
    finally:
        s.close()


def _client_attrs(rest: Rest, dev_id: str) -> dict:
    return rest.attrs(dev_id, "CLIENT_SCOPE")


def _device_id(rest: Rest, name: str) -> str | None:
    import requests

    r = requests.get(rest.url + "/api/tenant/devices", params={"deviceName": name}, headers=rest.h, timeout=10)
    return r.json()["id"]["id"] if r.status_code == 200 else None


@pytest.mark.parametrize("name,value", [("DEFAULT_INACTIVITY_TIMEOUT", "abc"), ("DEFAULT_STATE_CHECK_INTERVAL", "0"),
                                        ("TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT", "-5")])
def test_bad_state_settings_are_refused_at_start(tmp_path, name, value):
    import subprocess
    import sys

    env = {**os.environ, name: value}
    r = subprocess.run([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", "0", "--mqtt-port", "0",
                        "--state-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"Error: {name}={value!r} is not a positive number" in r.stderr + r.stdout


def test_activity_is_written_per_round_not_per_message(own_platform):
    """A burst of publishes moves lastActivityTime with a few state writes, not one per message."""
    import requests

    ep = Endpoint(own_platform.url, "127.0.0.1", own_platform.mqtt_port)
    rest = Rest(ep.url)
    token = uuid.uuid4().hex
    dev_id = rest.device(_name("burst"), "devstate", token)
    s = _connected(ep, token)
    try:
        first = wait_for(lambda: _server_attrs(rest, dev_id).get("lastActivityTime"), what="lastActivityTime")

        def written() -> int:
            return requests.get(ep.url + "/tbspark/stats", headers=rest.h, timeout=5).json()["store"][
                "attr_values_written"]

        before = written()
        for i in range(300):
            s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"n":%d}' % i, 0))
        _publish(s, {"n": -1})  # QoS 1: its PUBACK says all 300 before it were read
        wait_for(lambda: _server_attrs(rest, dev_id).get("lastActivityTime", 0) > first, what="lastActivityTime")
        assert written() - before < 30  # ~1 value per 200 ms round here (3 s on ThingsBoard's default)
    finally:
        s.close()
