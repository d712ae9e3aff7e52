"""The local stack as a user meets it: a real KRaft broker started by tbspark, exact round trips,
clean `up`/`down`, and one clear line for each way starting can fail."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.errors import ServiceStartError, StackError
from tbspark.stack import kafka as kafka_mod
from tbspark.stack.services import stack_up
from tbspark.state import StateDir

pytestmark = pytest.mark.kafka
runner = CliRunner()


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    try:
        # Bounded by the number of polls, not by sleeping: each poll returns as soon as data is there.
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def test_round_trip_keeps_exact_payloads_keys_and_partitions(kafka, kafka_topic):
    topic = kafka_topic(partitions=3)
    sent = []
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    for i in range(30):
        key = f"Wind Turbine {i % 3 + 1}".encode()
        # The record the forwarding rule chain produces, byte for byte.
        value = json.dumps({"windSpeed": 30 + i, "geoZone": "Zone A", "ts": str(1719999999000 + i)},
                           separators=(",", ":")).encode()
        producer.produce(topic, value=value, key=key, partition=i % 3)
        sent.append((i % 3, key, value))
    assert producer.flush(15) == 0

    got = _consume_all(kafka.bootstrap, topic, 3, len(sent))

    assert len(got) == 30
    for p in range(3):
        assert [(m.key(), m.value()) for m in got if m.partition() == p] == \
               [(k, v) for (q, k, v) in sent if q == p]


def test_topic_creation_is_idempotent_and_grows_partitions(kafka, kafka_topic):
    topic = kafka_topic(partitions=2)
    assert kafka_mod.ensure_topic(kafka.bootstrap, topic, 2) == 2
    assert kafka_mod.ensure_topic(kafka.bootstrap, topic, 4) == 4
    assert kafka_mod.ensure_topic(kafka.bootstrap, topic, 1) == 4  # never shrinks


def test_second_up_on_a_live_state_dir_says_so(kafka):
    with pytest.raises(StackError) as err:
        stack_up(kafka.state_dir, kafka_port=0, platform=False)
    assert str(err.value) == (
        f"a Kafka broker started by tbspark already runs on {kafka.state_dir} (pid {kafka.pid}) — "
        f"use it, or run `tbspark stack down --state-dir {kafka.state_dir}` first")
    assert psutil.pid_exists(kafka.pid)  # and the running one is untouched


@pytest.mark.parametrize("flag", ["--kafka-port", "--http-port", "--mqtt-port"])
def test_taken_port_is_named_with_the_flag_to_change(tmp_path, flag):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = ["stack", "up", "--state-dir", str(tmp_path), "--kafka-port", "0", "--http-port", "0",
                "--mqtt-port", "0", flag, str(port)]
        result = runner.invoke(app, args)
    assert result.exit_code == 3
    assert result.stderr.strip() == (f"Error: port {port} on 127.0.0.1 is already in use — stop what holds it, "
                                     f"or pass {flag} 0 to pick a free port")
    assert kafka_mod.find_broker_pids(StateDir(tmp_path)) == []  # nothing half-started


def test_missing_java_says_what_to_install(tmp_path):
    env = {"PATH": str(tmp_path), "TBSPARK_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "tbspark", "stack", "up", "--no-platform"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.strip() == ("Error: java not found (not on PATH) — install a Java 17+ runtime "
                                   "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def test_broker_that_fails_to_start_shows_its_log_tail_and_leaves_nothing(tmp_path):
    # A data dir formatted for another node: Kafka refuses it at start, as after copying state around.
    data = tmp_path / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n")
    with pytest.raises(ServiceStartError) as err:
        stack_up(tmp_path, kafka_port=0, platform=False)
    text = str(err.value)
    assert text.startswith("the Kafka broker exited during start (exit code 1) — see ")
    assert "Stored node id 7 doesn't match previous node id 1" in err.value.log_tail
    assert kafka_mod.find_broker_pids(StateDir(tmp_path)) == []
    assert not (tmp_path / "services.json").exists()


def test_platform_failing_to_start_stops_the_broker_again(tmp_path, monkeypatch):
    from tbspark.stack import services

    started = {}

    def platform_that_fails(state, *args, **kwargs):
        started["kafka"] = kafka_mod.find_broker_pids(state)
        raise ServiceStartError("the embedded platform exited during start (exit code 1)", "see its log")

    monkeypatch.setattr(services, "start_platform", platform_that_fails)
    with pytest.raises(ServiceStartError):
        stack_up(tmp_path, kafka_port=0, http_port=0, mqtt_port=0)
    assert len(started["kafka"]) == 1  # the broker was up when the platform failed...
    assert not psutil.pid_exists(started["kafka"][0])  # ...and is gone now
    assert not (tmp_path / "services.json").exists()


@pytest.mark.parametrize("args, line", [
    (["--partitions", "0"], "Error: --partitions 0 must be at least 1 — pass --partitions 1 or more"),
    (["--kafka-port", "70000"], "Error: --kafka-port 70000 is not a port — use 1-65535, or 0 for a free port"),
])
def test_bad_flags_exit_2_before_starting_anything(tmp_path, args, line):
    result = runner.invoke(app, ["stack", "up", "--state-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == line
    assert not (tmp_path / "kafka").exists()
