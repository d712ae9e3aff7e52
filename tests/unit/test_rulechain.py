"""The forwarding chain provision saves and `tbspark rulechain export` writes."""

from __future__ import annotations

import copy
import json

from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.scenario import load_scenario, packaged_scenario, parse_scenario
from tbspark.thingsboard.rulechain import build_rule_chain, metadata_matches

PKG = "org.thingsboard.rule.engine."


def tutorial():
    return load_scenario(packaged_scenario("wind-turbines"))


def test_chain_is_script_free_and_wired_as_the_contract_describes():
    chain = build_rule_chain(tutorial(), "127.0.0.1:9092")
    meta = chain["metadata"]
    types = [n["type"].removeprefix(PKG) for n in meta["nodes"]]
    assert types == ["filter.TbMsgTypeSwitchNode", "telemetry.TbMsgTimeseriesNode",
                     "telemetry.TbMsgAttributesNode", "metadata.TbGetAttributesNode",
                     "filter.TbCheckMessageNode", "transform.TbCopyKeysNode",
                     "transform.TbRenameKeysNode", "kafka.TbKafkaNode", "rpc.TbSendRPCRequestNode"]
    assert not any("Js" in t or "Transform" in t for t in types)
    links = {(c["fromIndex"], c["toIndex"], c["type"]) for c in meta["connections"]}
    assert links == {(0, 1, "Post telemetry"), (0, 2, "Post attributes"), (0, 3, "Post telemetry"),
                     (3, 4, "Success"), (4, 5, "True"), (5, 6, "Success"), (6, 7, "Success"),
                     (0, 8, "RPC Request to Device")}
    assert meta["firstNodeIndex"] == 0


def test_node_configs_match_their_declared_versions():
    nodes = build_rule_chain(tutorial(), "b:1")["metadata"]["nodes"]
    attrs, check, copy_, rename, kafka = nodes[3], nodes[4], nodes[5], nodes[6], nodes[7]
    assert attrs["configurationVersion"] == 1 and attrs["configuration"]["fetchTo"] == "METADATA"
    assert attrs["configuration"]["clientAttributeNames"] == ["deviceType", "geoZone"]
    assert nodes[2]["configuration"]["scope"] == "CLIENT_SCOPE"
    assert check["configuration"] == {"messageNames": ["windSpeed"], "metadataNames": ["cs_geoZone"],
                                      "checkAllKeys": True}
    assert copy_["configurationVersion"] == 2
    assert copy_["configuration"] == {"copyFrom": "METADATA", "keys": ["cs_geoZone", "ts"]}
    assert rename["configurationVersion"] == 2
    assert rename["configuration"] == {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}}
    conf = kafka["configuration"]
    assert conf["topicPattern"] == "weather-stations-data" and conf["keyPattern"] == "${deviceName}"
    assert conf["bootstrapServers"] == "b:1"
    assert conf["keySerializer"].endswith("StringSerializer")
    assert conf["valueSerializer"].endswith("StringSerializer")
    # Producer batching (broker CPU per record) while every record is still acknowledged by all
    # replicas before the node reports Success, and nothing is retried into a duplicate.
    assert (conf["linger"], conf["batchSize"], conf["acks"], conf["retries"]) == (20, 65536, "-1", 0)


def test_producer_settings_map_to_a_valid_librdkafka_producer():
    """The chain's Kafka node config, as the embedded platform maps it, is a producer librdkafka accepts
    with the same linger and batch size (what ThingsBoard's Java producer gets as linger.ms/batch.size)."""
    from confluent_kafka import Producer

    from tbspark.platform.rules.nodes.kafka import producer_config

    conf = producer_config("n1", build_rule_chain(tutorial(), "127.0.0.1:9")["metadata"]["nodes"][7]["configuration"])
    assert (conf["linger.ms"], conf["batch.size"], conf["acks"]) == (20, 65536, "-1")
    Producer(conf)  # raises on a property librdkafka refuses


def test_platform_side_bootstrap_wins_over_the_hosts():
    sc = parse_scenario("""
name: dc
kafka: {bootstrap: "localhost:9092", bootstrap_for_platform: "kafka:19092", topic: t1}
devices:
  - {name: d, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}
""")
    from tbspark.settings import scenario_connection

    # the scenario's platform-side address wins over the host's (env and flags win over both:
    # tests/unit/test_settings.py); without one, the host's
    assert scenario_connection(sc, "/nonexistent", environ={}).kafka_bootstrap_for_platform == "kafka:19092"
    assert scenario_connection(tutorial(), "/nonexistent", environ={"KAFKA_BOOTSTRAP": "127.0.0.1:9999"}
                          ).kafka_bootstrap_for_platform == "127.0.0.1:9999"


def test_stored_chain_upgraded_by_a_newer_server_still_matches():
    wanted = build_rule_chain(tutorial(), "b:1")["metadata"]
    stored = copy.deepcopy(wanted)
    for node in stored["nodes"]:
        node["id"] = {"entityType": "RULE_NODE", "id": "x"}
    kafka = stored["nodes"][7]["configuration"]
    del kafka["keySerializer"], kafka["valueSerializer"]  # 4.x drops them on upgrade
    stored["nodes"][1]["configuration"]["processingSettings"] = {"type": "ON_EVERY_MESSAGE"}
    assert metadata_matches(wanted, stored)
    kafka["bootstrapServers"] = "elsewhere:9092"
    assert not metadata_matches(wanted, stored)
    assert not metadata_matches(wanted, {"nodes": [], "connections": []})


def test_export_writes_thingsboards_import_json(tmp_path):
    out = tmp_path / "chain.json"
    res = CliRunner().invoke(app, ["rulechain", "export", str(packaged_scenario("wind-turbines")),
                                   "-o", str(out), "--kafka-bootstrap", "kafka:19092"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data) == {"ruleChain", "metadata"}
    assert data["ruleChain"]["name"] == "tbspark wind-turbines to Kafka"
    assert data["metadata"]["nodes"][7]["configuration"]["bootstrapServers"] == "kafka:19092"
    assert str(out) in res.output
