"""The tutorial's forwarding chain, script-free, saved over REST and executed by the platform's rule
engine into a real Kafka broker; and what happens when that broker is killed."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tbspark.mqtt import codec as c
from tests.integration.test_mqtt import mqtt_platform, raw_connect, read_packets, rest, unique, wait_for  # noqa: F401

P = "org.thingsboard.rule.engine."
pytestmark = pytest.mark.kafka


def forwarding_chain(bootstrap: str, topic: str, other: dict | None = None, failure_sink: bool = False) -> dict:
    """type switch → save ts / save client attributes; → originator attributes → check fields → copy
    cs_geoZone into the data → rename it geoZone → Kafka (keyed by device name)."""
    nodes = [
        (P + "filter.TbMsgTypeSwitchNode", 0, {"version": 0}),
        (P + "telemetry.TbMsgTimeseriesNode", 0, {"defaultTTL": 0, "skipLatestPersistence": False, "useServerTs": False}),
        (P + "telemetry.TbMsgAttributesNode", 1, {"scope": "CLIENT_SCOPE", "notifyDevice": False}),
        (P + "metadata.TbGetAttributesNode", 1, {"clientAttributeNames": ["deviceType", "geoZone"],
                                                 "sharedAttributeNames": [], "serverAttributeNames": [],
                                                 "latestTsKeyNames": [], "tellFailureIfAbsent": True,
                                                 "getLatestValueWithTs": False, "fetchTo": "METADATA"}),
        (P + "filter.TbCheckMessageNode", 0, {"messageNames": ["windSpeed"], "metadataNames": ["cs_geoZone"],
                                              "checkAllKeys": True}),
        (P + "transform.TbCopyKeysNode", 2, {"copyFrom": "METADATA", "keys": ["cs_geoZone"]}),
        (P + "transform.TbRenameKeysNode", 2, {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}}),
        (P + "kafka.TbKafkaNode", 0, {"topicPattern": topic, "keyPattern": "${deviceName}", "bootstrapServers": bootstrap,
                                      "retries": 0, "batchSize": 16384, "linger": 0, "bufferMemory": 33554432,
                                      "acks": "-1", "otherProperties": other or {},
                                      "addMetadataKeyValuesAsKafkaHeaders": True, "kafkaHeadersCharset": "UTF-8",
                                      "keySerializer": "org.apache.kafka.common.serialization.StringSerializer",
                                      "valueSerializer": "org.apache.kafka.common.serialization.StringSerializer"}),
    ]
    conns = [(0, 1, "Post telemetry"), (0, 2, "Post attributes"), (0, 3, "Post telemetry"), (3, 4, "Success"),
             (4, 5, "True"), (5, 6, "Success"), (6, 7, "Success")]
    if failure_sink:  # Kafka Failure → copy the error into the data → save it as telemetry (visible over REST)
        nodes += [(P + "transform.TbCopyKeysNode", 2, {"copyFrom": "METADATA", "keys": ["error"]}),
                  (P + "telemetry.TbMsgTimeseriesNode", 0, {"defaultTTL": 0})]
        conns += [(7, 8, "Failure"), (8, 9, "Success")]
    return {"firstNodeIndex": 0,
            "nodes": [{"type": t, "name": t.rsplit(".", 1)[-1], "configurationVersion": v, "configuration": cfg}
                      for t, v, cfg in nodes],
            "connections": [{"fromIndex": a, "toIndex": b, "type": rel} for a, b, rel in conns],
            "ruleChainConnections": None}


def install_chain(rest, metadata: dict, device_type: str) -> str:
    """Save the chain over REST (two calls, §8.1) and make it the default of ``device_type``'s profile."""
    r = rest.post("/api/ruleChain", {"name": unique("Weather → Kafka"), "type": "CORE"})
    assert r.ok, r.text
    chain_id = r.json()["id"]["id"]
    metadata = dict(metadata, ruleChainId={"entityType": "RULE_CHAIN", "id": chain_id})
    r = rest.post("/api/ruleChain/metadata", metadata)
    assert r.ok, r.text
    profiles = rest.get("/api/deviceProfiles", pageSize=100, page=0, textSearch=device_type)["data"]
    profile = next(p for p in profiles if p["name"] == device_type)
    profile["defaultRuleChainId"] = {"entityType": "RULE_CHAIN", "id": chain_id}
    r = rest.post("/api/deviceProfile", profile)
    assert r.ok, r.text
    return chain_id


