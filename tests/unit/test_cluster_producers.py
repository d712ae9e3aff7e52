"""Producers for a replicated topic: the forwarding chain's Kafka node is idempotent and retries (so a
broker's loss neither loses nor doubles a record); for one broker the chain stays as it was."""

from __future__ import annotations

from confluent_kafka import Producer

from tbspark.platform.rules.nodes.kafka import producer_config
from tbspark.provision import _replicated
from tbspark.scenario import load_scenario, packaged_scenario
from tbspark.thingsboard.rulechain import build_rule_chain


def _kafka_node(chain: dict) -> dict:
    return next(n for n in chain["metadata"]["nodes"] if n["type"].endswith(".TbKafkaNode"))["configuration"]


def test_a_replicated_topic_gets_an_idempotent_producer_that_the_platform_node_accepts():
    sc = load_scenario(packaged_scenario("wind-turbines"))
    single = _kafka_node(build_rule_chain(sc, "127.0.0.1:9092"))
    cluster = _kafka_node(build_rule_chain(sc, "127.0.0.1:9092,127.0.0.1:9093", replicated=True))
    assert single["retries"] == 0 and single["otherProperties"] == {}  # unchanged for one broker
    assert cluster["acks"] == "-1" and cluster["retries"] > 0
    assert cluster["otherProperties"] == {"enable.idempotence": "true"}
    conf = producer_config("n1", cluster)
    assert (conf["acks"], conf["enable.idempotence"]) == ("-1", "true")
    Producer({k: v for k, v in conf.items() if k != "logger"})  # librdkafka takes it (retries > 0)


def test_a_single_bootstrap_address_is_not_asked_about_replication():
    # one address: no round trip to a broker (there may be none); nothing listens on port 1
    assert _replicated("127.0.0.1:1", "t") is False
    assert _replicated("127.0.0.1:1,127.0.0.1:2", "t") is False  # unreachable cluster: single chain
