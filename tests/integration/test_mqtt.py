"""MQTT transport against the real platform process: the official tb-mqtt-client (device and
gateway) and plain paho 3.1.1 publish, request and receive; results are read back over REST; bad
input (token, JSON, packet size, garbage bytes) closes only the offending session."""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from tbspark.mqtt import codec as c
from tbspark.testing.platform import start_platform
from tbspark.testing.wait import wait_until

WAIT_S = 15.0


@dataclass(frozen=True)
class Endpoint:
    url: str
    mqtt_host: str
    mqtt_port: int


def wait_for(predicate, timeout_s: float = WAIT_S, what: str = "condition"):
    """Poll a readiness condition (data readable over REST, a callback fired)."""
    return wait_until(predicate, timeout_s, what)


@pytest.fixture(scope="session")
def mqtt_platform(request, tmp_path_factory):
    """The shared ``platform`` fixture when it exists, else our own `tbspark platform serve` process
    on free ports (readiness: endpoint.json + health), stopped by PID."""
    try:
        p = request.getfixturevalue("platform")
        yield Endpoint(p.url, getattr(p, "mqtt_host", "127.0.0.1"), p.mqtt_port)
        return
    except pytest.FixtureLookupError:
        pass
    p = start_platform(tmp_path_factory.mktemp("mqtt-platform"), 60, log_name="platform.log")
    try:
        yield Endpoint(p.url, "127.0.0.1", p.mqtt_port)
    finally:
        p.stop()


class Rest:
    """Just the REST calls these tests need, as a user would make them."""

    def __init__(self, url: str):
        self.url = url
        r = requests.post(url + "/api/auth/login", json={"username": "tenant@thingsboard.org", "password": "tenant"})
        r.raise_for_status()
        self.h = {"X-Authorization": "Bearer " + r.json()["token"]}

    def post(self, path: str, body=None, **kw):
        r = requests.post(self.url + path, json=body, headers=self.h, timeout=10, **kw)
        return r

    def get(self, path: str, **params):
        r = requests.get(self.url + path, params=params, headers=self.h, timeout=10)
        r.raise_for_status()
        return r.json()

    def device(self, name: str, dtype: str, token: str, gateway: bool = False) -> str:
        body = {"name": name, "type": dtype}
        if gateway:
            body["additionalInfo"] = {"gateway": True}
        r = self.post("/api/device", body, params={"accessToken": token})
        r.raise_for_status()
        return r.json()["id"]["id"]

    def device_id(self, name: str) -> str:
        return self.get("/api/tenant/devices", deviceName=name)["id"]["id"]

    def latest(self, dev_id: str, keys: str) -> dict:
        return self.get(f"/api/plugins/telemetry/DEVICE/{dev_id}/values/timeseries", keys=keys,
                        useStrictDataTypes="true")

    def attrs(self, dev_id: str, scope: str) -> dict:
        rows = self.get(f"/api/plugins/telemetry/DEVICE/{dev_id}/values/attributes/{scope}")
        return {r["key"]: r["value"] for r in rows}

    def latest_values(self, dev_id: str, keys: str) -> dict:
        got = self.latest(dev_id, keys)
        return {k: v[0]["value"] for k, v in got.items() if v and v[0]["value"] is not None}


@pytest.fixture(scope="session")
def rest(mqtt_platform):
    return Rest(mqtt_platform.url)


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def raw_connect(ep: Endpoint, token: str | None, level: int = 4, client_id: str = "raw") -> socket.socket:
    s = socket.create_connection((ep.mqtt_host, ep.mqtt_port), timeout=5)
    s.sendall(c.encode_connect(client_id, username=token, keep_alive=30, protocol_level=level))
    return s


def read_packets(s: socket.socket, level: int, until_closed: bool = False, count: int = 1) -> tuple[list, bool]:
    """Packets the server sent, and whether it closed the socket."""
    dec, out = c.StreamDecoder(), []
    while until_closed or len(out) < count:
        try:
            data = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return out, True
        if not data:
            return out, True
        out += [c.decode_packet(t, f, b, level) for t, f, b in dec.feed(data)]
    return out, False


# ------------------------------------------------------------------------------------ device API

