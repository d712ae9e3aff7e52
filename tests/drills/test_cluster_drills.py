"""Drills on the cluster stack (`stack up --kafka-brokers 3 --spark-workers 2`): the whole pipeline
with the job's executors in the Spark workers, one fault mid-run, the exact verification against the
simulator's ground truth at the end. One stack for the module (a 3-broker cluster and a Spark cluster
are heavy on 2 cores): its record is checked first, the drills run on it, and the last test stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tbspark.testing.pipeline import REPO, Pipeline, Proc, describe, scenario_yaml

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark, pytest.mark.cluster]

DEVICES, ZONES, RATE_HZ = 6, 3, 10      # 60 messages/s at QoS 1
WINDOW_S, WATERMARK_S = 5, 2
RUN_S = 24                              # the first simulation run
RUN2_S = 24                             # the second
FAULT_AT_S = 6                          # seconds between the faults
JOB_START_S = 400                       # a job's first batch on the cluster, on a busy machine
SETTLE_S = 240


def _scenario(root: Path, name: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(scenario_yaml(name, DEVICES, ZONES, RATE_HZ, qos=1, window_s=WINDOW_S,
                                  watermark_s=WATERMARK_S, partitions=6))
    return path


@dataclass
class ClusterStack:
    root: Path
    services: dict


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`tbspark stack up --kafka-brokers 3 --spark-workers 2 --json` (the CLI, as a user types it)."""
    from tbspark.stack.services import stack_down

    root = tmp_path_factory.mktemp("cluster-stack")
    up = subprocess.run([sys.executable, "-m", "tbspark", "stack", "up", "--state-dir", str(root),
                         "--kafka-brokers", "3", "--spark-workers", "2", "--kafka-port", "0", "--http-port", "0",
                         "--mqtt-port", "0", "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield ClusterStack(root, json.loads(up.stdout))
    finally:
        stack_down(root)


def _pipeline(cluster: ClusterStack, tmp_path: Path, drill: str) -> Pipeline:
    p = Pipeline(_scenario(tmp_path, f"{drill}-{uuid.uuid4().hex[:4]}"), tmp_path / "run")
    p.attach(cluster.root)
    p.provision()
    return p


def _checkpoint_uri(p: Pipeline) -> str:
    return f"file://{p.state.checkpoint_dir(p.scenario.name)}"


def _job(p: Pipeline, master: str) -> Proc:
    return p.aggregator(args=("--master", master, "--checkpoint", _checkpoint_uri(p)))


def _chain_producer(p: Pipeline) -> dict:
    """The forwarding chain's Kafka node as provision saved it on the platform."""
    from tbspark.thingsboard.rulechain import chain_name
    from tests.fixtures.platform import tenant_session

    url = p.services["platform"]["url"]
    s = tenant_session(url)
    chains = s.get(f"{url}/api/ruleChains", params={"pageSize": 100, "page": 0,
                                                     "textSearch": chain_name(p.scenario)}, timeout=10).json()
    chain = next(c for c in chains["data"] if c["name"] == chain_name(p.scenario))
    meta = s.get(f"{url}/api/ruleChain/{chain['id']['id']}/metadata", timeout=10).json()
    return next(n for n in meta["nodes"] if n["type"].endswith("TbKafkaNode"))["configuration"]


def test_the_cluster_stack_is_recorded_replicated_and_every_node_listens_on_loopback_only(cluster):
    import ipaddress

    from confluent_kafka.admin import AdminClient, ConfigResource

    from tbspark.kafka_topics import is_replicated
    from tbspark.stack.services import stack_status

    k, sp = cluster.services["kafka"], cluster.services["spark"]
    brokers = k["brokers"]
    assert len(brokers) == 3 and k["bootstrap"] == ",".join(f"127.0.0.1:{b['port']}" for b in brokers)
    assert sp["master"].startswith("spark://127.0.0.1:") and len(sp["workers"]) == 2
    pids = [b["pid"] for b in brokers] + [sp["pid"]] + [w["pid"] for w in sp["workers"]]
    assert len(set(pids)) == 6
    for pid in pids:  # every port any of them listens on (web UIs included) is on loopback
        for c in psutil.Process(pid).net_connections("inet"):
            if c.status == psutil.CONN_LISTEN:
                addr = ipaddress.ip_address(c.laddr.ip)
                assert (getattr(addr, "ipv4_mapped", None) or addr).is_loopback, (pid, c.laddr)
    # the stack's topic: replication 3, min.insync.replicas 2, 2 partitions a broker
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
    workers = requests.get(f"{sp['master_ui']}/json/", timeout=10).json()["workers"]
    assert sorted(w["state"] for w in workers) == ["ALIVE", "ALIVE"]
    assert stat.S_IMODE(os.stat(sp["conf"]).st_mode) == 0o600
    st = stack_status(cluster.root)
    assert [b["alive"] for b in st["kafka"]["brokers"]] == [True] * 3 and st["kafka"]["answers"]
    assert st["spark"]["alive"] and all(w["alive"] for w in st["spark"]["workers"])


def _documented_spark_submit() -> str:
    """The spark-submit command of docs/scaling.md, as written there (continuation lines joined)."""
    text = (REPO / "docs" / "scaling.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "spark-submit" in b)
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if "spark-submit" in line)
    return re.sub(r"\\\n\s*", "", "\n".join(lines[start:])).strip()


def _spark_submit(p: Pipeline, cluster: ClusterStack) -> Proc:
    log = p.state.root / "logs" / "spark-submit.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SPARK_MASTER": cluster.services["spark"]["master"],
           "KAFKA_BOOTSTRAP": cluster.services["kafka"]["bootstrap"],
           "TB_URL": cluster.services["platform"]["url"], "STATE_DIR": str(p.state.root),
           "SPARK_PROPERTIES": cluster.services["spark"]["conf"],
           "SCENARIO": str(p.scenario_path), "CHECKPOINT": _checkpoint_uri(p)}
    with open(log, "ab") as fh:
        popen = subprocess.Popen(["bash", "-c", _documented_spark_submit()], cwd=REPO, env=env,
                                 stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    proc = Proc("spark-submit", popen, log)
    p.procs.append(proc)
    return proc


def test_broker_worker_and_driver_sigkilled_mid_run_lose_nothing_and_the_windows_are_exact(cluster, tmp_path):
    """One job start on the cluster (a minute on a busy machine) for three faults, in two simulator
    runs. Run 1: a broker SIGKILLed (QoS 1, replicated topic: nothing lost), then a Spark worker (its
    executor goes with it): the same driver goes on with the other executor, and every window of the
    run is exact. Run 2: the driver SIGKILLed mid-run; the documented spark-submit command resumes
    from the file:// URI checkpoint, and every window of run 2 is exact (those open at the kill
    included)."""
    p = _pipeline(cluster, tmp_path, "cl-faults")
    master = cluster.services["spark"]["master"]
    broker = cluster.services["kafka"]["brokers"][1]
    worker = cluster.services["spark"]["workers"][0]
    job = _job(p, master)
    try:
        p.wait_job_running(job, timeout_s=JOB_START_S)
        sim = p.simulator(RUN_S)
        time.sleep(FAULT_AT_S)  # the drill's schedule: each fault strikes mid-run
        os.kill(broker["pid"], signal.SIGKILL)
        time.sleep(FAULT_AT_S)
        os.kill(worker["pid"], signal.SIGKILL)
        assert sim.popen.wait(RUN_S + 180) == 0, sim.tail()
        first, _ = p.wait_verified(SETTLE_S)
        gt1 = p.groundtruth()
        assert job.alive(), job.tail()  # the same driver went on through both faults

        since = int(time.time() * 1000)
        sim2 = p.simulator(RUN2_S, seed=8)
        time.sleep(FAULT_AT_S)
        job.signal(signal.SIGKILL)  # the driver and its JVM; the master then ends its executors
        assert job.popen.wait(30) == -signal.SIGKILL
        before, at_kill = p.last_batch(), p.committed_records()
        restarted = _spark_submit(p, cluster)
        p.wait_job_running(restarted, after_batch=before, timeout_s=JOB_START_S)
        assert sim2.popen.wait(RUN2_S + 180) == 0, sim2.tail()
        second, _ = p.wait_verified(SETTLE_S, since_ms=since)
        log = restarted.log.read_text(errors="replace")
    finally:
        for proc in p.procs:
            proc.stop()
    assert gt1["acked"] == gt1["sent"] > 0.9 * DEVICES * RATE_HZ * RUN_S, "QoS 1: every message acknowledged"
    assert first.holds, describe(first)
    gt2 = p.groundtruth()
    assert gt2["acked"] == gt2["sent"] > 0.9 * DEVICES * RATE_HZ * RUN2_S
    assert second.holds, describe(second)
    for report in (first, second):
        assert not [m for m in report.mismatches if m.problem in ("duplicated", "missing", "extra")]
    # the restarted driver folded records into the state it resumed
    assert p.committed_records() > at_kill
    assert "without -Xss16m" not in log  # the documented command passes the driver's stack size
    # the window state went where the URI says, beside Spark's checkpoint
    assert list((p.state.checkpoint_dir(p.scenario.name) / "tbspark-windows").glob("*.json"))
    node = _chain_producer(p)  # provision saw the replicated topic: an idempotent, retrying producer
    assert node["acks"] == "-1" and node["retries"] > 0 and node["otherProperties"] == {"enable.idempotence": "true"}


def test_stack_down_stops_every_node_of_the_cluster_by_pid(cluster):
    from tbspark.stack.services import stack_down, stack_status

    k, sp = cluster.services["kafka"], cluster.services["spark"]
    pids = [b["pid"] for b in k["brokers"]] + [sp["pid"]] + [w["pid"] for w in sp["workers"]] + \
        [cluster.services["platform"]["pid"]]
    down = stack_down(cluster.root)
    assert len(down["spark"]["pids"]) <= 3 and down["platform"]["pids"]
    assert not [pid for pid in pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert stack_status(cluster.root).get("kafka") is None
