"""A local Kafka cluster for `tbspark stack up --kafka-brokers N` (N >= 3): N KRaft nodes, each a
combined broker + controller in its own JVM, all voters of one static controller quorum, on free
loopback ports. Node i lives under <state>/kafka/node-<i>/ (config, data, log, pid file); every node
is started before any is waited on (a quorum needs a majority to elect a leader), and all are stopped
together by PID (one by one, the last ones would wait for a quorum that is gone)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tbspark.errors import ServiceStartError, StackError, UsageError
from tbspark.kafka_topics import REPLICATED_MIN_ISR, REPLICATED_RF, quiet_logger
from tbspark.stack import jvm, procs
from tbspark.stack.kafka_config import (CLUSTER_JVM_OPTS, LOG4J2, cluster_id, format_storage, java_cmd,
                                        server_properties, tail)
from tbspark.state import StateDir

MIN_BROKERS = 3
MAX_BROKERS = 9
READY_TIMEOUT_S = 180.0  # N JVMs starting at once on a busy 2-core machine
STOP_TIMEOUT_S = 30.0


def node_paths(state: StateDir, node_id: int) -> dict[str, Path]:
    d = state.kafka_dir / f"node-{node_id}"
    return {"dir": d, "data": d / "data", "config": d / "server.properties", "log": d / "kafka.log",
            "log4j": d / "log4j2.properties", "pid": d / "kafka.pid"}


def node_ids(state: StateDir) -> list[int]:
    """The node folders this state dir has (started now or before)."""
    if not state.kafka_dir.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in state.kafka_dir.glob("node-*") if p.name[5:].isdigit())


def find_node_pids(state: StateDir) -> dict[int, list[int]]:
    """Live broker PIDs per node: the pid file, and any process naming the node's config."""
    out: dict[int, list[int]] = {}
    for n in node_ids(state):
        paths = node_paths(state, n)
        marker = str(paths["config"])
        pids = []
        pid = procs.read_pid(paths["pid"])
        if pid and procs.is_ours(pid, marker):
            pids.append(pid)
        pids += [p for p in procs.find_by_arg(marker) if p not in pids]
        if pids:
            out[n] = pids
    return out


def check_brokers(brokers: int) -> None:
    if not MIN_BROKERS <= brokers <= MAX_BROKERS:
        raise UsageError(f"--kafka-brokers {brokers}: a cluster has {MIN_BROKERS} to {MAX_BROKERS} brokers "
                         "(1 is the single broker, the default)",
                         f"pass --kafka-brokers 1, or {MIN_BROKERS} or more for a controller quorum "
                         "that survives a node's loss")


def start_cluster(state: StateDir, brokers: int = 3, host: str = "127.0.0.1",
                  ready_timeout_s: float = READY_TIMEOUT_S, die_with_parent: bool = False) -> dict:
    """Start ``brokers`` nodes and return once the metadata of every node lists all of them:
    {"bootstrap": "h:p1,h:p2,…", "brokers": [{"node_id", "port", "controller_port", "pid", "log",
    "config"}], "replication_factor": 3, "min_insync_replicas": 2}. Storage is formatted afresh
    (one cluster id for all nodes) when the node count differs from the last start."""
    from tbspark.stack.kafka import free_port

    check_brokers(brokers)
    live = find_node_pids(state)
    if live:
        raise StackError(f"a Kafka cluster started by tbspark already runs on {state.root} "
                         f"(pids {sorted(p for ps in live.values() for p in ps)})",
                         f"use it, or run `tbspark stack down --state-dir {state.root}` first")
    java = jvm.find_java()
    classpath = jvm.kafka_classpath()
    if node_ids(state) != list(range(1, brokers + 1)):
        _wipe(state)  # another size before: its quorum cannot be reused
    ports = {n: (free_port(host), free_port(host)) for n in range(1, brokers + 1)}
    voters = {n: c for n, (_, c) in ports.items()}
    cid = cluster_id()
    archive = jvm.cds_archive("kafka", java)
    cds = [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []  # no N JVMs recording one
    started: dict[int, subprocess.Popen] = {}
    record = []
    try:
        for n, (port, cport) in ports.items():
            paths = node_paths(state, n)
            paths["data"].mkdir(parents=True, exist_ok=True)
            paths["config"].write_text(server_properties(paths["data"], host, port, cport, n, voters))
            paths["log4j"].write_text(LOG4J2)
            if not (paths["data"] / "meta.properties").exists():
                format_storage(java, classpath, paths, node_id=n, cluster=cid)
            with open(paths["log"], "ab") as log:
                log.write(f"\n=== tbspark: starting node {n} on {host}:{port} at {time.strftime('%F %T')} ===\n"
                          .encode())
                log.flush()
                proc = subprocess.Popen(
                    java_cmd(java, classpath, paths["log4j"], "kafka.Kafka", str(paths["config"]),
                             opts=CLUSTER_JVM_OPTS, cds=cds),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=procs.die_with_parent if die_with_parent else None)
            started[n] = proc
            paths["pid"].write_text(f"{proc.pid}\n")
            record.append({"node_id": n, "bootstrap": f"{host}:{port}", "port": port, "controller_port": cport, "pid": proc.pid,
                           "log": str(paths["log"]), "config": str(paths["config"])})
        bootstrap = ",".join(f"{host}:{b['port']}" for b in record)
        _wait_ready(started, state, bootstrap, brokers, ready_timeout_s)
    except BaseException:
        stop_cluster(state)
        raise
    return {"bootstrap": bootstrap, "brokers": record, "replication_factor": REPLICATED_RF,
            "min_insync_replicas": REPLICATED_MIN_ISR}


def _wipe(state: StateDir) -> None:
    import shutil

    for n in node_ids(state):
        shutil.rmtree(node_paths(state, n)["dir"], ignore_errors=True)


def _wait_ready(started: dict[int, subprocess.Popen], state: StateDir, bootstrap: str, brokers: int,
                timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet_logger(),
                         "socket.connection.setup.timeout.ms": 1000, "reconnect.backoff.max.ms": 200})
    deadline = time.monotonic() + timeout_s
    while True:
        for n, proc in started.items():
            code = proc.poll()
            if code is not None:
                log = node_paths(state, n)["log"]
                raise ServiceStartError(f"Kafka node {n} exited during start (exit code {code})",
                                        f"see {log}", log_tail=tail(log))
        try:
            if len(admin.list_topics(timeout=1.0).brokers) >= brokers:
                return
        except Exception:  # noqa: BLE001 — not answering yet is the normal case while they start
            pass
        if time.monotonic() > deadline:
            raise ServiceStartError(f"the Kafka cluster on {bootstrap} did not list {brokers} brokers "
                                    f"within {timeout_s:.0f} s", f"see the logs in {state.kafka_dir}/node-*",
                                    log_tail=tail(node_paths(state, 1)["log"]))
        time.sleep(0.2)  # poll interval between readiness probes, not a wait for the service


def stop_cluster(state: StateDir, timeout_s: float = STOP_TIMEOUT_S) -> dict[int, str]:
    """SIGTERM to every node at once, SIGKILL to those still running after ``timeout_s``."""
    pids = [p for ps in find_node_pids(state).values() for p in ps]
    results = procs.terminate_all(pids, timeout_s)
    for n in node_ids(state):
        node_paths(state, n)["pid"].unlink(missing_ok=True)
    return results
