"""What the local Kafka broker is given: its server.properties, log4j2 config and JVM flags, and
its formatted storage (Kafka's StorageTool, or a copy of its output kept beside the jars)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from tbspark.errors import ServiceStartError
from tbspark.stack import jvm

# Enough for a development broker; the JVM's default (a quarter of RAM) would take 6 GiB here.
# SerialGC rather than G1: a broker's heap here is small and mostly short-lived request buffers, and
# G1's concurrent threads cost more than they save on 2 cores — 15-20% less broker CPU per record at
# 15K records/s in three A/B pairs (bench/kafka_broker.py, chain vs chain-serialgc).
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
# The storage formatter runs for a second: C1 only and one GC thread start it faster on a busy machine.
TOOL_OPTS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]

LOG4J2 = """\
# Written by tbspark: the broker logs to stdout, which tbspark sends to kafka.log.
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
"""


# A node of a cluster (`stack up --kafka-brokers N`, N >= 3) gets a smaller heap: N of them share
# the machine with Spark's master and workers.
CLUSTER_JVM_OPTS = ["-Xms128m", "-Xmx256m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


def server_properties(data_dir: Path, host: str, port: int, controller_port: int, node_id: int = 1,
                      voters: dict[int, int] | None = None) -> str:
    """A combined broker+controller node. Static quorum (controller.quorum.voters) rather than a
    dynamic one, so a restart on other ports needs no reformat; no initial rebalance delay so the
    first consumer group starts at once. One node: replication factors of 1. A cluster (``voters``:
    node id → controller port, 3 or more): every internal and default topic has 3 replicas and
    min.insync.replicas 2, and no unclean leader election — an acks=all write is on two brokers
    before it is acknowledged, and a broker's loss loses none of them."""
    voters = voters or {node_id: controller_port}
    cluster = len(voters) >= 3
    rf, isr = ("3", "2") if cluster else ("1", "1")
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(f"{n}@{host}:{p}" for n, p in sorted(voters.items())),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "4",  # 50 by default: slows the first group join for nothing
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.retention.hours": "24",
        "num.io.threads": "2",
        "num.network.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
    }
    if cluster:
        props.update({"default.replication.factor": rf, "min.insync.replicas": isr,
                      "unclean.leader.election.enable": "false",
                      "num.partitions": str(2 * len(voters))})
    return "".join(f"{k}={v}\n" for k, v in props.items())


def cluster_id() -> str:
    # The format Kafka's own `random-uuid` prints: a v4 UUID, URL-safe base64 without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def java_cmd(java: Path, classpath: str, log4j: Path, main: str, *args: str,
              opts: list[str] = JVM_OPTS, cds: list[str] | None = None) -> list[str]:
    return [str(java), *opts, *(cds or []), f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, main, *args]


def format_storage(java: Path, classpath: str, paths: dict[str, Path], node_id: int = 1,
                   cluster: str | None = None) -> None:
    """Kafka's StorageTool formats the first state dir of a jar cache; its output that does not depend
    on the node (bootstrap.checkpoint: the feature levels of this Kafka version) is kept beside the
    jars, so later state dirs are formatted by copying it and writing a fresh meta.properties — one
    JVM start less per cold `stack up`."""
    template = jvm.jar_dir("kafka") / ".storage-template" / "bootstrap.checkpoint"
    if template.exists():
        shutil.copyfile(template, paths["data"] / "bootstrap.checkpoint")
        # meta.properties last: its presence is what marks the directory as formatted.
        write_text_atomic(paths["data"] / "meta.properties",
                          f"version=1\nnode.id={node_id}\ncluster.id={cluster or cluster_id()}\n"
                          f"directory.id={cluster_id()}\n")
        with open(paths["log"], "a") as log:
            log.write(f"=== tbspark: storage formatted from {template} ===\n")
        return
    cmd = java_cmd(java, classpath, paths["log4j"], "kafka.tools.StorageTool", "format",
                    "--ignore-formatted", f"--cluster-id={cluster or cluster_id()}", "-c", str(paths["config"]), opts=TOOL_OPTS)
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    with open(paths["log"], "a") as log:
        log.write(f"=== tbspark: format storage ===\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise ServiceStartError(
            f"formatting Kafka storage in {paths['data']} failed (exit {done.returncode})",
            f"see {paths['log']}; if the state dir is damaged, delete {paths['dir']}",
            log_tail=tail(paths["log"]))
    try:
        template.parent.mkdir(exist_ok=True)
        tmp = template.with_name(f".{template.name}.{os.getpid()}")
        shutil.copyfile(paths["data"] / "bootstrap.checkpoint", tmp)
        os.replace(tmp, template)
    except OSError:
        pass  # only an optimisation: the next cold start formats with the tool again


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
