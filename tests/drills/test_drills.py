"""Fault drills through the whole pipeline (simulator → platform → Kafka → Spark → zone assets →
verify), on one shared stack: each drill has its own scenario (own devices, zones, topic, checkpoint),
breaks one part in the middle of a run, and ends with the exact verification against the simulator's
ground truth. Component-level versions live elsewhere (spark: driver SIGKILL and platform stop on a
prepared topic; platform-rest: kill -9 durability of the store); these are the end-to-end ones."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from bench.e2e_pipeline import Pipeline, describe, scenario_yaml
from tests.drills.proxy import Proxy

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark]

DEVICES, ZONES, RATE_HZ = 6, 3, 10      # 60 messages/s at QoS 1
WINDOW_S, WATERMARK_S = 5, 2
RUN_S = 30                              # simulation length of each drill
FAULT_AT_S = 8                          # seconds into the simulation
SETTLE_S = 180                          # after the simulation: last window + retries on a busy machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Kafka + the embedded platform on free ports, shared by the drills of this module."""
    root = tmp_path_factory.mktemp("drill-stack")
    base = Pipeline(_scenario(root, "drill-base"), root / "stack")
    base.up()
    try:
        yield base
    finally:
        base.down()


def _scenario(root: Path, name: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(scenario_yaml(name, DEVICES, ZONES, RATE_HZ, qos=1, window_s=WINDOW_S,
                                  watermark_s=WATERMARK_S))
    return path


def _pipeline(stack: Pipeline, tmp_path: Path, drill: str, env: dict | None = None) -> Pipeline:
    name = f"{drill}-{uuid.uuid4().hex[:4]}"
    p = Pipeline(_scenario(tmp_path, name), tmp_path / "run", env=env or {})
    p.attach(stack.state.root)
    p.provision()
    return p


def _until(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # poll interval on a condition another thread changes


def _run(p: Pipeline, fault) -> tuple:
    """Aggregator up, simulator for RUN_S, ``fault(p)`` at FAULT_AT_S, then wait for the verdict."""
    job = p.aggregator()
    try:
        p.wait_job_running(job)
        sim = p.simulator(RUN_S)
        time.sleep(FAULT_AT_S)  # the drill's schedule: the fault strikes mid-run, not a readiness wait
        fault(p)
        assert sim.popen.wait(RUN_S + 120) == 0, sim.tail()
        result = sim.json_output()
        report, _ = p.wait_verified(SETTLE_S)
        return report, result, job
    finally:
        for proc in p.procs:
            proc.stop()


def test_rest_side_unavailable_for_30_s_loses_no_window(stack, tmp_path):
    proxy = Proxy(stack.services["platform"]["http_port"])
    p = _pipeline(stack, tmp_path, "rest-outage", env={"TB_URL": f"http://127.0.0.1:{proxy.port}"})

    def outage(p: Pipeline) -> None:
        _until(lambda: proxy.accepted > 0, 180, "the job never wrote to ThingsBoard")
        proxy.down()  # from the job's first write on: windows are closing while it is down
        t0 = time.monotonic()
        # 30 s, and longer if need be until the job has really tried (a slow batch on a busy machine)
        _until(lambda: time.monotonic() - t0 >= 30 and proxy.refused > 0, 180,
               "the job did not try to reach ThingsBoard during the outage")
        proxy.up()

    try:
        report, sim, job = _run(p, outage)
    finally:
        proxy.close()
    gt = p.groundtruth()
    assert gt["acked"] == gt["sent"] > 0.9 * DEVICES * RATE_HZ * RUN_S
    assert report.holds, describe(report)
    # the outage spanned several window closes: those windows were written after it, none lost
    assert report.windows_verified == sum(len(w) for w in gt["windows"].values()) >= ZONES * RUN_S // WINDOW_S


def test_aggregation_driver_sigkill_and_restart_gives_the_uninterrupted_windows(stack, tmp_path):
    p = _pipeline(stack, tmp_path, "driver-kill")
    killed = {}

    def kill_driver(p: Pipeline) -> None:
        job = p.procs[0]
        job.signal(signal.SIGKILL)  # the driver and its Spark JVM, no chance to clean up
        killed["rc"] = job.popen.wait(30)
        before = p.last_batch()
        restarted = p.aggregator()
        p.wait_job_running(restarted, after_batch=before)

    report, sim, _ = _run(p, kill_driver)
    assert killed["rc"] == -signal.SIGKILL
    gt = p.groundtruth()
    assert gt["acked"] == gt["sent"]
    # exact against the ground truth = what an uninterrupted run writes; no window doubled or missing
    assert report.holds, describe(report)
    assert not [m for m in report.mismatches if m.problem in ("duplicated", "missing", "extra")]


def test_kafka_broker_restart_loses_nothing_acknowledged(stack, tmp_path):
    from tbspark.stack import kafka
    from tbspark.state import StateDir

    p = _pipeline(stack, tmp_path, "kafka-restart")
    port = stack.services["kafka"]["port"]

    def restart_broker(p: Pipeline) -> None:
        broker_state = StateDir(stack.state.root)
        results = kafka.stop_broker(broker_state)
        assert results and all(r in ("stopped", "killed") for r in results.values()), results
        broker = kafka.start_broker(broker_state, port=port)
        stack.services["kafka"].update(broker.to_json())

    report, sim, _ = _run(p, restart_broker)
    gt = p.groundtruth()
    assert gt["acked"] == gt["sent"], "QoS 1: devices should see every message acknowledged"
    assert report.holds, describe(report)


def test_platform_sigkill_and_restart_keeps_what_it_acknowledged(stack, tmp_path):
    from tbspark.stack.services import start_platform
    from tbspark.state import StateDir, write_json_atomic

    p = _pipeline(stack, tmp_path, "platform-kill")
    plat = stack.services["platform"]
    killed_at = {}

    def kill_platform(p: Pipeline) -> None:
        os.kill(plat["pid"], signal.SIGKILL)
        killed_at["ms"] = int(time.time() * 1000)
        info = start_platform(StateDir(stack.state.root), plat["http_port"], plat["mqtt_port"])
        stack.services["platform"] = info
        write_json_atomic(stack.state.services_file, stack.services)  # stack_down stops the new pid

    report, sim, _ = _run(p, kill_platform)
    gt = p.groundtruth()
    assert sim.get("reconnects", 0) >= DEVICES, f"devices did not reconnect: {sim}"
    # everything acknowledged is in the platform's store (per device, read back over REST)
    s = requests.Session()
    tok = s.post(f"{plat['url']}/api/auth/login", json={"username": "tenant@thingsboard.org",
                                                        "password": "tenant"}, timeout=10).json()["token"]
    s.headers["X-Authorization"] = f"Bearer {tok}"
    prov = json.loads(p.state.provision_file.read_text())
    short = {}
    for name, dev in gt["devices"].items():
        got = s.get(f"{plat['url']}/api/plugins/telemetry/DEVICE/{prov['devices'][name]['id']}/values/timeseries",
                    params={"keys": "windSpeed", "startTs": gt["started_ms"] - 1000,
                            "endTs": gt["ended_ms"] + 1000, "limit": 1_000_000}, timeout=30).json()
        stored = len(got.get("windSpeed", []))
        if not dev["acked"] <= stored <= dev["sent"]:
            short[name] = (dev["sent"], dev["acked"], stored)
    assert not short, f"(sent, acked, stored) per device: {short}"
    # the aggregates: exact wherever nothing was in flight at the kill
    unacked = gt["sent"] - gt["acked"]
    window_ms = WINDOW_S * 1000
    kill_window = killed_at["ms"] - killed_at["ms"] % window_ms
    elsewhere = [m for m in report.mismatches if abs(m.window_start_ms - kill_window) > window_ms]
    assert not elsewhere, describe(report)
    if unacked == 0:
        assert report.holds, describe(report)