def device_session(ep, rest, dtype: str, zone: str):
    """A connected MQTT 5 device of a fresh type that has sent its client attributes."""
    token, name = uuid.uuid4().hex, unique("Wind Turbine")
    dev_id = rest.device(name, dtype, token)
    s = raw_connect(ep, token, 5)
    read_packets(s, 5)
    s.sendall(c.encode_publish("v1/devices/me/attributes", json.dumps({"deviceType": "WeatherStation", "geoZone": zone}),
                               1, 1, protocol_level=5))
    assert read_packets(s, 5)[0][0].reason_code == 0
    return s, name, dev_id


def consume(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list:
    from confluent_kafka import Consumer

    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    cons.subscribe([topic])
    out = []
    try:
        wait_for(lambda: out.extend(m for m in [cons.poll(0.5)] if m is not None and not m.error()) or len(out) >= n,
                 timeout_s, f"{n} Kafka records on {topic}")
    finally:
        cons.close()
    return out


def test_script_chain_is_saved_as_thingsboard_saves_it(mqtt_platform, rest):
    """Script nodes run on the embedded V8 now (tests/unit/test_rules_scripts.py): saved, not refused."""
    r = rest.post("/api/ruleChain", {"name": unique("scripted"), "type": "CORE"})
    chain_id = r.json()["id"]["id"]
    meta = {"ruleChainId": {"entityType": "RULE_CHAIN", "id": chain_id}, "firstNodeIndex": 0,
            "nodes": [{"type": P + "filter.TbJsFilterNode", "name": "is weather station", "configurationVersion": 0,
                       "configuration": {"scriptLang": "TBEL", "tbelScript": "return true;"}}],
            "connections": []}
    r = rest.post("/api/ruleChain/metadata", meta)
    assert r.status_code == 200, r.text
    assert [n["name"] for n in r.json()["nodes"]] == ["is weather station"]


def test_forwarding_chain_delivers_the_tutorial_records(mqtt_platform, rest, kafka, kafka_topic):
    topic = kafka_topic(partitions=1)
    dtype = unique("WeatherStation")
    rest.device(unique("type seed"), dtype, uuid.uuid4().hex)  # creates the profile
    chain_id = install_chain(rest, forwarding_chain(kafka.bootstrap, topic), dtype)
    s, name, dev_id = device_session(mqtt_platform, rest, dtype, "Zone A")
    s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"windSpeed":"42"}', 1, 2, protocol_level=5)
              + c.encode_publish("v1/devices/me/telemetry", b'[{"ts":1719999999999,"values":{"windSpeed":7.5}}]', 1, 3,
                                 protocol_level=5)
              + c.encode_publish("v1/devices/me/telemetry", b'{"temperature":20}', 1, 4, protocol_level=5))
    acks, _ = read_packets(s, 5, count=3)
    assert sorted(a.packet_id for a in acks) == [2, 3, 4]
    records = consume(kafka.bootstrap, topic, 2)
    assert [r.value() for r in records] == [b'{"windSpeed":42,"geoZone":"Zone A"}',
                                            b'{"windSpeed":7.5,"geoZone":"Zone A"}']
    assert {r.key() for r in records} == {name.encode()}
    headers = dict(records[1].headers())
    assert headers["tb_msg_md_ts"] == b"1719999999999" and headers["tb_msg_md_deviceName"] == name.encode()
    # the chain's save node stored the telemetry too (the temperature message stopped at check fields)
    assert rest.latest_values(dev_id, "windSpeed,temperature")["temperature"] == 20
    # the chain has no Success connection out of the Kafka node: deliveries are counted, not routed
    def kafka_stats():
        stats = requests.get(mqtt_platform.url + "/tbspark/stats", headers=rest.h, timeout=5).json()["engine"]
        nodes = [n for n in stats["nodes"] if n["type"] == "TbKafkaNode" and n["chain"] == chain_id]
        return stats, nodes[0]
    wait_for(lambda: kafka_stats()[1]["delivered"] == 2, 10, "two deliveries counted")
    stats, kafka_node = kafka_stats()
    assert kafka_node["out"] == {"Success": 2} and kafka_node["failed"] == 0 and stats["forwarded"] >= 2
    s.close()