def test_official_device_client_round_trip(mqtt_platform, rest):
    from tb_device_mqtt import TBDeviceMqttClient

    token, name = uuid.uuid4().hex, unique("Wind Turbine")
    dev_id = rest.device(name, "WeatherStation", token)
    client = TBDeviceMqttClient(mqtt_platform.mqtt_host, port=mqtt_platform.mqtt_port, username=token)
    pushes, answers = [], []
    client.connect()
    try:
        wait_for(client.is_connected, what="tb-mqtt-client to connect")
        client.subscribe_to_all_attributes(lambda result, *a: pushes.append(result))
        assert client.send_telemetry({"windSpeed": "42", "temperature": 21.5}).get() == 0
        assert client.send_telemetry({"ts": 1719999999999, "values": {"gust": 50}}).get() == 0
        assert client.send_attributes({"geoZone": "Zone A", "fw": "v1"}).get() == 0
        client.request_attributes(client_keys=["geoZone"], callback=lambda r, e, *a: answers.append(r))
        wait_for(lambda: answers, what="the attribute response")
        assert answers[0] == {"client": {"geoZone": "Zone A"}}
        # PUBACK came after the store commit, so REST sees the data at once.
        assert rest.latest_values(dev_id, "windSpeed,temperature") == {"windSpeed": 42, "temperature": 21.5}
        assert rest.latest(dev_id, "gust")["gust"][0] == {"ts": 1719999999999, "value": 50}
        assert rest.attrs(dev_id, "CLIENT_SCOPE") == {"geoZone": "Zone A", "fw": "v1"}
        # a shared attribute saved over REST is pushed to the subscribed device
        r = rest.post(f"/api/plugins/telemetry/DEVICE/{dev_id}/attributes/SHARED_SCOPE", {"targetSpeed": 12})
        assert r.ok, r.text
        wait_for(lambda: pushes, what="the shared-attribute push")
        assert pushes[0] == {"targetSpeed": 12}
    finally:
        client.disconnect()


def test_official_gateway_client_creates_devices_with_type(mqtt_platform, rest):
    from tb_gateway_mqtt import TBGatewayMqttClient

    token, sub = uuid.uuid4().hex, unique("Station")
    rest.device(unique("Analytics Gateway"), "gateway", token, gateway=True)
    gw = TBGatewayMqttClient(mqtt_platform.mqtt_host, port=mqtt_platform.mqtt_port, username=token)
    answers = []
    gw.connect()
    try:
        wait_for(gw.is_connected, what="the gateway client to connect")
        assert gw.gw_connect_device(sub, "thermostat").get() == 0
        assert gw.gw_send_telemetry(sub, {"temperature": 21}).get() == 0
        assert gw.gw_send_telemetry(sub, {"ts": 1700000000000, "values": {"humidity": 80}}).get() == 0
        assert gw.gw_send_attributes(sub, {"fw": "1.0"}).get() == 0
        gw.gw_request_client_attributes(sub, ["fw"], lambda r, e, *a: answers.append(r))
        wait_for(lambda: answers, what="the gateway attribute response")
        assert answers[0]["value"] == 1.0  # "1.0" is numeric text: typed DOUBLE as ThingsBoard does
    finally:
        gw.disconnect()
    dev = rest.get("/api/tenant/devices", deviceName=sub)
    assert dev["type"] == "thermostat"
    assert rest.latest_values(dev["id"]["id"], "temperature,humidity") == {"temperature": 21, "humidity": 80}


