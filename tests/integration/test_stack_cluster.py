"""`tbspark stack up --kafka-brokers 3 --spark-workers 2`: a KRaft cluster and a Spark standalone
cluster, each node a real process on loopback, recorded for every verb, stopped by PID."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys

import psutil
import pytest
import requests

from tbspark.kafka_topics import is_replicated
from tbspark.stack.services import stack_down, stack_status, stack_up

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow, pytest.mark.cluster]


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def _listening(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN}


def test_a_three_broker_kafka_and_a_two_worker_spark_cluster_come_up_on_loopback_and_go_down_by_pid(tmp_path):
    from confluent_kafka.admin import AdminClient, ConfigResource

    root = tmp_path / "state"
    up = subprocess.run([sys.executable, "-m", "tbspark", "stack", "up", "--state-dir", str(root),
                         "--kafka-brokers", "3", "--spark-workers", "2", "--no-platform", "--json"],
                        capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        services = json.loads(up.stdout)
        k, sp = services["kafka"], services["spark"]
        brokers = k["brokers"]
        assert len(brokers) == 3 and k["bootstrap"] == ",".join(f"127.0.0.1:{b['port']}" for b in brokers)
        assert sp["master"].startswith("spark://127.0.0.1:") and len(sp["workers"]) == 2
        pids = [b["pid"] for b in brokers] + [sp["pid"]] + [w["pid"] for w in sp["workers"]]
        assert len(set(pids)) == 6 and all(psutil.pid_exists(p) for p in pids)
        # every port any of them listens on is on loopback (web UIs included)
        for pid in pids:
            assert all(_loopback(ip) for ip, _ in _listening(pid)), (pid, _listening(pid))
        # the topic: replication 3, min.insync.replicas 2, 2 partitions a broker
        topic = "weather-stations-data"
        admin = AdminClient({"bootstrap.servers": k["bootstrap"]})
        md = admin.list_topics(timeout=10)
        assert len(md.brokers) == 3
        parts = md.topics[topic].partitions
        assert len(parts) == k["topics"][topic] == 6 and all(len(p.replicas) == 3 for p in parts.values())
        res = ConfigResource("topic", topic)
        assert admin.describe_configs([res])[res].result()["min.insync.replicas"].value == "2"
        assert is_replicated(k["bootstrap"], topic)
        # the master lists both workers alive; the cluster's secret is readable by its owner only
        state = requests.get(f"{sp['master_ui']}/json/", timeout=10).json()
        assert sorted(w["state"] for w in state["workers"]) == ["ALIVE", "ALIVE"]
        assert stat.S_IMODE(os.stat(sp["conf"]).st_mode) == 0o600
        assert "spark.authenticate.secret" in open(sp["conf"]).read()
        st = stack_status(root)
        assert [b["alive"] for b in st["kafka"]["brokers"]] == [True] * 3 and st["kafka"]["answers"]
        assert st["spark"]["alive"] and all(w["alive"] for w in st["spark"]["workers"])
    finally:
        down = stack_down(root)
    assert sorted(down["kafka"]["pids"]) == sorted(b["pid"] for b in brokers)
    assert len(down["spark"]["pids"]) == 3
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert stack_status(root).get("kafka") is None


def test_two_brokers_are_refused_before_anything_starts(tmp_path):
    from tbspark.errors import UsageError

    with pytest.raises(UsageError, match="--kafka-brokers 2") as err:
        stack_up(tmp_path, kafka_brokers=2, platform=False)
    assert "3 or more" in err.value.hint
    assert not (tmp_path / "kafka").exists()