def test_killed_broker_routes_to_failure_and_platform_keeps_serving(mqtt_platform, rest, tmp_path):
    from tbspark.stack.kafka import ensure_topic, start_broker, stop_pid
    from tbspark.state import StateDir

    broker = start_broker(StateDir(tmp_path), port=0)
    try:
        topic = "weather-" + uuid.uuid4().hex[:8]
        ensure_topic(broker.bootstrap, topic, 1)
        dtype = unique("WeatherStation")
        rest.device(unique("type seed"), dtype, uuid.uuid4().hex)
        install_chain(rest, forwarding_chain(broker.bootstrap, topic, {"delivery.timeout.ms": "3000",
                                                                      "request.timeout.ms": "1000"},
                                             failure_sink=True), dtype)
        s, name, dev_id = device_session(mqtt_platform, rest, dtype, "Zone B")
        s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"windSpeed":1}', 1, 2, protocol_level=5))
        assert read_packets(s, 5)[0][0].packet_id == 2
        assert len(consume(broker.bootstrap, topic, 1)) == 1
    finally:
        stop_pid(broker.pid, 5)
    # broker gone: the message is still stored and acknowledged, Kafka delivery fails after 3 s
    s.sendall(c.encode_publish("v1/devices/me/telemetry", b'{"windSpeed":2}', 1, 3, protocol_level=5))
    assert read_packets(s, 5)[0][0].packet_id == 3
    error = wait_for(lambda: rest.latest_values(dev_id, "error").get("error"), 20, "the Failure route to store the error")
    assert "KafkaException" in error and "timed out" in error.lower()
    assert rest.latest_values(dev_id, "windSpeed")["windSpeed"] == 2
    stats = requests.get(mqtt_platform.url + "/tbspark/stats", headers=rest.h, timeout=5).json()["engine"]
    assert stats["failed"] >= 1
    assert any(n["type"] == "TbKafkaNode" and n.get("failed", 0) >= 1 for n in stats["nodes"])
    # and the platform still serves MQTT
    s.sendall(c.encode_pingreq())
    assert read_packets(s, 5)[0][0].kind == c.PINGRESP
    s.close()


def _engine_run(chain_meta: dict, msgs: list, until, fuse: bool = True,
                attrs: dict | None = None) -> tuple[dict, list]:
    """Run ``msgs`` through ``chain_meta`` in a RuleEngine of its own (``fuse``: straight lines of
    nodes message by message); wait (no sleep: polling the engine's own counters on its loop) until
    ``until(counters)``; return the counters and the messages the capture node received. ``attrs``:
    the client attributes per device id, read through the attribute cache as the platform does."""
    import asyncio
    import time

    from tbspark.platform.rules.engine import RuleEngine
    from tbspark.platform.rules.nodes import NODE_TYPES, Node

    got: list = []

    class Capture(Node):
        TYPE = P + "test.Capture"

        def process(self, batch):
            got.extend(batch)
            return [("Success", m) for m in batch]

    NODE_TYPES[Capture.TYPE] = Capture

    class Store:
        def rule_chain_metadata(self, cid):
            return chain_meta

        def root_rule_chain_id(self, tenant):
            return "c1"

        def device_profile(self, pid):
            return None

        def get_attributes(self, etype, eid, scope, keys=None):
            found = (attrs or {}).get(eid, {}) if scope == "CLIENT_SCOPE" else {}
            return {k: ("STRING", v, 1) for k, v in found.items() if keys is None or k in keys}

        def add_attribute_change_listener(self, cb):
            pass

    async def go():
        engine = RuleEngine(Store(), fuse=fuse)
        await engine.start()
        try:
            await engine.process(msgs)
            deadline = time.monotonic() + 20
            while not until(engine.counters()):
                assert time.monotonic() < deadline, engine.counters()
                await asyncio.sleep(0.02)  # the loop must run for the delivery hand-back to arrive
            return engine.counters()
        finally:
            await engine.stop()
            del NODE_TYPES[Capture.TYPE]

    return asyncio.run(go()), got


def _kafka_only_chain(bootstrap: str, topic: str, success_to_capture: bool) -> dict:
    nodes = [{"type": P + "kafka.TbKafkaNode", "name": "kafka", "configurationVersion": 0,
              "configuration": {"topicPattern": topic, "keyPattern": "${deviceName}", "bootstrapServers": bootstrap,
                                "acks": "-1"}},
             {"type": P + "test.Capture", "name": "capture", "configurationVersion": 0, "configuration": {}}]
    conns = [{"fromIndex": 0, "toIndex": 1, "type": "Success"}] if success_to_capture else []
    return {"firstNodeIndex": 0, "nodes": nodes, "connections": conns}


def _msgs(n: int) -> list:
    from tbspark.platform.rules.msg import POST_TELEMETRY, TbMsg

    return [TbMsg(POST_TELEMETRY, ("DEVICE", "d1"), {"windSpeed": i}, {"deviceName": f"dev {i % 3}"}, "t1")
            for i in range(n)]


