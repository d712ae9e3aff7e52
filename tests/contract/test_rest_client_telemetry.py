"""tb-rest-client 4.4 against the platform: telemetry (latest, history, aggregated) and attributes."""

from __future__ import annotations

import json

import pytest
from tb_rest_client.models import Device
from tb_rest_client.rest import ApiException

T0 = 1_700_000_000_000  # a fixed past instant, so history ranges are exact
STATE_KEYS = {"active", "lastActivityTime", "lastConnectTime", "lastDisconnectTime", "inactivityAlarmTime"}


@pytest.fixture()
def device(client, unique):
    return client.save_device(Device(name=f"contract-ts-{unique}", type="default"))


def values(series: dict, key: str) -> list:
    return [(p.ts, p.value) for p in series[key]]


def test_latest_values_typed_and_as_strings(client, device):
    client.save_entity_telemetry(device.id, "ANY", {"ts": T0, "values": {
        "windSpeed": 21.0, "count": 33, "fromString": "33", "ok": True, "name": "abc", "obj": {"a": 1}}})
    strict = client.get_latest_timeseries(device.id, keys="windSpeed,count,fromString,ok,name,obj",
                                          use_strict_data_types=True)
    assert {k: v[0].value for k, v in strict.items()} == {
        "windSpeed": 21.0, "count": 33, "fromString": 33, "ok": True, "name": "abc", "obj": {"a": 1}}
    assert all(v[0].ts == T0 for v in strict.values())
    loose = client.get_latest_timeseries(device.id, keys="windSpeed,count,ok,obj")
    assert {k: v[0].value for k, v in loose.items()} == {
        "windSpeed": "21.0", "count": "33", "ok": "true", "obj": '{"a":1}'}


def test_requested_key_without_data_is_null(client, device):
    client.save_entity_telemetry(device.id, "ANY", {"t": 1})
    got = client.get_latest_timeseries(device.id, keys="t,missing")
    assert got["missing"][0].value is None and got["t"][0].value == "1"
    assert sorted(client.get_timeseries_keys_v1(device.id)) == ["t"]


def test_history_raw_and_aggregated(client, device):
    points = [{"ts": T0 + i * 1000, "values": {"windSpeed": float(i), "n": i}} for i in range(30)]
    client.save_entity_telemetry(device.id, "ANY", points)
    raw = client.get_timeseries(device.id, start_ts=T0, end_ts=T0 + 30_000, keys="windSpeed", limit=5,
                                agg="NONE", order_by="ASC", use_strict_data_types=True)
    assert values(raw, "windSpeed") == [(T0 + i * 1000, float(i)) for i in range(5)]
    desc = client.get_timeseries(device.id, start_ts=T0, end_ts=T0 + 30_000, keys="n", limit=2)
    assert values(desc, "n") == [(T0 + 29_000, "29"), (T0 + 28_000, "28")]  # default DESC, strings
    avg = client.get_timeseries(device.id, start_ts=T0, end_ts=T0 + 30_000, keys="windSpeed", interval=10_000,
                                agg="AVG", order_by="ASC", use_strict_data_types=True)
    # Bucket ts is the middle of the bucket; AVG of 0..9 = 4.5 etc.
    assert values(avg, "windSpeed") == [(T0 + 5000, 4.5), (T0 + 15_000, 14.5), (T0 + 25_000, 24.5)]
    for agg, expected in (("MIN", [0, 10, 20]), ("MAX", [9, 19, 29]), ("SUM", [45, 145, 245]),
                          ("COUNT", [10, 10, 10])):
        got = client.get_timeseries(device.id, start_ts=T0, end_ts=T0 + 30_000, keys="n", interval=10_000,
                                    agg=agg, order_by="ASC", use_strict_data_types=True)
        assert [v for _, v in values(got, "n")] == expected, agg


def test_same_timestamp_overwrites(client, device):
    client.save_entity_telemetry(device.id, "ANY", {"ts": T0, "values": {"windSpeed": 10}})
    client.save_entity_telemetry(device.id, "ANY", {"ts": T0, "values": {"windSpeed": 12}})
    got = client.get_timeseries(device.id, start_ts=T0, end_ts=T0 + 1, keys="windSpeed",
                                use_strict_data_types=True)
    assert values(got, "windSpeed") == [(T0, 12)]


