"""Time-series history as ThingsBoard answers it: aggregated buckets oldest first (whatever orderBy
says), calendar buckets (intervalType WEEK / WEEK_ISO / MONTH / QUARTER in a timeZone), and points
saved with a TTL leaving the answers once it passed. Against the embedded platform and, marked
``realtb``, a real ThingsBoard when TB_URL names one."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.platform import tenant_session
from tests.integration.test_mqtt import wait_for

BERLIN = ZoneInfo("Europe/Berlin")
T0 = int(datetime(2026, 3, 10, tzinfo=BERLIN).timestamp() * 1000)  # a Tuesday in Berlin


@pytest.fixture(scope="module", params=["embedded", pytest.param("realtb", marks=pytest.mark.realtb)])
def target(request):
    """(REST base URL, embedded?, MQTT port)."""
    if request.param == "realtb":
        url = os.environ.get("TB_URL")
        if not url:
            pytest.skip("TB_URL is unset: no real ThingsBoard to compare with")
        return url.rstrip("/"), False, int(os.environ.get("TB_MQTT_PORT", "1883"))
    p = request.getfixturevalue("platform")
    return p.url, True, p.mqtt_port


@pytest.fixture()
def device(target):
    url = target[0]
    http = tenant_session(url)
    r = http.post(url + "/api/device", json={"name": f"devstate history {uuid.uuid4().hex[:8]}", "type": "devstate"})
    r.raise_for_status()
    return http, url, r.json()["id"]["id"]


def _save(http, url, dev, points, ttl_s: int | None = None):
    path = f"{url}/api/plugins/telemetry/DEVICE/{dev}/timeseries/ANY" + (f"/{ttl_s}" if ttl_s is not None else "")
    r = http.post(path, data=json.dumps(points), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def _history(http, url, dev, **params):
    r = http.get(f"{url}/api/plugins/telemetry/DEVICE/{dev}/values/timeseries", params={"keys": "v", **params})
    assert r.status_code == 200, r.text
    return r.json().get("v", [])


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=BERLIN).timestamp() * 1000)


def test_aggregated_buckets_come_oldest_first(device):
    http, url, dev = device
    _save(http, url, dev, [{"ts": T0 + i * 1000, "values": {"v": i}} for i in range(30)])
    for order in ("DESC", "ASC"):
        got = _history(http, url, dev, startTs=T0, endTs=T0 + 30_000, interval=10_000, agg="AVG", orderBy=order)
        assert [p["ts"] for p in got] == [T0 + 5000, T0 + 15_000, T0 + 25_000]
        assert [float(p["value"]) for p in got] == [4.5, 14.5, 24.5]
    raw = _history(http, url, dev, startTs=T0, endTs=T0 + 30_000, limit=3)
    assert [p["ts"] for p in raw] == [T0 + 29_000, T0 + 28_000, T0 + 27_000]  # raw points: newest first


def test_calendar_weeks_and_months_in_a_time_zone(device):
    http, url, dev = device
    # Sunday 15 March 23:30 Berlin is still Sunday 22:30 UTC: the zone decides the week.
    points = {ms(2026, 3, 10, 12): 1, ms(2026, 3, 14, 23, 30): 2, ms(2026, 3, 15, 0, 30): 4,
              ms(2026, 3, 16, 0, 30): 8, ms(2026, 4, 2, 9): 16}
    _save(http, url, dev, [{"ts": t, "values": {"v": v}} for t, v in points.items()])
    start, end = ms(2026, 3, 10), ms(2026, 4, 10)

    def buckets(interval_type: str) -> list[tuple[int, int]]:
        got = _history(http, url, dev, startTs=start, endTs=end, agg="SUM", intervalType=interval_type,
                       timeZone="Europe/Berlin", interval=0)
        return [(p["ts"], int(float(p["value"]))) for p in got]

    def mid(lo: int, hi: int) -> int:
        return lo + (hi - lo) // 2

    # WEEK: Sunday–Saturday. The first bucket runs from startTs to the end of its week.
    assert buckets("WEEK") == [(mid(start, ms(2026, 3, 15)), 3), (mid(ms(2026, 3, 15), ms(2026, 3, 22)), 12),
                               (mid(ms(2026, 3, 29), ms(2026, 4, 5)), 16)]
    # WEEK_ISO: Monday–Sunday.
    assert buckets("WEEK_ISO") == [(mid(start, ms(2026, 3, 16)), 7), (mid(ms(2026, 3, 16), ms(2026, 3, 23)), 8),
                                   (mid(ms(2026, 3, 30), ms(2026, 4, 6)), 16)]
    assert buckets("MONTH") == [(mid(start, ms(2026, 4, 1)), 15), (mid(ms(2026, 4, 1), end), 16)]
    assert buckets("QUARTER") == [(mid(start, ms(2026, 4, 1)), 15), (mid(ms(2026, 4, 1), end), 16)]
    # The same data in UTC: 14 March 23:30 Berlin is 22:30 UTC on Saturday, 15 March 00:30 Berlin is
    # Saturday 23:30 UTC: in UTC that point joins the first week.
    got = _history(http, url, dev, startTs=start, endTs=end, agg="SUM", intervalType="WEEK", timeZone="UTC")
    assert [int(float(p["value"])) for p in got][:2] == [7, 8]


def test_unknown_interval_type_is_a_bad_request(device):
    http, url, dev = device
    r = http.get(f"{url}/api/plugins/telemetry/DEVICE/{dev}/values/timeseries",
                 params={"keys": "v", "startTs": 0, "endTs": 10, "agg": "AVG", "intervalType": "FORTNIGHT"})
    assert r.status_code == 400  # ThingsBoard's words, as measured on 4.3.1.3
    assert r.json()["message"] == (
        "Method parameter 'intervalType': Failed to convert value of type 'java.lang.String' to required type "
        "'org.thingsboard.server.common.data.kv.IntervalType'; Failed to convert from type [java.lang.String] to "
        "type [@org.springframework.web.bind.annotation.RequestParam org.thingsboard.server.common.data.kv."
        "IntervalType] for value [FORTNIGHT]")
    assert r.json()["errorCode"] == 31


def test_points_saved_with_a_ttl_expire(device, target):
    if not target[1]:
        pytest.skip("ThingsBoard on PostgreSQL only counts a request's TTL (Cassandra expires points): "
                    "docs/thingsboard.md, Telemetry TTL")
    http, url, dev = device
    _save(http, url, dev, [{"ts": T0 + i, "values": {"v": i}} for i in range(3)], ttl_s=1)
    _save(http, url, dev, [{"ts": T0 + 10, "values": {"v": 10}}])  # no TTL: kept
    assert len(_history(http, url, dev, startTs=T0, endTs=T0 + 100)) == 4
    kept = wait_for(lambda: (h := _history(http, url, dev, startTs=T0, endTs=T0 + 100)) and len(h) == 1 and h,
                    what="the TTL'd points to expire")
    assert kept[0]["ts"] == T0 + 10
    count = _history(http, url, dev, startTs=T0, endTs=T0 + 100, agg="COUNT", interval=100)
    assert int(count[0]["value"]) == 1  # aggregates leave expired points out too


def test_save_node_default_ttl_makes_device_points_expire(target):
    url, embedded, mqtt_port = target
    if not embedded:
        pytest.skip("ThingsBoard on PostgreSQL only counts the save node's TTL (Cassandra expires points)")
    from tests.integration.test_devstate import _connected, _publish
    from tests.integration.test_mqtt import Endpoint

    http = tenant_session(url)
    pkg = "org.thingsboard.rule.engine."
    chain = http.post(url + "/api/ruleChain", json={"name": f"devstate ttl {uuid.uuid4().hex[:8]}"}).json()["id"]["id"]
    meta = {"ruleChainId": {"entityType": "RULE_CHAIN", "id": chain}, "firstNodeIndex": 0,
            "nodes": [{"type": pkg + "filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {"version": 0}},
                      {"type": pkg + "telemetry.TbMsgTimeseriesNode", "name": "save", "configurationVersion": 1,
                       "configuration": {"defaultTTL": 1, "useServerTs": False,
                                         "processingSettings": {"type": "ON_EVERY_MESSAGE"}}}],
            "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"}]}
    assert http.post(url + "/api/ruleChain/metadata", json=meta).status_code == 200
    profile = http.post(url + "/api/deviceProfile", json={
        "name": f"devstate ttl {uuid.uuid4().hex[:8]}", "type": "DEFAULT",
        "defaultRuleChainId": {"entityType": "RULE_CHAIN", "id": chain},
        "profileData": {"configuration": {"type": "DEFAULT"}}}).json()
    token = uuid.uuid4().hex
    dev = http.post(url + "/api/device", params={"accessToken": token},
                    json={"name": f"devstate ttl {uuid.uuid4().hex[:8]}", "type": profile["name"]}).json()["id"]["id"]
    s = _connected(Endpoint(url, "127.0.0.1", mqtt_port), token)
    try:
        _publish(s, {"ts": T0, "values": {"v": 5}})
    finally:
        s.close()
    assert _history(http, url, dev, startTs=T0, endTs=T0 + 1) == [{"ts": T0, "value": "5"}]
    wait_for(lambda: _history(http, url, dev, startTs=T0, endTs=T0 + 1) == [], what="the point to expire")
