"""Values ThingsBoard refuses, at the platform's door (issue 17): a lone UTF-16 surrogate, a ts beyond
64 bits, a key longer than 255, over MQTT 3.1.1 (the session is closed without PUBACK, so the device
resends), MQTT 5 (PUBACK 0x99, the session stays) and REST (ThingsBoard's 400). Nothing refused is
stored, nothing stored is lost, and no traceback reaches the log. Also: device labels that would break
the device list, and QoS 2 (PUBREC/PUBREL/PUBCOMP, stored once)."""

from __future__ import annotations

import json
import uuid

import pytest

from tbspark.mqtt import codec as c
from tests.fixtures.rawmqtt import RawMqtt, reason

TELEMETRY = "v1/devices/me/telemetry"
LONG_KEY = "k" * 256

# (name, payload): each is parseable JSON that ThingsBoard refuses or that cannot be stored.
BAD = [
    ("surrogate-key", b'{"k\\ud800": 1}'),
    ("surrogate-value", b'{"k": "a\\udfffb"}'),
    ("ts-beyond-64-bits", b'{"ts": 99999999999999999999, "values": {"k": 1}}'),
    ("ts-exponent-beyond-64-bits", b'{"ts": 1e30, "values": {"k": 1}}'),
    ("key-longer-than-255", json.dumps({LONG_KEY: 1}).encode()),
]


def _device(http, url: str, gateway: bool = False) -> tuple[str, str]:
    body = {"name": f"harden-ingest-{uuid.uuid4().hex[:8]}", "type": "harden"}
    if gateway:
        body["additionalInfo"] = {"gateway": True}
    r = http.post(f"{url}/api/device", json=body, timeout=10)
    r.raise_for_status()
    dev = r.json()["id"]["id"]
    token = http.get(f"{url}/api/device/{dev}/credentials", timeout=10).json()["credentialsId"]
    return dev, token


def _keys(http, url: str, dev: str) -> list:
    r = http.get(f"{url}/api/plugins/telemetry/DEVICE/{dev}/keys/timeseries", timeout=10)
    r.raise_for_status()
    return r.json()


def _log_tail(platform, since: int) -> str:
    with open(platform.log, "rb") as fh:
        fh.seek(since)
        return fh.read().decode(errors="replace")


@pytest.mark.parametrize("name,payload", BAD, ids=[b[0] for b in BAD])
def test_mqtt311_bad_value_closes_without_puback(platform, tenant_http, name, payload):
    dev, token = _device(tenant_http, platform.url)
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token)
    m.publish(TELEMETRY, payload, qos=1, packet_id=5)
    assert m.recv() is None, "a refused payload must close the 3.1.1 session, without PUBACK"
    # The device resends on a new session; a good point is acknowledged and stored.
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token)
    m.publish(TELEMETRY, b'{"ok": 1}', qos=1, packet_id=6)
    ptype, _f, body = m.recv()
    assert (ptype, body[:2]) == (c.PUBACK, b"\x00\x06")
    m.close()
    assert _keys(tenant_http, platform.url, dev) == ["ok"]


@pytest.mark.parametrize("name,payload", BAD, ids=[b[0] for b in BAD])
def test_mqtt5_bad_value_gets_puback_0x99(platform, tenant_http, name, payload):
    dev, token = _device(tenant_http, platform.url)
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token, level=c.MQTT_5)
    m.publish(TELEMETRY, payload, qos=1, packet_id=5)
    ptype, _f, body = m.recv()
    assert (ptype, body[:2], reason(body, c.MQTT_5)) == (c.PUBACK, b"\x00\x05", c.RC_PAYLOAD_FORMAT_INVALID)
    m.publish(TELEMETRY, b'{"ok": 1}', qos=1, packet_id=6)  # the session stays
    ptype, _f, body = m.recv()
    assert (ptype, body[:2], reason(body, c.MQTT_5)) == (c.PUBACK, b"\x00\x06", 0)
    m.close()
    assert _keys(tenant_http, platform.url, dev) == ["ok"]


def test_mqtt_key_of_255_is_stored_and_attribute_key_of_256_refused(platform, tenant_http):
    dev, token = _device(tenant_http, platform.url)
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token)
    m.publish(TELEMETRY, json.dumps({"k" * 255: 1}).encode(), qos=1, packet_id=1)
    assert m.recv()[0] == c.PUBACK
    m.publish("v1/devices/me/attributes", json.dumps({LONG_KEY: 1}).encode(), qos=1, packet_id=2)
    assert m.recv() is None
    assert _keys(tenant_http, platform.url, dev) == ["k" * 255]
    # (the device state's SERVER_SCOPE attributes are the platform's own; no client attribute stored)
    r = tenant_http.get(f"{platform.url}/api/plugins/telemetry/DEVICE/{dev}/keys/attributes/CLIENT_SCOPE",
                        timeout=10)
    assert r.json() == []


