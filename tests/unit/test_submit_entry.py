"""The spark-submit entry point (tbspark/aggregate/main.py): connection flags, the password never a
flag, and nothing of the local stack imported on a cluster's driver."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tbspark.aggregate import main as entry
from tbspark.errors import UsageError
from tbspark.scenario import parse_scenario
from tbspark.settings import scenario_connection


def test_the_job_imports_nothing_of_the_local_stack():
    code = ("import sys, tbspark.aggregate.main as m, tbspark.aggregate.job, tbspark.aggregate.sinks, "
            "tbspark.scenario, tbspark.settings, tbspark.state; "
            "print(sorted(k for k in sys.modules if k.startswith('tbspark.stack')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_connection_flags_override_the_environment_and_the_password_comes_from_a_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    args = entry.parse_args(["sc.yaml", "--kafka-bootstrap", "k1:9092,k2:9092", "--tb-url", "http://tb:8080/",
                             "--username", "ops@example.com", "--password-file", str(secret),
                             "--checkpoint", "hdfs://nn:8020/ckpt"])
    assert args.checkpoint == "hdfs://nn:8020/ckpt"
    sc = parse_scenario("name: s\nplatform: {kind: thingsboard}\nkafka: {topic: t}\ndevices:\n"
                        "  - {name: d, type: T, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}\n")
    conn = scenario_connection(sc, tmp_path, flags=entry.connection_flags(args),
                          environ={"KAFKA_BOOTSTRAP": "env:9092", "TB_PASSWORD": "from-env"})
    assert (conn.kafka_bootstrap, conn.tb_url, conn.mqtt_host) == ("k1:9092,k2:9092", "http://tb:8080", "tb")
    assert (conn.username, conn.password) == ("ops@example.com", "s3cret")
    with pytest.raises(SystemExit):
        entry.parse_args(["sc.yaml", "--password", "x"])  # no such flag: it would show in `ps`


def test_an_unreadable_password_file_is_a_usage_error(tmp_path):
    args = entry.parse_args(["sc.yaml", "--password-file", str(tmp_path / "absent")])
    with pytest.raises(UsageError, match="--password-file"):
        entry.connection_flags(args)


class _Conf:
    def __init__(self, value):
        self.value = value

    def get(self, key, default=None):
        return self.value if key == "spark.driver.extraJavaOptions" and self.value is not None else default


class _Spark:
    def __init__(self, value):
        self.sparkContext = type("SC", (), {"getConf": lambda _self, v=value: _Conf(v)})()


def test_a_driver_started_without_the_stack_size_is_told_how_to_pass_it():
    assert entry.driver_java_options_warning(_Spark("-XX:+UseG1GC -Xss16m")) is None
    warning = entry.driver_java_options_warning(_Spark(None))
    assert "--driver-java-options -Xss16m" in warning
