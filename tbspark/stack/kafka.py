"""The local Apache Kafka broker: one KRaft node (broker + controller) in a JVM that tbspark starts,
waits on, and stops by PID. Its config, data and log live under <state>/kafka/."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tbspark.errors import PortInUseError, ServiceStartError, StackError
from tbspark.stack import jvm, procs
from tbspark.stack.kafka_config import (  # noqa: F401 — server_properties is part of this module's API
    LOG4J2, format_storage, java_cmd, server_properties, tail)
from tbspark.state import StateDir, write_json_atomic
from tbspark.kafka_topics import ensure_topic  # noqa: F401 — part of this module's API
from tbspark.kafka_topics import quiet_logger

READY_TIMEOUT_S = 120.0  # generous: a busy 2-core machine has taken 30 s; a dead broker is seen at once
STOP_TIMEOUT_S = 20.0
CDS_DUMP_STOP_TIMEOUT_S = 90.0
@dataclass(frozen=True)
class Broker:
    """A running broker as recorded in services.json under "kafka"."""

    bootstrap: str
    port: int
    controller_port: int
    pid: int
    log: str
    config: str

    def to_json(self) -> dict:
        return asdict(self)


def broker_paths(state: StateDir) -> dict[str, Path]:
    d = state.kafka_dir
    return {"dir": d, "data": d / "data", "config": d / "server.properties", "log": d / "kafka.log",
            "log4j": d / "log4j2.properties", "pid": d / "kafka.pid", "cds_pending": d / "classes.jsa.tmp"}


def check_port_free(port: int, flag: str, host: str = "127.0.0.1") -> None:
    """Raise PortInUseError when ``port`` cannot be bound. SO_REUSEADDR as the JVM sets it, so a port
    held only by TIME_WAIT connections of a previous broker counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(port, flag, host) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_broker_pids(state: StateDir) -> list[int]:
    """PIDs of live brokers started on this state dir: the pid file, and (after a crash that lost it)
    any process whose command line names our server.properties."""
    paths = broker_paths(state)
    marker = str(paths["config"])
    found = []
    pid = procs.read_pid(paths["pid"])
    if pid and procs.is_ours(pid, marker):
        found.append(pid)
    for p in procs.find_by_arg(marker):
        if p not in found:
            found.append(p)
    return found


def start_broker(state: StateDir, port: int = 9092, host: str = "127.0.0.1",
                 ready_timeout_s: float = READY_TIMEOUT_S, die_with_parent: bool = False) -> Broker:
    """Start the broker and return once it answers a metadata request. Formats storage on first use;
    recovers a stale pid file; refuses to start a second broker on the same state dir.
    ``die_with_parent``: the broker gets SIGTERM if this process dies (for test sessions)."""
    java = jvm.find_java()
    classpath = jvm.kafka_classpath()
    paths = broker_paths(state)
    live = find_broker_pids(state)
    if live:
        raise StackError(f"a Kafka broker started by tbspark already runs on {state.root} (pid {live[0]})",
                         f"use it, or run `tbspark stack down --state-dir {state.root}` first")
    paths["pid"].unlink(missing_ok=True)  # stale: its process is gone (checked just above)
    if port:
        check_port_free(port, "--kafka-port", host)
    else:
        port = free_port(host)
    controller_port = free_port(host)
    paths["data"].mkdir(parents=True, exist_ok=True)
    paths["config"].write_text(server_properties(paths["data"], host, port, controller_port))
    paths["log4j"].write_text(LOG4J2)
    if not (paths["data"] / "meta.properties").exists():
        format_storage(java, classpath, paths)
    with open(paths["log"], "ab") as log:
        log.write(f"\n=== tbspark: starting broker on {host}:{port} at {time.strftime('%F %T')} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            java_cmd(java, classpath, paths["log4j"], "kafka.Kafka", str(paths["config"]),
                      cds=jvm.cds_options("kafka", java, paths["cds_pending"])),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the user's terminal must not reach the broker
            preexec_fn=procs.die_with_parent if die_with_parent else None,
        )
    paths["pid"].write_text(f"{proc.pid}\n")
    broker = Broker(bootstrap=f"{host}:{port}", port=port, controller_port=controller_port,
                    pid=proc.pid, log=str(paths["log"]), config=str(paths["config"]))
    try:
        _wait_ready(proc, broker, ready_timeout_s)
    except BaseException:
        stop_pid(proc.pid, STOP_TIMEOUT_S, popen=proc)
        paths["pid"].unlink(missing_ok=True)
        raise
    write_json_atomic(paths["dir"] / "broker.json", broker.to_json())
    return broker


def _wait_ready(proc: subprocess.Popen, broker: Broker, timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0,
                         "logger": quiet_logger(), "socket.connection.setup.timeout.ms": 1000,
                         "reconnect.backoff.max.ms": 200})
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise ServiceStartError(
                f"the Kafka broker exited during start (exit code {code})",
                f"see {broker.log}; if the state dir is damaged, run `tbspark stack down` and delete "
                f"{Path(broker.config).parent}",
                log_tail=tail(Path(broker.log)))
        try:
            md = admin.list_topics(timeout=1.0)
            if md.brokers:
                return
        except Exception:  # noqa: BLE001 — not answering yet is the normal case while it starts
            pass
        if time.monotonic() > deadline:
            raise ServiceStartError(
                f"the Kafka broker on {broker.bootstrap} did not answer within {timeout_s:.0f} s",
                f"see {broker.log}", log_tail=tail(Path(broker.log)))
        time.sleep(0.1)  # poll interval between readiness probes, not a wait for the service


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S, popen: subprocess.Popen | None = None) -> str:
    """SIGTERM, wait, SIGKILL after ``timeout_s``. Returns "stopped", "killed" or "not running"."""
    return procs.terminate(pid, timeout_s, popen)


def stop_broker(state: StateDir, timeout_s: float = STOP_TIMEOUT_S) -> dict:
    """Stop every broker of this state dir (by PID) and remove the pid file."""
    paths = broker_paths(state)
    if paths["cds_pending"].exists():
        timeout_s = max(timeout_s, CDS_DUMP_STOP_TIMEOUT_S)  # it is writing its class archive on the way out
    results = {pid: stop_pid(pid, timeout_s) for pid in find_broker_pids(state)}
    jvm.adopt_cds_archive("kafka", paths["cds_pending"], clean_exit="stopped" in results.values())
    paths["pid"].unlink(missing_ok=True)
    (paths["dir"] / "broker.json").unlink(missing_ok=True)
    return results


def is_alive(pid: int | None, config: str) -> bool:
    return bool(pid) and procs.is_ours(int(pid), config)


def prime_cds(timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Start and stop a throw-away broker once so that the class archive exists before the first real
    start (`make jars` calls this). Returns False when the archive was already there."""
    import shutil
    import tempfile

    if jvm.cds_archive("kafka", jvm.find_java()).exists():
        return False
    tmp = Path(tempfile.mkdtemp(prefix="tbspark-cds-"))
    try:
        state = StateDir(tmp)
        start_broker(state, port=0, ready_timeout_s=timeout_s)
        stop_broker(state)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


if __name__ == "__main__":
    import sys

    from tbspark.errors import TbsparkError

    try:
        made = prime_cds()
    except TbsparkError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print("kafka: class archive " + ("recorded" if made else "up to date"))