def test_attributes_by_scope_keys_and_client_scope_refused(client, device):
    client.save_entity_attributes_v2(device.id, "SERVER_SCOPE", {"threshold": 20, "ratio": 0.5, "on": False,
                                                                 "zone": "Zone A", "cfg": {"x": [1, 2]}})
    client.save_entity_attributes_v2(device.id, "SHARED_SCOPE", {"target": 7})
    got = {a.key: a.value for a in client.get_attributes_by_scope(device.id, "SERVER_SCOPE",
                                                                    keys="threshold,ratio,on,zone,cfg")}
    assert got == {"threshold": 20, "ratio": 0.5, "on": False, "zone": "Zone A", "cfg": {"x": [1, 2]}}
    every = {a.key: a.value for a in client.get_attributes(device.id)}
    assert every["target"] == 7 and every["zone"] == "Zone A"
    # Device state attributes (active, …) are ThingsBoard's own: test_every_device_has_an_active_attribute.
    assert sorted(set(client.get_attribute_keys(device.id)) - STATE_KEYS) == sorted(
        ["threshold", "ratio", "on", "zone", "cfg", "target"])
    with pytest.raises(ApiException) as err:
        client.save_entity_attributes_v2(device.id, "CLIENT_SCOPE", {"x": 1})
    body = err.value.body.decode() if isinstance(err.value.body, bytes) else err.value.body
    assert (err.value.status, body) == (400, "Invalid scope: CLIENT_SCOPE")


def test_every_device_has_an_active_attribute(client, device):
    """ThingsBoard keeps device state as SERVER_SCOPE attributes; a device that never connected is
    inactive. (On the embedded platform this comes with device state: helper devstate, issue 16.)"""
    import time

    deadline = time.monotonic() + 10  # ThingsBoard's device state service writes it just after the save
    while True:
        got = {a.key: a.value for a in client.get_attributes_by_scope(device.id, "SERVER_SCOPE", keys="active")}
        if got or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == {"active": False}


def test_bad_telemetry_bodies_get_bare_string_errors(http, target, device):
    url = f"{target.url}/api/plugins/telemetry/DEVICE/{device.id.id}/timeseries/ANY"
    cases = [
        ("{not json", "Unable to parse time series payload: Invalid JSON body!"),
        ("{}", "No time series data found in request body!"),
        ('{"a": null}', "Unable to parse time series payload. Invalid JSON body: Can't parse value: null"),
        ("[1]", "Unable to parse time series payload. Invalid JSON body: Can't parse value: 1"),
    ]
    for body, message in cases:
        r = http.post(url, data=body, headers={"Content-Type": "text/plain"})
        assert (r.status_code, r.text) == (400, message), body


def test_telemetry_on_unknown_device_and_bad_ids(http, target):
    unknown = "11111111-2222-3333-4444-555555555555"
    r = http.post(f"{target.url}/api/plugins/telemetry/DEVICE/{unknown}/timeseries/ANY", data='{"a":1}')
    assert (r.status_code, r.text) == (404, "Device with requested id wasn't found!")
    r = http.get(f"{target.url}/api/plugins/telemetry/DEVICE/not-a-uuid/values/timeseries")
    assert r.status_code == 400 and r.json()["errorCode"] == 31
    r = http.get(f"{target.url}/api/plugins/telemetry/device/{unknown}/values/timeseries")
    assert r.status_code == 400 and r.json()["errorCode"] == 31  # entity type must be upper-case


def test_old_history_spelling_and_text_plain(http, target, device):
    base = f"{target.url}/api/plugins/telemetry/DEVICE/{device.id.id}"
    r = http.post(f"{base}/timeseries/values", data=json.dumps([{"ts": T0, "values": {"w": 1}},
                                                                {"ts": T0 + 1, "values": {"w": 2}}]),
                  headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.text == ""
    r = http.get(f"{base}/values/timeseries", params={"keys": "w", "startTs": T0, "endTs": T0 + 10,
                                                      "orderBy": "ASC", "useStrictDataTypes": "True"})
    assert r.json() == {"w": [{"ts": T0, "value": 1}, {"ts": T0 + 1, "value": 2}]}


def test_asset_telemetry_as_the_aggregation_sink_writes_it(client, unique):
    from tb_rest_client.models import Asset

    zone = client.save_asset(Asset(name=f"Sink Zone {unique}", type="WeatherStation"))
    window = {"ts": T0 + 5000, "values": {"windSpeed": 42.5, "windSpeedCount": 10}}
    client.save_entity_telemetry(zone.id, "ANY", window)
    client.save_entity_telemetry(zone.id, "ANY", window)  # a replayed window is idempotent
    got = client.get_timeseries(zone.id, start_ts=T0, end_ts=T0 + 10_000, keys="windSpeed,windSpeedCount",
                                use_strict_data_types=True)
    assert values(got, "windSpeed") == [(T0 + 5000, 42.5)] and values(got, "windSpeedCount") == [(T0 + 5000, 10)]
