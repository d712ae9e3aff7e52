"""`tbspark stack up | down | status`: the local Kafka broker (or a Kafka cluster), the embedded
platform and, when asked, a Spark standalone cluster as one stack, recorded in <state>/services.json
so every other verb can find them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from tbspark.errors import ServiceStartError, StackError
from tbspark.stack import kafka, kafka_cluster, procs
from tbspark.stack import spark as spark_cluster
from tbspark.state import StackRecord, StateDir

DEFAULT_TOPIC = "weather-stations-data"
UI_PATH = "/tbspark/ui"  # the platform's live page (tbspark/platform/web; not imported: it pulls aiohttp)
PLATFORM_READY_TIMEOUT_S = 90.0  # generous for busy machines; an exited platform is seen at once
PLATFORM_STOP_TIMEOUT_S = 15.0


def stack_up(state_dir: Path, kafka_port: int = 9092, http_port: int = 8080, mqtt_port: int = 1883,
             platform: bool = True, topic: str | None = DEFAULT_TOPIC, partitions: int = 1,
             host: str = "127.0.0.1", die_with_parent: bool = False, kafka_brokers: int = 1,
             spark_workers: int = 0) -> dict:
    """Start Kafka (and the embedded platform, and a Spark cluster), create ``topic``, record and
    return services.json:
    {"kafka": {"bootstrap", "brokers": [{"port", "pid", …}], "topics", …},
     "platform": {"url", "ui_url", "http_port", "mqtt_port", "pid", "log"} | absent,
     "spark": {"master": "spark://…", "workers": [{"port", "pid", …}], "conf", …} | absent}
    (``ui_url``: the live page; it asks for the tenant's login, no password travels in the URL).
    ``kafka_brokers`` 1 is the single broker (on ``kafka_port``); 3 or more a KRaft cluster on free
    ports whose topics have 3 replicas, min.insync.replicas 2 and at least 2 partitions per broker.
    ``spark_workers`` 0: no Spark cluster (the job runs in local mode).
    If anything fails, what was started is stopped again before the error propagates.
    ``die_with_parent``: the services get SIGTERM if this process dies (test sessions use it)."""
    state = StateDir(Path(state_dir)).ensure()
    if kafka_brokers != 1:
        kafka_cluster.check_brokers(kafka_brokers)
        partitions = max(partitions, 2 * kafka_brokers)
    live = kafka.find_broker_pids(state) + [p for ps in kafka_cluster.find_node_pids(state).values() for p in ps]
    if live:  # a single broker and a cluster on one state dir would share nothing but the name
        raise StackError(f"a Kafka broker started by tbspark already runs on {state.root} (pid {live[0]})",
                         f"use it, or run `tbspark stack down --state-dir {state.root}` first")
    if spark_workers and spark_cluster.find_pids(state.root):
        # before anything starts: the clean-up after a failure would stop the running one
        raise StackError(f"a Spark cluster started by tbspark already runs on {state.root}",
                         f"use it, or run `tbspark stack down --state-dir {state.root}` first")
    if platform:
        # Ports are checked before anything starts, so a taken port never costs a broker start.
        for port, flag in ((http_port, "--http-port"), (mqtt_port, "--mqtt-port")):
            if port:
                kafka.check_port_free(port, flag, host)
        _refuse_live_platform(state)
    if kafka_brokers == 1:
        broker = kafka.start_broker(state, port=kafka_port, host=host, die_with_parent=die_with_parent)
        services: dict = {"kafka": {**broker.to_json(), "brokers": [{"node_id": 1, **broker.to_json()}],
                                    "replication_factor": 1}}
    else:
        services = {"kafka": kafka_cluster.start_cluster(state, kafka_brokers, host,
                                                         die_with_parent=die_with_parent)}
    try:
        bootstrap = services["kafka"]["bootstrap"]
        if topic:
            count = kafka.ensure_topic(bootstrap, topic, partitions)
            services["kafka"]["topics"] = {topic: count}
        if spark_workers:
            services["spark"] = spark_cluster.start_cluster(state.root, spark_workers, host,
                                                            die_with_parent=die_with_parent)
        if platform:
            services["platform"] = start_platform(state, http_port, mqtt_port, host,
                                                  die_with_parent=die_with_parent)
        StackRecord(services.get("kafka"), services.get("platform"), services.get("spark")).save(
            state.services_file)
    except BaseException:
        stop_platform(state)
        spark_cluster.stop_cluster(state.root)
        kafka_cluster.stop_cluster(state)
        kafka.stop_broker(state)
        raise
    return services


def stack_down(state_dir: Path) -> dict:
    """Stop what `up` started on this state dir, by PID (platform first: it produces into Kafka).
    Returns {"kafka": {"pids": {pid: "stopped"|"killed"|"not running"}}, "platform": {...}}."""
    state = StateDir(Path(state_dir))
    result = {"platform": {"pids": stop_platform(state)},
              "spark": {"pids": spark_cluster.stop_cluster(state.root)},
              "kafka": {"pids": {**kafka.stop_broker(state), **kafka_cluster.stop_cluster(state)}}}
    state.services_file.unlink(missing_ok=True)
    return result


def stack_status(state_dir: Path, probe: bool = True) -> dict:
    """What services.json says runs, with "alive" for each process, and (``probe``) whether Kafka
    answers a metadata request, whether the platform answers its health check and its counters from
    GET <url>/tbspark/stats (as the tenant administrator: TBSPARK_TENANT_USERNAME/PASSWORD, the
    logins the platform was started with, or the defaults; None when that login is refused)."""
    state = StateDir(Path(state_dir))
    record = StackRecord.find(state)
    services = record.to_json() if record else {}
    out: dict = {"state_dir": str(state.root)}
    k = services.get("kafka")
    if k:
        brokers = [{**b, "alive": kafka.is_alive(b.get("pid"), b.get("config", ""))}
                   for b in k.get("brokers") or [k]]
        alive = any(b["alive"] for b in brokers)
        out["kafka"] = {**k, "brokers": brokers, "alive": alive}
        if probe and alive:
            out["kafka"]["answers"] = _kafka_answers(k["bootstrap"])
    sp = services.get("spark")
    if sp:
        for entry in (sp, *sp.get("workers", [])):
            name = "master" if entry is sp else f"worker-{entry.get('id')}"
            entry["alive"] = bool(entry.get("pid")) and procs.is_ours(
                int(entry["pid"]), spark_cluster.marker(state.root, name))
        out["spark"] = sp
    p = services.get("platform")
    if p:
        alive = procs.is_ours(int(p.get("pid") or 0), str(state.root)) if p.get("pid") else False
        out["platform"] = {**p, "alive": alive}
        if p.get("url"):
            out["platform"].setdefault("ui_url", p["url"] + UI_PATH)
        if probe and alive:
            out["platform"]["answers"] = _platform_answers(p["url"])
            out["platform"]["stats"] = _platform_stats(p["url"]) if out["platform"]["answers"] else None
    known = {b.get("pid") for b in (k.get("brokers") or [k])} if k else set()
    orphans = [pid for pid in kafka.find_broker_pids(state) if pid not in known]
    orphans += [p for ps in kafka_cluster.find_node_pids(state).values() for p in ps if p not in known]
    if orphans:
        out["orphans"] = orphans  # brokers of this state dir that services.json does not know about
    return out


# ---- the embedded platform -----------------------------------------------------------------------

def _platform_paths(state: StateDir) -> dict[str, Path]:
    d = state.platform_dir
    return {"dir": d, "endpoint": state.endpoint_file, "log": d / "platform.log", "pid": d / "platform.pid"}


def _platform_marker(state: StateDir) -> str:
    return str(state.root)


def _find_platform_pids(state: StateDir) -> list[int]:
    paths = _platform_paths(state)
    marker = _platform_marker(state)
    pids = []
    pid = procs.read_pid(paths["pid"])
    if pid and procs.is_ours(pid, marker):
        pids.append(pid)
    for p in procs.find_by_arg(marker):
        if p not in pids and _is_platform_cmd(p):
            pids.append(p)
    return pids


def _is_platform_cmd(pid: int) -> bool:
    import psutil

    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "platform" in cmd and "serve" in cmd


def _refuse_live_platform(state: StateDir) -> None:
    live = _find_platform_pids(state)
    if live:
        raise StackError(f"an embedded platform started by tbspark already runs on {state.root} (pid {live[0]})",
                         f"use it, or run `tbspark stack down --state-dir {state.root}` first")


def start_platform(state: StateDir, http_port: int = 8080, mqtt_port: int = 1883, host: str = "127.0.0.1",
                   ready_timeout_s: float = PLATFORM_READY_TIMEOUT_S, die_with_parent: bool = False) -> dict:
    """Run `python -m tbspark platform serve` detached; ready once it has written endpoint.json with its
    own pid and GET <url>/tbspark/health answers 200."""
    paths = _platform_paths(state)
    paths["dir"].mkdir(parents=True, exist_ok=True)
    paths["endpoint"].unlink(missing_ok=True)  # a stale one from a crash would look ready
    cmd = [sys.executable, "-m", "tbspark", "platform", "serve", "--host", host,
           "--http-port", str(http_port), "--mqtt-port", str(mqtt_port), "--state-dir", str(state.root)]
    with open(paths["log"], "ab") as log:
        log.write(f"\n=== tbspark: starting platform at {time.strftime('%F %T')} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=procs.die_with_parent if die_with_parent else None)
    paths["pid"].write_text(f"{proc.pid}\n")
    try:
        endpoint = _wait_platform(proc, paths, ready_timeout_s)
    except BaseException:
        procs.terminate(proc.pid, PLATFORM_STOP_TIMEOUT_S, proc)
        paths["pid"].unlink(missing_ok=True)
        raise
    return {"url": endpoint["url"], "ui_url": endpoint.get("ui_url") or endpoint["url"] + UI_PATH,
            "http_port": endpoint["http_port"], "mqtt_port": endpoint["mqtt_port"],
            "pid": proc.pid, "log": str(paths["log"])}


def _wait_platform(proc: subprocess.Popen, paths: dict[str, Path], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise ServiceStartError(f"the embedded platform exited during start (exit code {code})",
                                    f"see {paths['log']}", log_tail=_tail(paths["log"]))
        endpoint = _read_endpoint(paths["endpoint"])
        if endpoint and endpoint.get("pid") == proc.pid:
            try:
                if requests.get(f"{endpoint['url']}/tbspark/health", timeout=2).status_code == 200:
                    return endpoint
            except requests.RequestException:
                pass
        if time.monotonic() > deadline:
            raise ServiceStartError(f"the embedded platform did not become healthy within {timeout_s:.0f} s",
                                    f"see {paths['log']}", log_tail=_tail(paths["log"]))
        time.sleep(0.1)  # poll interval between readiness probes


def _read_endpoint(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stop_platform(state: StateDir) -> dict:
    paths = _platform_paths(state)
    results = {pid: procs.terminate(pid, PLATFORM_STOP_TIMEOUT_S) for pid in _find_platform_pids(state)}
    paths["pid"].unlink(missing_ok=True)
    paths["endpoint"].unlink(missing_ok=True)
    return results


# ---- probes for status ---------------------------------------------------------------------------

def _kafka_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": kafka.quiet_logger()})
        return bool(admin.list_topics(timeout=2.0).brokers)
    except Exception:  # noqa: BLE001 — any failure means "does not answer", which status reports
        return False


def _platform_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/tbspark/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _platform_stats(url: str) -> dict | None:
    """GET /tbspark/stats with a tenant JWT (every control but health needs one)."""
    from tbspark import settings

    username, password = settings.tenant_login()
    try:
        login = requests.post(f"{url}/api/auth/login", json={"username": username, "password": password},
                              timeout=5)
        if login.status_code != 200:
            return None
        headers = {"X-Authorization": "Bearer " + login.json()["token"]}
        # No logout afterwards: the token never leaves this process, and each logout is a record the
        # platform keeps for a week (a status loop would pile them up).
        resp = requests.get(f"{url}/tbspark/stats", headers=headers, timeout=5)
        return resp.json() if resp.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return ""

