"""The originator-attributes node caches attributes in memory: a change of any scope (client over MQTT,
server over REST, a delete) must be seen by the next message, never a stale cached value."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tbspark.mqtt import codec as c
from tests.integration.test_mqtt import mqtt_platform, raw_connect, read_packets, rest, unique  # noqa: F401
from tests.integration.test_rules_kafka import install_chain

P = "org.thingsboard.rule.engine."


def attributes_into_data_chain(fetch_to: str = "DATA") -> dict:
    """type switch → Post attributes: save client attributes; Post telemetry: originator attributes
    (cs_geoZone, ss_tier into the data, no failure when absent) → save time series. With
    ``fetch_to="METADATA"`` the attributes go to metadata and a copy-keys node moves them to the data
    (the forwarding chain's form, served from a per-originator memo of the rendered metadata)."""
    nodes = [
        (P + "filter.TbMsgTypeSwitchNode", 0, {"version": 0}),
        (P + "telemetry.TbMsgAttributesNode", 1, {"scope": "CLIENT_SCOPE", "notifyDevice": False}),
        (P + "metadata.TbGetAttributesNode", 1, {"clientAttributeNames": ["geoZone"], "sharedAttributeNames": [],
                                                 "serverAttributeNames": ["tier"], "latestTsKeyNames": [],
                                                 "tellFailureIfAbsent": False, "getLatestValueWithTs": False,
                                                 "fetchTo": fetch_to}),
        (P + "telemetry.TbMsgTimeseriesNode", 0, {"defaultTTL": 0, "useServerTs": False}),
    ]
    conns = [(0, 1, "Post attributes"), (0, 2, "Post telemetry"), (2, 3, "Success")]
    if fetch_to == "METADATA":
        nodes.append((P + "transform.TbCopyKeysNode", 2, {"copyFrom": "METADATA", "keys": ["cs_geoZone", "ss_tier"]}))
        conns = [(0, 1, "Post attributes"), (0, 2, "Post telemetry"), (2, 4, "Success"), (4, 3, "Success")]
    return {"firstNodeIndex": 0,
            "nodes": [{"type": t, "name": t.rsplit(".", 1)[-1], "configurationVersion": v, "configuration": cfg}
                      for t, v, cfg in nodes],
            "connections": [{"fromIndex": a, "toIndex": b, "type": rel} for a, b, rel in conns],
            "ruleChainConnections": None}


@pytest.mark.parametrize("fetch_to", ["DATA", "METADATA"])
def test_attribute_changes_reach_the_next_message(mqtt_platform, rest, fetch_to):
    dtype = unique("CacheProbe")
    rest.device(unique("type seed"), dtype, uuid.uuid4().hex)  # creates the profile
    install_chain(rest, attributes_into_data_chain(fetch_to), dtype)
    token = uuid.uuid4().hex
    dev_id = rest.device(unique("probe"), dtype, token)
    s = raw_connect(mqtt_platform, token, 5)
    read_packets(s, 5)
    pid = iter(range(1, 1000))
    ts = iter(range(1_700_000_000_000, 1_800_000_000_000, 1000))

    def publish(topic: str, body: dict) -> None:
        s.sendall(c.encode_publish(topic, json.dumps(body), 1, next(pid), protocol_level=5))
        assert read_packets(s, 5)[0][0].reason_code == 0  # PUBACK: saved

    def probe() -> dict:
        """One telemetry message; what the originator-attributes node put into its data."""
        t = next(ts)
        publish("v1/devices/me/telemetry", {"ts": t, "values": {"n": 1}})
        got = rest.get(f"/api/plugins/telemetry/DEVICE/{dev_id}/values/timeseries",
                       keys="cs_geoZone,ss_tier", useStrictDataTypes="true")
        return {k: v[0]["value"] for k, v in got.items() if v and v[0]["ts"] == t}

    assert probe() == {}  # nothing yet (and an empty result is now cached)
    publish("v1/devices/me/attributes", {"geoZone": "Zone A"})
    assert probe() == {"cs_geoZone": "Zone A"}
    publish("v1/devices/me/attributes", {"geoZone": "Zone B"})  # client attribute changed over MQTT
    assert probe() == {"cs_geoZone": "Zone B"}
    url = f"{mqtt_platform.url}/api/plugins/telemetry/DEVICE/{dev_id}"
    for tier in ("gold", "silver"):  # server attribute set, then changed, over REST
        r = rest.post(f"/api/plugins/telemetry/DEVICE/{dev_id}/attributes/SERVER_SCOPE", {"tier": tier})
        assert r.ok, r.text
        assert probe() == {"cs_geoZone": "Zone B", "ss_tier": tier}
    r = requests.delete(url + "/SERVER_SCOPE", params={"keys": "tier"}, headers=rest.h, timeout=10)
    assert r.ok, r.text
    assert probe() == {"cs_geoZone": "Zone B"}  # deleted: no longer served from the cache
    s.close()