def test_plain_paho_311_publishes_telemetry_array_and_attributes(mqtt_platform, rest):
    import paho.mqtt.client as mqtt

    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Paho Device"), "WeatherStation", token)
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    cl.username_pw_set(token)
    cl.connect(mqtt_platform.mqtt_host, mqtt_platform.mqtt_port)
    cl.loop_start()
    try:
        payload = [{"ts": 1000, "values": {"windSpeed": 1}}, {"ts": 2000, "values": {"windSpeed": 2}}]
        cl.publish("v1/devices/me/telemetry", json.dumps(payload), qos=1).wait_for_publish(5)
        cl.publish("v1/devices/me/attributes", json.dumps({"geoZone": "Zone B"}), qos=1).wait_for_publish(5)
        # QoS 0 has no ack: poll REST for it
        cl.publish("v1/devices/me/telemetry", json.dumps({"q0": 7}), qos=0)
        wait_for(lambda: rest.latest_values(dev_id, "q0"), what="QoS 0 telemetry")
    finally:
        cl.disconnect()
        cl.loop_stop()
    hist = rest.get(f"/api/plugins/telemetry/DEVICE/{dev_id}/values/timeseries", keys="windSpeed",
                    startTs=0, endTs=10_000, useStrictDataTypes="true")
    assert sorted((p["ts"], p["value"]) for p in hist["windSpeed"]) == [(1000, 1), (2000, 2)]
    assert rest.attrs(dev_id, "CLIENT_SCOPE") == {"geoZone": "Zone B"}


def test_subscribe_outside_the_device_api_gets_failure_codes(mqtt_platform, rest):
    token = uuid.uuid4().hex
    rest.device(unique("Sub Device"), "WeatherStation", token)
    for level, bad in ((4, 0x80), (5, 0x8F)):
        s = raw_connect(mqtt_platform, token, level)
        s.sendall(c.encode_subscribe(1, [("v1/devices/me/attributes", 1), ("#", 0), ("v1/devices/me/rpc/request/+", 2)],
                                     level))
        pkts, _ = read_packets(s, level, count=2)
        assert pkts[0].reason_code == 0
        assert pkts[1].reason_codes == [1, bad, 1]
        s.close()


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("level,code", [(4, 5), (5, 0x86)])
def test_bad_token_is_refused_and_closed(mqtt_platform, level, code):
    s = raw_connect(mqtt_platform, "no-such-token", level)
    pkts, closed = read_packets(s, level, until_closed=True)
    assert pkts[0].reason_code == code and closed
    if level == 5:
        assert pkts[1].reason_code == 0x86  # DISCONNECT with the same reason, as ThingsBoard does


def test_connect_without_username_is_not_authorized(mqtt_platform):
    s = raw_connect(mqtt_platform, None, 5, client_id="")
    pkts, closed = read_packets(s, 5, until_closed=True)
    assert pkts[0].reason_code == 0x87 and closed


def test_official_client_with_bad_token_never_connects(mqtt_platform):
    from tb_device_mqtt import TBDeviceMqttClient

    client = TBDeviceMqttClient(mqtt_platform.mqtt_host, port=mqtt_platform.mqtt_port, username="wrong-token")
    results = []
    client._client.on_connect = lambda cl, ud, flags, rc, *a: results.append(rc)
    client._client.connect(mqtt_platform.mqtt_host, mqtt_platform.mqtt_port)
    client._client.loop_start()
    try:
        wait_for(lambda: results, what="the CONNACK")
    finally:
        client._client.loop_stop()
        client._client.disconnect()
    assert results[0] == 134 and not client.is_connected()


@pytest.mark.parametrize("level,qos", [(5, 1), (5, 0), (4, 1)])
def test_malformed_json(mqtt_platform, rest, level, qos):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Bad JSON"), "WeatherStation", token)
    s = raw_connect(mqtt_platform, token, level)
    read_packets(s, level)  # CONNACK
    s.sendall(c.encode_publish("v1/devices/me/telemetry", b"{windSpeed: oops", qos, 1, protocol_level=level))
    if level == 5 and qos == 1:
        pkts, _ = read_packets(s, level)
        assert pkts[0].reason_code == c.RC_PAYLOAD_FORMAT_INVALID
        # the session stays: a good message afterwards is stored
        s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"ok":1}', 1, 2, protocol_level=level))
        pkts, _ = read_packets(s, level)
        assert (pkts[0].packet_id, pkts[0].reason_code) == (2, 0)
        assert rest.latest_values(dev_id, "ok") == {"ok": 1}
    else:
        pkts, closed = read_packets(s, level, until_closed=True)
        assert closed
        if level == 5:
            assert pkts[0].reason_code == c.RC_PAYLOAD_FORMAT_INVALID
    s.close()