@pytest.mark.parametrize("with_success", [False, True])
def test_kafka_node_counts_or_routes_deliveries_by_its_connections(kafka, kafka_topic, with_success):
    """Without a Success connection the node only counts deliveries (no per-record report); with one,
    every record continues with ThingsBoard's offset/partition/topic metadata. Counters agree."""
    topic = kafka_topic(partitions=1)
    n = 300
    counters, got = _engine_run(_kafka_only_chain(kafka.bootstrap, topic, with_success), _msgs(n),
                                lambda c: sum(x.get("delivered", 0) for x in c["nodes"]) >= n)
    kafka_node = next(x for x in counters["nodes"] if x["type"] == "TbKafkaNode")
    assert kafka_node["produced"] == kafka_node["delivered"] == n and kafka_node["failed"] == 0
    assert kafka_node["out"] == {"Success": n} and counters["forwarded"] == n and counters["failed"] == 0
    if with_success:
        assert len(got) == n
        assert sorted(int(m.metadata["offset"]) for m in got) == list(range(n))
        assert {(m.metadata["partition"], m.metadata["topic"]) for m in got} == {("0", topic)}
    else:
        assert got == []
    records = consume(kafka.bootstrap, topic, n)
    assert sorted(json.loads(r.value())["windSpeed"] for r in records) == list(range(n))


def test_fused_line_writes_the_same_kafka_records_as_node_by_node(kafka, kafka_topic):
    """The tutorial's line (originator attributes → check fields → copy zone and ts → rename → Kafka)
    run message by message and node by node: the same records (key, value, order) reach Kafka, the
    same messages stop on the way, and every counter agrees."""
    from tbspark.platform.rules.msg import POST_TELEMETRY, TbMsg

    attrs = {"d1": {"deviceType": "W", "geoZone": "Zone A"}, "d2": {"deviceType": "W", "geoZone": "Zone B"},
             "d3": {"deviceType": "W"}}  # d3 has no zone: Failure at the attributes node

    def msgs() -> list:
        out = []
        for i in range(300):
            dev = ("d1", "d2", "d3")[i % 3]
            data = {"windSpeed": i} if i % 5 else {"temperature": i}  # no windSpeed: False at check fields
            out.append(TbMsg(POST_TELEMETRY, ("DEVICE", dev), data,
                             {"deviceName": f"Station {dev}", "deviceType": "W", "ts": str(1_720_000_000_000 + i)},
                             "t1"))
        return out

    expected = sum(1 for i in range(300) if i % 3 != 2 and i % 5)
    seen = {}
    for fuse in (True, False):
        topic = kafka_topic(partitions=1)
        nodes = forwarding_chain(kafka.bootstrap, topic)["nodes"][3:]  # from the originator attributes on
        nodes[2]["configuration"] = {"copyFrom": "METADATA", "keys": ["cs_geoZone", "ts"]}
        meta = {"firstNodeIndex": 0, "nodes": nodes,
                "connections": [{"fromIndex": a, "toIndex": a + 1, "type": rel}
                                for a, rel in enumerate(["Success", "True", "Success", "Success"])]}
        counters, _got = _engine_run(meta, msgs(), lambda c: sum(x.get("delivered", 0) for x in c["nodes"]) >= expected,
                                     fuse=fuse, attrs=attrs)
        records = consume(kafka.bootstrap, topic, expected)
        seen[fuse] = (counters, [(r.key(), r.value(), r.headers()) for r in sorted(records, key=lambda r: r.offset())])
    (fused, fused_records), (plain, plain_records) = seen[True], seen[False]
    assert len(fused_records) == expected and fused_records == plain_records
    assert fused_records[0][:2] == (b"Station d2", b'{"windSpeed":1,"ts":"1720000000001","geoZone":"Zone B"}')
    assert fused == plain
    by_type = {n["type"]: n for n in fused["nodes"]}
    assert by_type["TbGetAttributesNode"]["out"] == {"Success": 200, "Failure": 100}
    assert by_type["TbCheckMessageNode"]["out"] == {"True": expected, "False": 200 - expected}
    assert by_type["TbKafkaNode"]["delivered"] == expected and fused["forwarded"] == expected


def test_kafka_node_without_connections_counts_failed_deliveries():
    """No Success and no Failure connection (the tutorial chain ends at the Kafka node): records go out
    without a per-record callback, and deliveries that fail (no broker here) still show in every
    counter: the node's failed, its Failure out-count and the engine's failed total."""
    from tbspark.stack.kafka import free_port

    n = 50
    meta = _kafka_only_chain(f"127.0.0.1:{free_port()}", "nowhere", success_to_capture=False)
    meta["nodes"][0]["configuration"]["otherProperties"] = {"message.timeout.ms": "300"}
    counters, got = _engine_run(meta, _msgs(n), lambda c: c["failed"] >= n)
    kafka_node = next(x for x in counters["nodes"] if x["type"] == "TbKafkaNode")
    assert kafka_node["produced"] == n and kafka_node["failed"] == n and kafka_node["delivered"] == 0
    assert kafka_node["out"] == {"Failure": n} and counters["failed"] == n and counters["forwarded"] == 0
    assert got == []
