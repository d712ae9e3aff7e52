"""A device profile's rule chain forwarding to Kafka (tbspark's own chain): records and stored points."""

from __future__ import annotations

import json

from tests.differential.exchanges import exchange
from tests.differential.exchanges.helpers import attributes, delete_devices, ts_url
from tests.differential.harness import T0, MqttDevice, Target, Transcript, wait_for


def _kafka_records(bootstrap: str, topic: str, want: int) -> list:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tbdiff-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    try:
        def more():
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append({"key": m.key().decode(), "value": json.loads(m.value())})
            return len(out) >= want
        wait_for(more, "Kafka records")
    finally:
        c.close()
    return sorted(out, key=lambda r: str(r["value"].get("ts")))


@exchange
def chain_to_kafka(t: Target, tr: Transcript) -> None:
    from types import SimpleNamespace

    from tbspark.stack.kafka import ensure_topic
    from tbspark.thingsboard.rulechain import build_rule_chain

    s = t.session()
    u = tr.unique
    topic = f"tbdiff-{u}-{t.name}"
    ensure_topic(t.kafka_bootstrap, topic)
    scenario = SimpleNamespace(name=f"tbdiff-{u}", aggregation=SimpleNamespace(value_key="windSpeed", zone_key="geoZone"),
                               kafka=SimpleNamespace(topic=topic))
    chain = build_rule_chain(scenario, t.kafka_bootstrap)
    r = s.post(f"{t.url}/api/ruleChain", json={"name": f"tbdiff-{u} to Kafka", "type": "CORE"}, timeout=30)
    rc = tr.http("chain created", r, lambda b: {"type": b["type"], "root": b["root"]})
    meta = {**chain["metadata"], "ruleChainId": rc["id"]}
    tr.http("chain metadata saved", s.post(f"{t.url}/api/ruleChain/metadata", json=meta, timeout=30),
            lambda b: {"nodes": sorted(n["type"].rsplit(".", 1)[1] for n in b["nodes"]),
                       "connections": len(b["connections"])})
    r = s.post(f"{t.url}/api/deviceProfile", json={
        "name": f"tbdiff-{u}-kprof", "type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED",
        "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "defaultRuleChainId": rc["id"]}, timeout=30)
    prof = tr.http("profile with the chain", r, lambda b: {"chain": b["defaultRuleChainId"]["id"] == rc["id"]["id"]})
    token = f"TBDIFFK{u}"
    r = s.post(f"{t.url}/api/device", json={"name": f"tbdiff-{u}-turbine", "type": f"tbdiff-{u}-kprof",
                                            "deviceProfileId": prof["id"]}, params={"accessToken": token}, timeout=30)
    dev = tr.http("device", r, lambda b: {"profile": b["deviceProfileId"]["id"] == prof["id"]["id"]})
    m = MqttDevice(t, token)
    m.connect()
    # The chain reads both client attributes (tellFailureIfAbsent): provision sets them the same way.
    tr.add("zone attribute", acked=m.publish("v1/devices/me/attributes", json.dumps({"geoZone": "Zone A",
                                                                                     "deviceType": "turbine"})))
    tr.add("zone stored", body=wait_for(lambda: len(a := attributes(t, s, dev, "CLIENT_SCOPE", "geoZone,deviceType"))
                                        == 2 and a, "the zone"))
    for i in range(3):
        m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + i * 1000, "values": {"windSpeed": 10 + i}}))
    tr.add("no value: filtered", acked=m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + 5000,
                                                                                       "values": {"temp": 1}})))
    m.publish("v1/devices/me/telemetry", json.dumps({"ts": T0 + 9000, "values": {"windSpeed": "13.5"}}))
    tr.add("kafka records", records=_kafka_records(t.kafka_bootstrap, topic, 4))
    got = wait_for(lambda: (b := s.get(f"{ts_url(t, dev)}/values/timeseries", params={
        "keys": "windSpeed,temp", "startTs": T0, "endTs": T0 + 10_000, "orderBy": "ASC", "useStrictDataTypes": True},
        timeout=30).json()) and len(b.get("windSpeed", [])) == 4 and b, "stored points")
    tr.add("stored points", body=got)
    m.close()
    delete_devices(t, s, f"tbdiff-{u}-")
    tr.http("profile deleted", s.delete(f"{t.url}/api/deviceProfile/{prof['id']['id']}", timeout=30))
    tr.http("chain deleted", s.delete(f"{t.url}/api/ruleChain/{rc['id']['id']}", timeout=30))