def test_unknown_topic_gets_0x90_and_session_stays(mqtt_platform, rest):
    token = uuid.uuid4().hex
    rest.device(unique("Lost"), "WeatherStation", token)
    s = raw_connect(mqtt_platform, token, 5)
    read_packets(s, 5)
    s.sendall(c.encode_publish("some/other/topic", b"{}", 1, 9, protocol_level=5) + c.encode_pingreq())
    pkts, closed = read_packets(s, 5, count=2)
    assert (pkts[0].packet_id, pkts[0].reason_code) == (9, c.RC_TOPIC_NAME_INVALID)
    assert pkts[1].kind == c.PINGRESP and not closed


def test_oversized_packet_and_garbage_close_only_that_session(mqtt_platform, rest):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Neighbour"), "WeatherStation", token)
    good = raw_connect(mqtt_platform, token, 4)
    read_packets(good, 4)
    big = raw_connect(mqtt_platform, token, 5)
    read_packets(big, 5)
    big.sendall(c.encode_publish("v1/devices/me/telemetry", b"x" * 70_000, 1, 1, protocol_level=5))
    pkts, closed = read_packets(big, 5, until_closed=True)
    assert closed and pkts and pkts[0].reason_code == c.RC_PACKET_TOO_LARGE
    junk = socket.create_connection((mqtt_platform.mqtt_host, mqtt_platform.mqtt_port), timeout=5)
    junk.sendall(b"\x00\xff\xfe garbage that is not MQTT")
    assert read_packets(junk, 4, until_closed=True)[1]
    # the well-behaved session carries on
    good.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"alive":true}', 1, 5))
    pkts, _ = read_packets(good, 4)
    assert pkts[0].packet_id == 5
    assert rest.latest_values(dev_id, "alive") == {"alive": True}


def test_pingreq_and_keepalive_expiry(mqtt_platform, rest):
    token = uuid.uuid4().hex
    rest.device(unique("Sleepy"), "WeatherStation", token)
    s = socket.create_connection((mqtt_platform.mqtt_host, mqtt_platform.mqtt_port), timeout=10)
    s.sendall(c.encode_connect("k", username=token, keep_alive=1, protocol_level=5) + c.encode_pingreq())
    pkts, _ = read_packets(s, 5, count=2)
    assert pkts[1].kind == c.PINGRESP
    started = time.monotonic()
    pkts, closed = read_packets(s, 5, until_closed=True)  # silent for > 1.5 × 1 s
    assert closed and 1.4 < time.monotonic() - started < 5
    assert pkts and pkts[0].reason_code == 0x8D  # Keep Alive timeout


def test_stats_count_refusals_and_messages(mqtt_platform, rest):
    """The counters a user reads under /tbspark/stats move with what the transport saw."""
    def stats():
        return requests.get(mqtt_platform.url + "/tbspark/stats", headers=rest.h, timeout=5).json()
    before = stats()
    read_packets(raw_connect(mqtt_platform, "not-a-token", 4), 4, until_closed=True)
    token = uuid.uuid4().hex
    rest.device(unique("Counted"), "WeatherStation", token)
    s = raw_connect(mqtt_platform, token, 4)
    read_packets(s, 4)
    s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"n":1}', 1, 1))
    read_packets(s, 4)
    s.close()
    after = stats()
    assert after["mqtt"]["rejected_connects"] == before["mqtt"]["rejected_connects"] + 1
    assert after["mqtt"]["messages"] >= before["mqtt"]["messages"] + 1
    assert after["engine"]["messages_in"] >= before["engine"]["messages_in"] + 1


def test_event_loop_choice(monkeypatch):
    """The platform runs on uvloop when installed; TBSPARK_EVENT_LOOP=asyncio forces the stock loop
    (A/B runs) and a wrong value is a clear error, not a silent fallback."""
    from tbspark.errors import StackError
    from tbspark.platform.app import loop_factory

    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("TBSPARK_EVENT_LOOP", raising=False)
    assert loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("TBSPARK_EVENT_LOOP", "asyncio")
    assert loop_factory() is None
    monkeypatch.setenv("TBSPARK_EVENT_LOOP", "libuv")
    with pytest.raises(StackError, match="TBSPARK_EVENT_LOOP"):
        loop_factory()
