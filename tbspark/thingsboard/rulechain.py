"""The script-free forwarding chain (contract §8): device telemetry → originator attributes →
check fields → copy/rename keys → Kafka, plus the save nodes and the RPC call request node a profile
chain needs. Runs unchanged on ThingsBoard 3.6.2+ and on the embedded platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbspark.scenario import Scenario

PKG = "org.thingsboard.rule.engine"
STRING_SERIALIZER = "org.apache.kafka.common.serialization.StringSerializer"
PRODUCER_LINGER_MS = 20
PRODUCER_BATCH_SIZE = 65536


def chain_name(scenario: Scenario) -> str:
    return f"tbspark {scenario.name} to Kafka"


def _node(cls: str, name: str, version: int, config: dict, x: int, y: int) -> dict:
    return {"type": f"{PKG}.{cls}", "name": name, "debugMode": False, "singletonMode": False,
            "configurationVersion": version, "configuration": config,
            "additionalInfo": {"layoutX": x, "layoutY": y, "description": ""}}


# A replicated topic (a Kafka cluster): the Kafka node's producer is idempotent and retries until
# its delivery timeout, so a broker's loss moves the partition leaders and no record is lost or
# doubled (acks=all + min.insync.replicas 2: each record is on two brokers when acknowledged).
# Java's default retries since Kafka 2.1; librdkafka refuses idempotence with retries 0.
REPLICATED_PRODUCER = {"retries": 2147483647, "otherProperties": {"enable.idempotence": "true"}}


def build_rule_chain(scenario: Scenario, bootstrap: str, replicated: bool = False) -> dict:
    """ThingsBoard's import JSON ``{"ruleChain": {...}, "metadata": {...}}`` for ``scenario``;
    ``bootstrap`` is the platform-side Kafka address (``Connection.kafka_bootstrap_for_platform``);
    ``replicated``: the topic has replicas on other brokers (``REPLICATED_PRODUCER``)."""
    agg = scenario.aggregation
    value_key = agg.value_key
    zone_key = agg.zone_key
    zone_meta = f"cs_{zone_key}"
    attrs = ["deviceType"] + ([zone_key] if zone_key != "deviceType" else [])
    nodes = [
        _node("filter.TbMsgTypeSwitchNode", "Message type switch", 0, {"version": 0}, 250, 150),
        # Configs below are in the format of the configurationVersion they declare (§8.1): a
        # 4.x server upgrades them on save; 3.6.2+ and the embedded platform take them as is.
        _node("telemetry.TbMsgTimeseriesNode", "Save time series", 0,
              {"defaultTTL": 0, "skipLatestPersistence": False, "useServerTs": False}, 550, 50),
        _node("telemetry.TbMsgAttributesNode", "Save client attributes", 1,
              {"scope": "CLIENT_SCOPE", "notifyDevice": False,
               "sendAttributesUpdatedNotification": False,
               "updateAttributesOnlyOnValueChange": True}, 550, 150),
        _node("metadata.TbGetAttributesNode", "Originator attributes", 1,
              {"clientAttributeNames": attrs, "sharedAttributeNames": [],
               "serverAttributeNames": [], "latestTsKeyNames": [], "tellFailureIfAbsent": True,
               "getLatestValueWithTs": False, "fetchTo": "METADATA"}, 550, 250),
        _node("filter.TbCheckMessageNode", "Has value and zone", 0,
              {"messageNames": [value_key], "metadataNames": [zone_meta], "checkAllKeys": True},
              850, 250),
        # ts travels too, so the aggregation can window on the device's own time.
        _node("transform.TbCopyKeysNode", "Copy zone and ts into data", 2,
              {"copyFrom": "METADATA", "keys": [zone_meta, "ts"]}, 850, 350),
        _node("transform.TbRenameKeysNode", f"Rename {zone_meta}", 2,
              {"renameIn": "DATA", "renameKeysMapping": {zone_meta: zone_key}}, 850, 450),
        # linger 20 ms / batchSize 64 KiB: a produce request carries ~20 ms of records instead of one
        # (linger 0 made the broker spend ~45 us of CPU per record at 15K records/s, linger 20 ~18 us:
        # bench/kafka_broker.py); 20 ms is nothing next to a 10 s window. Same meaning in ThingsBoard's
        # Java producer (linger.ms, batch.size per partition) and the embedded platform's librdkafka.
        _node("kafka.TbKafkaNode", f"Kafka {scenario.kafka.topic}", 0,
              {"topicPattern": scenario.kafka.topic, "keyPattern": "${deviceName}",
               "bootstrapServers": bootstrap, "retries": 0, "batchSize": PRODUCER_BATCH_SIZE,
               "linger": PRODUCER_LINGER_MS,
               "bufferMemory": 33554432, "acks": "-1",
               # Required by the Kafka node up to 3.9; 4.x drops them when it upgrades the config.
               "keySerializer": STRING_SERIALIZER, "valueSerializer": STRING_SERIALIZER,
               "otherProperties": {}, "addMetadataKeyValuesAsKafkaHeaders": False,
               "kafkaHeadersCharset": "UTF-8", **(REPLICATED_PRODUCER if replicated else {})}, 1150, 450),
        # Server-side RPC goes through the device's chain on ThingsBoard (and the embedded platform):
        # without this node, /api/rpc calls to the scenario's devices would time out.
        _node("rpc.TbSendRPCRequestNode", "RPC call request", 0, {"timeoutInSeconds": 60}, 550, 350),
    ]
    connections = [
        {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
        {"fromIndex": 0, "toIndex": 2, "type": "Post attributes"},
        {"fromIndex": 0, "toIndex": 3, "type": "Post telemetry"},
        {"fromIndex": 3, "toIndex": 4, "type": "Success"},
        {"fromIndex": 4, "toIndex": 5, "type": "True"},
        {"fromIndex": 5, "toIndex": 6, "type": "Success"},
        {"fromIndex": 6, "toIndex": 7, "type": "Success"},
        {"fromIndex": 0, "toIndex": 8, "type": "RPC Request to Device"},
    ]
    return {
        "ruleChain": {"name": chain_name(scenario), "type": "CORE", "root": False,
                      "debugMode": False, "configuration": None,
                      "additionalInfo": {"description": f"Forwards {value_key} with {zone_key} "
                                         f"and ts to Kafka topic {scenario.kafka.topic}"}},
        "metadata": {"firstNodeIndex": 0, "nodes": nodes, "connections": connections,
                     "ruleChainConnections": None},
    }


def metadata_matches(wanted: dict, stored: dict | None) -> bool:
    """True when the stored chain already does what ``wanted`` describes. Config keys a newer
    server dropped or added on upgrade are ignored; every key it kept must hold our value."""
    if not stored or not stored.get("nodes"):
        return False
    w_nodes, s_nodes = wanted["nodes"], stored["nodes"]
    if len(w_nodes) != len(s_nodes) or stored.get("firstNodeIndex") != wanted["firstNodeIndex"]:
        return False
    for w, s in zip(w_nodes, s_nodes):
        if w["type"] != s.get("type") or w["name"] != s.get("name"):
            return False
        s_conf = s.get("configuration") or {}
        for key, value in w["configuration"].items():
            if key in s_conf and s_conf[key] != value:
                return False

    def conns(meta: dict) -> set:
        return {(c["fromIndex"], c["toIndex"], c["type"]) for c in meta.get("connections") or []}

    return conns(wanted) == conns(stored)
