"""Server-side RPC (contract §6.2, §7.2) through the real platform process, with the official clients as
the yardstick: tb-rest-client sends, tb-mqtt-client's device and gateway clients answer. Also the
REST error answers, the v2 short topics, shared-attribute deletion pushes and MQTT 5 topic aliases."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from tests.integration.test_mqtt import Endpoint, Rest, unique, wait_for

# A request body may carry its own expiry (epoch ms); it overrides the 5 s minimum timeout, which
# keeps the "nobody answered" cases short.
SHORT_MS = 400


@pytest.fixture(scope="module")
def ep(platform) -> Endpoint:
    return Endpoint(platform.url, platform.mqtt_host, platform.mqtt_port)


@pytest.fixture(scope="module")
def rest(ep) -> Rest:
    return Rest(ep.url)


@pytest.fixture(scope="module")
def rest_client(ep):
    from tb_rest_client.rest_client import RestClient

    client = RestClient(ep.url)
    client.login("tenant@thingsboard.org", "tenant")
    return client


def soon(ms: int = SHORT_MS) -> int:
    return int(time.time() * 1000) + ms


def paho_client(ep: Endpoint, token: str, v5: bool = False):
    """A plain paho-mqtt 2.x client, connected (loop running) — stop it with ``close(client)``."""
    import paho.mqtt.client as mqtt

    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}", protocol=proto)
    cl.username_pw_set(token)
    cl.received, cl.disconnects = [], []
    cl.on_message = lambda c, u, m: cl.received.append((m.topic, m.payload))
    cl.on_disconnect = lambda c, u, flags, rc, props=None: cl.disconnects.append(rc)
    cl.connect(ep.mqtt_host, ep.mqtt_port, keepalive=30)
    cl.loop_start()
    wait_for(cl.is_connected, what="paho to connect")
    return cl


def close(cl) -> None:
    cl.disconnect()
    cl.loop_stop()


def subscribe(cl, topic: str) -> None:
    import paho.mqtt.client as mqtt

    done = threading.Event()
    cl.on_subscribe = lambda *a: done.set()
    if cl.protocol == mqtt.MQTTv5:
        cl.subscribe(topic, options=mqtt.SubscribeOptions(qos=1))
    else:
        cl.subscribe(topic, 1)
    assert done.wait(10), f"no SUBACK for {topic}"


# ------------------------------------------------------------------------------ official clients

def test_two_way_and_one_way_rpc_reach_the_official_device_client(ep, rest, rest_client):
    from tb_device_mqtt import TBDeviceMqttClient
    from tb_rest_client.models import DeviceId

    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Turbine"), "WeatherStation", token)
    seen = []
    client = TBDeviceMqttClient(ep.mqtt_host, port=ep.mqtt_port, username=token)

    def on_rpc(request_id, body):
        seen.append((request_id, body))
        if body["method"] == "getWindSpeed":
            client.send_rpc_reply(request_id, {"windSpeed": 12.5, "unit": body["params"]["unit"]})

    client.set_server_side_rpc_request_handler(on_rpc)
    client.connect()
    try:
        wait_for(client.is_connected, what="tb-mqtt-client to connect")
        device = DeviceId(dev_id, "DEVICE")
        answer = rest_client.handle_two_way_device_rpc_request(
            device, {"method": "getWindSpeed", "params": {"unit": "m/s"}})
        assert answer == {"windSpeed": 12.5, "unit": "m/s"}
        # one-way: 200 as soon as the device has it; the device sees the same request shape
        rest_client.handle_one_way_device_rpc_request(device, {"method": "setLed", "params": {"on": True}})
        wait_for(lambda: len(seen) == 2, what="the one-way request at the device")
        # request ids count from 0 per device, as ThingsBoard's device actor numbers them
        assert seen == [("0", {"method": "getWindSpeed", "params": {"unit": "m/s"}}),
                        ("1", {"method": "setLed", "params": {"on": True}})]
    finally:
        client.disconnect()


def test_gateway_client_answers_rpc_for_its_device(ep, rest):
    from tb_gateway_mqtt import TBGatewayMqttClient

    token, sub = uuid.uuid4().hex, unique("Station")
    rest.device(unique("Analytics Gateway"), "gateway", token, gateway=True)
    gw = TBGatewayMqttClient(ep.mqtt_host, port=ep.mqtt_port, username=token)
    seen = []

    def on_rpc(gateway, content):
        seen.append(content)
        data = content["data"]
        if data["method"] == "toggle_gpio":
            gateway.gw_send_rpc_reply(content["device"], data["id"], {"pin": data["params"]["pin"], "ok": True})

    gw.gw_set_server_side_rpc_request_handler(on_rpc)
    gw.connect()
    try:
        wait_for(gw.is_connected, what="the gateway client to connect")
        assert gw.gw_connect_device(sub, "thermostat").get() == 0
        sub_id = rest.device_id(sub)
        r = rest.post(f"/api/rpc/twoway/{sub_id}", {"method": "toggle_gpio", "params": {"pin": 1}})
        assert r.status_code == 200, r.text
        assert r.json() == {"pin": 1, "ok": True}
        assert seen == [{"device": sub, "data": {"id": 0, "method": "toggle_gpio", "params": {"pin": 1}}}]
        # one-way through the gateway: delivered is enough
        r = rest.post(f"/api/plugins/rpc/oneway/{sub_id}", {"method": "reboot", "params": {}})
        assert r.status_code == 200, r.text
        wait_for(lambda: len(seen) == 2, what="the one-way request at the gateway")
        assert seen[1]["data"] == {"id": 1, "method": "reboot", "params": {}}
    finally:
        gw.disconnect()


def test_rpc_sent_before_the_device_connects_is_delivered_when_it_subscribes(ep, rest):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Late Turbine"), "WeatherStation", token)
    result = {}

    def call():  # the REST caller waits while the device is still offline
        result["r"] = rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "ping", "params": [], "timeout": 20000})

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: requests.get(ep.url + "/tbspark/stats", headers=rest.h).json()["mqtt"]["rpc"]["pending"] >= 1,
             what="the request to be pending")
    cl = paho_client(ep, token)
    try:
        subscribe(cl, "v1/devices/me/rpc/request/+")
        wait_for(lambda: cl.received, what="the pending request")
        topic, payload = cl.received[0]
        assert topic == "v1/devices/me/rpc/request/0"
        assert json.loads(payload) == {"method": "ping", "params": []}
        cl.publish("v1/devices/me/rpc/response/0", b'"pong"', qos=1).wait_for_publish(10)
        t.join(15)
        assert result["r"].status_code == 200 and result["r"].json() == "pong"
    finally:
        close(cl)


# ------------------------------------------------------------------------------ outcomes without a reply

def test_offline_device_gets_504_on_v2_and_409_on_v1(ep, rest):
    dev_id = rest.device(unique("Offline"), "WeatherStation", uuid.uuid4().hex)
    for path, status in ((f"/api/rpc/twoway/{dev_id}", 504), (f"/api/rpc/oneway/{dev_id}", 504),
                         (f"/api/plugins/rpc/twoway/{dev_id}", 409), (f"/api/plugins/rpc/oneway/{dev_id}", 409)):
        r = rest.post(path, {"method": "setLed", "params": {}, "expirationTime": soon()})
        assert (r.status_code, r.text) == (status, ""), path


def test_device_that_does_not_answer_gets_504_on_v2_and_408_on_v1(ep, rest):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Silent"), "WeatherStation", token)
    cl = paho_client(ep, token)
    try:
        subscribe(cl, "v1/devices/me/rpc/request/+")
        r = rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "slow", "params": {}, "expirationTime": soon()})
        assert (r.status_code, r.text) == (504, "")
        r = rest.post(f"/api/plugins/rpc/twoway/{dev_id}", {"method": "slow", "params": {}, "expirationTime": soon()})
        assert (r.status_code, r.text) == (408, "")
        wait_for(lambda: len(cl.received) == 2, what="both requests at the device")
        assert [t for t, _ in cl.received] == ["v1/devices/me/rpc/request/0", "v1/devices/me/rpc/request/1"]
        # a late answer to an expired request is accepted and ignored
        cl.publish("v1/devices/me/rpc/response/0", b"{}", qos=1).wait_for_publish(10)
    finally:
        close(cl)


def test_reply_that_is_not_json_gets_406_and_an_empty_reply_200(ep, rest):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Texty"), "WeatherStation", token)
    cl = paho_client(ep, token)
    replies = iter([b"not json", b""])

    def answer(c, u, m):
        c.publish("v1/devices/me/rpc/response/" + m.topic.rsplit("/", 1)[1], next(replies), qos=1)

    cl.on_message = answer
    try:
        subscribe(cl, "v1/devices/me/rpc/request/+")
        r = rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "a", "params": {}})
        assert (r.status_code, r.text) == (406, "")
        r = rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "b", "params": {}})
        assert (r.status_code, r.text) == (200, "")
    finally:
        close(cl)


def test_v2_short_topics_carry_rpc(ep, rest):
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Short"), "WeatherStation", token)
    cl = paho_client(ep, token, v5=True)
    cl.on_message = lambda c, u, m: c.publish("v2/r/res/" + m.topic.rsplit("/", 1)[1],
                                              json.dumps({"got": m.topic}), qos=1)
    try:
        subscribe(cl, "v2/r/req/+")
        r = rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "m", "params": 1})
        assert r.status_code == 200, r.text
        assert r.json() == {"got": "v2/r/req/0"}
    finally:
        close(cl)


# ------------------------------------------------------------------------------ REST errors

def test_rpc_rest_errors_are_thingsboards(ep, rest, platform):
    dev_id = rest.device(unique("Errors"), "WeatherStation", uuid.uuid4().hex)
    missing = str(uuid.uuid4())
    r = rest.post(f"/api/rpc/twoway/{missing}", {"method": "m", "params": {}})
    assert (r.status_code, r.text) == (404, "Device with requested id wasn't found!")
    r = rest.post("/api/rpc/oneway/not-a-uuid", {"method": "m", "params": {}})
    assert r.status_code == 400 and r.json()["message"] == "Invalid UUID string: not-a-uuid"
    r = requests.post(f"{ep.url}/api/rpc/twoway/{dev_id}", data="{oops", headers=rest.h, timeout=10)
    assert r.status_code == 400 and r.json()["message"] == "Invalid request body"
    r = rest.post(f"/api/rpc/twoway/{dev_id}", {"params": {}})
    assert r.status_code == 400 and "'method'" in r.json()["message"]
    for timeout in ('"soon"', "NaN", "1" + "0" * 400):  # never a 500, whatever the number
        body = '{"method": "m", "params": {}, "timeout": %s}' % timeout
        r = requests.post(f"{ep.url}/api/rpc/twoway/{dev_id}", data=body, headers=rest.h, timeout=10)
        assert r.status_code == 400 and "'timeout'" in r.json()["message"], timeout
    r = requests.post(f"{ep.url}/api/rpc/twoway/{dev_id}", json={"method": "m", "params": {}}, timeout=10)
    assert r.status_code == 401
    sysadmin = platform.session("sysadmin@thingsboard.org", "sysadmin")
    r = sysadmin.post(f"{ep.url}/api/rpc/twoway/{dev_id}", json={"method": "m", "params": {}}, timeout=10)
    assert (r.status_code, r.text) == (403, "System administrator is not allowed to perform this operation!")


def test_tb_rest_client_sees_the_timeout_as_an_api_error(ep, rest, rest_client):
    from tb_rest_client.models import DeviceId
    from tb_rest_client.rest import ApiException

    dev_id = rest.device(unique("Offline TB"), "WeatherStation", uuid.uuid4().hex)
    with pytest.raises(ApiException) as exc:
        rest_client.handle_two_way_device_rpc_request(
            DeviceId(dev_id, "DEVICE"), {"method": "m", "params": {}, "expirationTime": soon()})
    assert exc.value.status == 409  # the v1 path: no session could receive it


# ------------------------------------------------------------------------------ shared-attribute deletion

def test_shared_attribute_deletion_is_pushed_to_device_and_gateway(ep, rest):
    from tb_device_mqtt import TBDeviceMqttClient
    from tb_gateway_mqtt import TBGatewayMqttClient

    token, gw_token, sub = uuid.uuid4().hex, uuid.uuid4().hex, unique("Sub")
    dev_id = rest.device(unique("Shared"), "WeatherStation", token)
    rest.device(unique("Gateway"), "gateway", gw_token, gateway=True)
    client = TBDeviceMqttClient(ep.mqtt_host, port=ep.mqtt_port, username=token)
    gw = TBGatewayMqttClient(ep.mqtt_host, port=ep.mqtt_port, username=gw_token)
    pushes, gw_pushes = [], []
    client.connect()
    gw.connect()
    try:
        wait_for(client.is_connected, what="tb-mqtt-client to connect")
        wait_for(gw.is_connected, what="the gateway client to connect")
        client.subscribe_to_all_attributes(lambda result, *a: pushes.append(result))
        gw.gw_subscribe_to_all_attributes(lambda content: gw_pushes.append(content))
        assert gw.gw_connect_device(sub).get() == 0
        sub_id = rest.device_id(sub)
        for did in (dev_id, sub_id):
            r = rest.post(f"/api/plugins/telemetry/DEVICE/{did}/attributes/SHARED_SCOPE", {"targetSpeed": 12})
            assert r.ok, r.text
            r = requests.delete(f"{ep.url}/api/plugins/telemetry/DEVICE/{did}/SHARED_SCOPE",
                                params={"keys": "targetSpeed"}, headers=rest.h, timeout=10)
            assert r.ok, r.text
        wait_for(lambda: len(pushes) == 2, what="the device's deletion push")
        assert pushes == [{"targetSpeed": 12}, {"deleted": ["targetSpeed"]}]
        wait_for(lambda: len(gw_pushes) == 2, what="the gateway's deletion push")
        assert gw_pushes == [{"device": sub, "data": {"targetSpeed": 12}},
                             {"device": sub, "data": {"deleted": ["targetSpeed"]}}]
    finally:
        client.disconnect()
        gw.disconnect()


# ------------------------------------------------------------------------------ MQTT 5 topic aliases

def test_paho_mqtt5_topic_alias(ep, rest):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    token = uuid.uuid4().hex
    dev_id = rest.device(unique("Alias"), "WeatherStation", token)
    cl = paho_client(ep, token, v5=True)
    try:
        def props(alias: int) -> Properties:
            p = Properties(PacketTypes.PUBLISH)
            p.TopicAlias = alias
            return p

        cl.publish("v1/devices/me/telemetry", b'{"windSpeed": 1}', qos=1, properties=props(3)).wait_for_publish(10)
        cl.publish("", b'{"windSpeed": 2, "gust": 5}', qos=1, properties=props(3)).wait_for_publish(10)
        wait_for(lambda: rest.latest_values(dev_id, "windSpeed,gust") == {"windSpeed": 2, "gust": 5},
                 what="telemetry sent through the alias")
        # above the Topic Alias Maximum the server announced (16): DISCONNECT 0x94
        cl.publish("v1/devices/me/telemetry", b'{"windSpeed": 3}', qos=1, properties=props(17))
        wait_for(lambda: cl.disconnects, what="the server to disconnect")
        assert cl.disconnects[0] == 0x94
    finally:
        close(cl)
