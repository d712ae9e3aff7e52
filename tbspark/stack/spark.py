"""A local Spark standalone cluster for `tbspark stack up --spark-workers M`: a master and M workers,
each a real JVM started with pyspark's own distribution (``pyspark/bin/spark-class
org.apache.spark.deploy.master.Master`` / ``…worker.Worker``), on free loopback ports, with small
memory, authenticated with a shared secret, and stopped by PID. Files under <state>/spark/: the
secret's properties file (0600: the master, the workers and every application read it), one log per
process, the workers' work dirs (executor logs)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from tbspark import settings
from tbspark.errors import ServiceStartError, StackError, UsageError
from tbspark.stack import jvm, procs
from tbspark.stack.kafka_config import tail

MAX_WORKERS = 8
DAEMON_MEMORY = "256m"     # the master's and each worker's own heap
WORKER_MEMORY = "768m"     # what a worker offers to executors (an accounting limit, not a heap)
WORKER_CORES = 1
EXECUTOR_MEMORY = "512m"   # each executor's heap: fits in a worker's offer
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def paths(state_root: Path) -> dict[str, Path]:
    d = Path(state_root) / "spark"
    return {"dir": d, "conf": d / "spark-auth.conf", "master_log": d / "master.log"}


def marker(state_root: Path, name: str) -> str:
    """A JVM argument that names the process (found by it after a lost record)."""
    return f"-Dtbspark.service={paths(state_root)['dir'] / name}"


def find_pids(state_root: Path) -> list[int]:
    """Live master and worker JVMs of this state dir (workers first)."""
    d = paths(state_root)["dir"]
    if not d.is_dir():
        return []
    names = sorted(p.stem for p in d.glob("worker-*.log")) + ["master"]
    return [pid for name in names for pid in procs.find_by_arg(marker(state_root, name))]


def start_cluster(state_root: Path, workers: int, host: str = "127.0.0.1",
                  ready_timeout_s: float = READY_TIMEOUT_S, die_with_parent: bool = False) -> dict:
    """Start the master and ``workers`` workers; return once the master lists them all ALIVE:
    {"master": "spark://h:p", "master_ui": "http://h:p", "pid", "log", "conf",
     "workers": [{"id", "port", "pid", "log", "cores", "memory"}]}."""
    from tbspark.stack.kafka import free_port

    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--spark-workers {workers} must be between 1 and {MAX_WORKERS} (0: local mode)",
                         "pass --spark-workers 2, or leave it out to run the job in local[2]")
    root = Path(state_root)
    live = find_pids(root)
    if live:
        raise StackError(f"a Spark cluster started by tbspark already runs on {root} (pids {live})",
                         f"use it, or run `tbspark stack down --state-dir {root}` first")
    p = paths(root)
    p["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(p["dir"], 0o700)
    _write_conf(p["conf"])
    java = jvm.find_java()
    port, ui = free_port(host), free_port(host)
    master_url = f"spark://{host}:{port}"
    started: list[tuple[str, subprocess.Popen, Path]] = []
    record: dict = {"master": master_url, "master_ui": f"http://{host}:{ui}", "conf": str(p["conf"]),
                    "executor_memory": EXECUTOR_MEMORY, "workers": []}
    try:
        proc = _spawn(root, java, "master", p["master_log"], die_with_parent,
                      "org.apache.spark.deploy.master.Master", "--host", host, "--port", str(port),
                      "--webui-port", str(ui), "--properties-file", str(p["conf"]))
        started.append(("master", proc, p["master_log"]))
        record.update(pid=proc.pid, log=str(p["master_log"]))
        for i in range(1, workers + 1):
            wport, wui = free_port(host), free_port(host)
            log = p["dir"] / f"worker-{i}.log"
            work = p["dir"] / f"worker-{i}"
            work.mkdir(exist_ok=True)
            w = _spawn(root, java, f"worker-{i}", log, die_with_parent,
                       "org.apache.spark.deploy.worker.Worker", "--host", host, "--port", str(wport),
                       "--webui-port", str(wui), "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
                       "--work-dir", str(work), "--properties-file", str(p["conf"]), master_url)
            started.append((f"worker-{i}", w, log))
            record["workers"].append({"id": i, "port": wport, "pid": w.pid, "log": str(log),
                                      "cores": WORKER_CORES, "memory": WORKER_MEMORY})
        _wait_ready(started, record["master_ui"], workers, ready_timeout_s)
    except BaseException:
        stop_cluster(root)
        raise
    return record


def _write_conf(path: Path) -> None:
    """The shared secret (a new one per `stack up`), 0600 from the first byte."""
    text = ("# Written by tbspark stack up: Spark's standalone cluster authenticates every daemon and\n"
            "# application with this secret. Pass this file to spark-submit with --properties-file.\n"
            "spark.authenticate true\n"
            f"spark.authenticate.secret {secrets.token_hex(24)}\n"
            f"spark.executor.memory {EXECUTOR_MEMORY}\n"
            "spark.ui.enabled false\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _spawn(root: Path, java: Path, name: str, log: Path, die_with_parent: bool, *args: str) -> subprocess.Popen:
    # SPARK_HOME dropped: pyspark's own distribution, found by spark-class itself
    env = settings.child_environ({"SPARK_LOCAL_IP": "127.0.0.1",  # the web UIs bind to it (else 0.0.0.0)
                                  "SPARK_DAEMON_MEMORY": DAEMON_MEMORY, "SPARK_DAEMON_JAVA_OPTS": marker(root, name),
                                  "JAVA_HOME": settings.java_home() or str(java.resolve().parent.parent),
                                  "SPARK_NO_DAEMONIZE": "1"}, drop=("SPARK_HOME",))
    with open(log, "ab") as fh:
        fh.write(f"\n=== tbspark: starting {name} at {time.strftime('%F %T')} ===\n".encode())
        fh.flush()
        # spark-class execs the JVM: the PID is the JVM's
        return subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], stdin=subprocess.DEVNULL,
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=procs.die_with_parent if die_with_parent else None)


def _wait_ready(started: list[tuple[str, subprocess.Popen, Path]], ui: str, workers: int,
                timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        for name, proc, log in started:
            code = proc.poll()
            if code is not None:
                raise ServiceStartError(f"the Spark {name} exited during start (exit code {code})",
                                        f"see {log}", log_tail=tail(log))
        try:
            state = requests.get(f"{ui}/json/", timeout=2).json()
            if sum(w.get("state") == "ALIVE" for w in state.get("workers", [])) >= workers:
                return
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ServiceStartError(f"the Spark master at {ui} did not list {workers} live workers within "
                                    f"{timeout_s:.0f} s", f"see {started[0][2]}", log_tail=tail(started[0][2]))
        time.sleep(0.2)  # poll interval between readiness probes


def stop_cluster(state_root: Path, timeout_s: float = STOP_TIMEOUT_S) -> dict[int, str]:
    """Workers and master, by PID: SIGTERM, then SIGKILL after ``timeout_s``."""
    return procs.terminate_all(find_pids(Path(state_root)), timeout_s)