@pytest.mark.parametrize("name,payload", BAD, ids=[b[0] for b in BAD])
def test_rest_bad_value_is_a_400_without_traceback(platform, tenant_http, name, payload):
    dev, _token = _device(tenant_http, platform.url)
    since = platform.log.stat().st_size
    r = tenant_http.post(f"{platform.url}/api/plugins/telemetry/DEVICE/{dev}/timeseries/ANY", data=payload,
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    if name == "key-longer-than-255":  # KvUtils.validate's DataValidationException, as TB words it
        assert r.text == "Validation error: key length must be equal or less than 255"
    else:
        assert r.text.startswith("Unable to parse time series payload"), r.text
    if not name.startswith("ts"):  # as attributes, {"ts": …, "values": …} is two keys, not a timestamp
        r = tenant_http.post(f"{platform.url}/api/plugins/telemetry/DEVICE/{dev}/attributes/SERVER_SCOPE",
                             data=payload, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400, r.text
    assert _keys(tenant_http, platform.url, dev) == []
    assert "Traceback" not in _log_tail(platform, since)


# What ThingsBoard CE 4.3.1.3 answers (checked live): Jackson refuses NaN, an object or an array for
# the String label (500, errorCode 2), coerces a number to its text, and the validator refuses more
# than 255 characters (400).
@pytest.mark.parametrize("label,status", [("NaN", 500), ('{"a": 1}', 500), ("[1]", 500),
                                          ('"' + "x" * 256 + '"', 400), ("12", 200)])
def test_device_label_as_thingsboard_takes_it_and_the_list_stays_valid(platform, tenant_http, label, status):
    name = f"harden-ingest-label-{uuid.uuid4().hex[:8]}"
    r = tenant_http.post(f"{platform.url}/api/device", data=f'{{"name": "{name}", "label": {label}}}',
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["label"] == "12"
    else:
        assert r.json()["errorCode"] == (2 if status == 500 else 31)
    r = tenant_http.get(f"{platform.url}/api/tenant/devices?pageSize=1000&page=0&textSearch=harden", timeout=10)
    assert r.status_code == 200
    names = [d["name"] for d in json.loads(r.text, parse_constant=pytest.fail)["data"]]
    assert (name in names) == (status == 200)


def test_device_name_longer_than_255_is_refused(platform, tenant_http):
    r = tenant_http.post(f"{platform.url}/api/device", json={"name": "harden-ingest-" + "n" * 250}, timeout=10)
    assert r.status_code == 400
    assert r.json()["message"] == "Validation error: name length must be equal or less than 255"


@pytest.mark.parametrize("level", [c.MQTT_311, c.MQTT_5])
def test_gateway_subdevice_name_longer_than_255_is_refused(platform, tenant_http, level):
    _gw, token = _device(tenant_http, platform.url, gateway=True)
    name = "harden-ingest-" + "n" * 250
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token, level=level)
    m.publish("v1/gateway/connect", json.dumps({"device": name}).encode(), qos=1, packet_id=3)
    got = m.recv()
    if level == c.MQTT_5:
        assert (got[0], reason(got[2], level)) == (c.PUBACK, c.RC_PAYLOAD_FORMAT_INVALID)
    else:
        assert got is None
    m.close()
    r = tenant_http.get(f"{platform.url}/api/tenant/devices?deviceName={name}", timeout=10)
    assert r.status_code == 404


@pytest.mark.parametrize("level", [c.MQTT_311, c.MQTT_5])
def test_qos2_publish_is_stored_once_with_pubrec_pubrel_pubcomp(platform, tenant_http, level):
    dev, token = _device(tenant_http, platform.url)
    m = RawMqtt(platform.mqtt_host, platform.mqtt_port, token, level=level)
    m.publish(TELEMETRY, b'{"ts": 1000, "values": {"q": 1}}', qos=2, packet_id=9)
    ptype, _f, body = m.recv()
    assert (ptype, body[:2]) == (c.PUBREC, b"\x00\x09"), "QoS 2 is answered with PUBREC, not PUBACK"
    # A retransmission before PUBREL is the same message: answered again, not stored again.
    m.publish(TELEMETRY, b'{"ts": 1000, "values": {"q": 2}}', qos=2, packet_id=9, dup=True)
    ptype, _f, body = m.recv()
    assert (ptype, body[:2]) == (c.PUBREC, b"\x00\x09")
    m.send(c.encode_puback(9, 0, level, kind=c.PUBREL))
    ptype, _f, body = m.recv()
    assert (ptype, body[:2]) == (c.PUBCOMP, b"\x00\x09")
    # Released: the id carries a new message now.
    m.publish(TELEMETRY, b'{"ts": 2000, "values": {"q": 3}}', qos=2, packet_id=9)
    assert m.recv()[0] == c.PUBREC
    # A PUBREL for an id never received: PUBCOMP all the same (MQTT 5: reason 0x92, not found).
    m.send(c.encode_puback(33, 0, level, kind=c.PUBREL))
    ptype, _f, body = m.recv()
    assert (ptype, body[:2], reason(body, level)) == (c.PUBCOMP, b"\x00\x21", 0x92 if level == c.MQTT_5 else 0)
    m.close()
    r = tenant_http.get(f"{platform.url}/api/plugins/telemetry/DEVICE/{dev}/values/timeseries/history"
                        "?keys=q&startTs=0&endTs=10000&orderBy=ASC", timeout=10)
    assert r.json() == {"q": [{"ts": 1000, "value": "1"}, {"ts": 2000, "value": "3"}]}
