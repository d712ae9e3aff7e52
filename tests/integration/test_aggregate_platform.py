"""The Spark job delivering into the embedded platform: exact windows on the zone assets (REST sink),
the same numbers through the MQTT gateway sink, every window arriving after a 20 s outage of the
platform, and a SIGKILLed driver whose restart stores exactly what an uninterrupted run stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tbspark.aggregate.job import aggregate
from tbspark.settings import Connection
from tbspark.state import GatewayRecord, ProvisionRecord, StateDir
from tbspark.thingsboard.rest import TbRestClient
from tbspark.testing.platform import REPO, PlatformProcess, start_platform
from tbspark.testing.wait import wait_until
from tests.integration.aggregate_helpers import KEYS, T0, expected_table, produce, scenario_for

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]


def _records(zones: list[str], windows: int, per_window: int) -> tuple[list[dict], list[tuple]]:
    """Deterministic records: ``per_window`` per zone per window, values spread so avg/min/max differ."""
    sent, truth = [], []
    for w in range(windows):
        for i in range(per_window):
            for z, zone in enumerate(zones):
                ts = T0 + w * 10_000 + (i * 9_973) // per_window
                value = 20 + z * 10 + (i * 7 + w) % 13
                sent.append({"geoZone": zone, "windSpeed": str(value), "ts": str(ts)})
                truth.append((zone, ts, value))
    return sent, truth


def _stored(client: TbRestClient, entity_type: str, ids: dict[str, str]) -> dict[tuple, tuple]:
    """Every stored point of the four keys per zone → (count, avg, min, max), like expected_table."""
    out: dict[tuple, tuple] = {}
    for zone, eid in ids.items():
        ts = client.get_timeseries(entity_type, eid, list(KEYS.values()), T0 - 1, T0 + 10**9)
        by_ts: dict[int, dict] = {}
        for key, points in ts.items():
            for p in points:
                by_ts.setdefault(p["ts"], {})[key] = float(p["value"])
        for t, v in by_ts.items():
            out[(zone, t)] = (int(v["windSpeedCount"]), round(v["windSpeed"], 9),
                              v["windSpeedMin"], v["windSpeedMax"])
    return out


def _ids(client: TbRestClient, kind: str, zones: list[str]) -> dict[str, str]:
    found = {z: (client.get_asset_by_name(z) if kind == "ASSET" else client.get_device_by_name(z))
             for z in zones}
    return {z: f["id"]["id"] for z, f in found.items() if f}


def _zones(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"Zone {chr(65 + i)} {tag}" for i in range(n)]


def test_rest_sink_stores_the_exact_windows_and_the_gateway_sink_the_same_numbers(
        spark, kafka, kafka_topic, platform, tmp_path):
    zones = _zones(3)
    topic = kafka_topic()
    sent, truth = _records(zones, windows=3, per_window=7)
    produce(kafka.bootstrap, topic, sent)
    conn = Connection(tb_url=platform.url, mqtt_host=platform.mqtt_host, mqtt_port=platform.mqtt_port,
                      kafka_bootstrap=kafka.bootstrap)
    client = TbRestClient(platform.url, "tenant@thingsboard.org", "tenant")
    want = expected_table(truth)

    rest_state = StateDir(tmp_path / "rest").ensure()
    report = aggregate(scenario_for(topic, "sink-rest"), conn, rest_state, once=True, spark=spark)
    assert report.windows_written == len(want)
    assets = _ids(client, "ASSET", zones)
    assert set(assets) == set(zones)
    assert client.get_asset_by_name(zones[0])["type"] == "WeatherStation"
    assert _stored(client, "ASSET", assets) == want

    gw_state = StateDir(tmp_path / "gw").ensure()
    gw_name = f"Analytics Gateway {uuid.uuid4().hex[:6]}"
    token = uuid.uuid4().hex[:20]
    dev = client.save_device({"name": gw_name, "type": "gateway", "additionalInfo": {"gateway": True}},
                             access_token=token)
    gw_scenario = scenario_for(topic, "sink-gw", sink="gateway")
    ProvisionRecord(gw_scenario.name, {}, gateway=GatewayRecord(gw_name, dev["id"]["id"], token)).save(
        gw_state.provision_file)
    report = aggregate(gw_scenario, conn, gw_state, once=True, spark=spark)
    assert report.windows_written == len(want)
    devices = _ids(client, "DEVICE", zones)
    assert set(devices) == set(zones)
    assert _stored(client, "DEVICE", devices) == want


class _OwnPlatform:
    """A platform process of our own on fixed ports, so it can be stopped and brought back at the
    same address while the job keeps its connection settings."""

    def __init__(self, state_dir: Path):
        from tbspark.stack.kafka import free_port

        self.state_dir = state_dir
        self.http_port, self.mqtt_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: PlatformProcess | None = None

    def start(self) -> None:
        self.proc = start_platform(self.state_dir, 60, http_port=self.http_port, mqtt_port=self.mqtt_port,
                                   log_name="platform.log")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout_s=30)


def _wait_for(pred, timeout_s: float, what: str):
    return wait_until(pred, timeout_s, what, poll_s=0.2)  # each look reads over REST or the checkpoint


def test_every_window_arrives_after_the_platform_was_down_for_20_s(spark, kafka, kafka_topic, tmp_path):
    own = _OwnPlatform(tmp_path / "platform")
    (tmp_path / "platform").mkdir()
    own.start()
    stop = threading.Event()
    result: dict = {}
    try:
        zones = _zones(2)
        topic = kafka_topic()
        conn = Connection(tb_url=own.url, mqtt_port=own.mqtt_port, kafka_bootstrap=kafka.bootstrap)
        statuses: list = []

        def run() -> None:
            try:
                result["report"] = aggregate(scenario_for(topic, "outage"), conn,
                                             StateDir(tmp_path / "state").ensure(), spark=spark,
                                             stop_event=stop, progress=statuses.append)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                result["error"] = exc

        job = threading.Thread(target=run, daemon=True)
        job.start()
        first, truth1 = _records(zones, windows=1, per_window=5)
        produce(kafka.bootstrap, topic, first)
        client = TbRestClient(own.url, "tenant@thingsboard.org", "tenant")
        want1 = expected_table(truth1)
        _wait_for(lambda: len(_ids(client, "ASSET", zones)) == 2
                  and _stored(client, "ASSET", _ids(client, "ASSET", zones)) == want1, 180, "first windows")

        own.stop()
        down_at = time.monotonic()
        second, truth2 = _records(zones, windows=3, per_window=5)
        truth2 = [(z, t + 30_000, v) for z, t, v in truth2]
        produce(kafka.bootstrap, topic, [{**r, "ts": str(int(r["ts"]) + 30_000)} for r in second])
        _wait_for(lambda: statuses and statuses[-1].waiting, 30, "the job to notice the outage")
        time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))  # the outage itself lasts 20 s
        own.start()
        want = expected_table(truth1 + truth2)
        client = TbRestClient(own.url, "tenant@thingsboard.org", "tenant")
        _wait_for(lambda: _stored(client, "ASSET", _ids(client, "ASSET", zones)) == want, 60,
                  "every window after the outage")
    finally:
        stop.set()
        job_thread = locals().get("job")
        if job_thread is not None:
            job_thread.join(60)
        own.stop()
    assert "error" not in result, result.get("error")
    assert result["report"].stopped == "stop requested"


def test_sigkill_of_the_driver_then_restart_stores_what_an_uninterrupted_run_stores(
        spark, kafka, kafka_topic, platform, tmp_path):
    zones = _zones(2)
    topic = kafka_topic()
    sent, truth = _records(zones, windows=12, per_window=40)  # 960 records, 24 windows
    produce(kafka.bootstrap, topic, sent)
    scenario_file = tmp_path / "kill.yaml"
    scenario_file.write_text(f"""
name: kill-restart
kafka: {{topic: {topic}}}
devices:
  - {{name: T1, type: WeatherStation, zone: Z, telemetry: {{windSpeed: {{kind: constant, value: 1, rate_hz: 1}}}}}}
aggregation: {{trigger_s: 0.2, max_offsets_per_trigger: 60}}
""")
    state = tmp_path / "state"
    env = {**os.environ, "TB_URL": platform.url, "TB_MQTT_PORT": str(platform.mqtt_port),
           "KAFKA_BOOTSTRAP": kafka.bootstrap}
    proc = subprocess.Popen([sys.executable, "-m", "tbspark", "aggregate", str(scenario_file),
                             "--state-dir", str(state)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits = state / "checkpoints" / "kill-restart" / "commits"
    try:
        # Mid-run: a few batches committed, the backlog (16 batches) far from done.
        _wait_for(lambda: commits.exists() and len([p for p in commits.iterdir()
                                                    if p.name.isdigit()]) >= 2, 300, "2 batches")
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        done = len([p for p in commits.iterdir() if p.name.isdigit()])
        assert done < 16, "the run finished before the kill; the test proves nothing"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in family[1:]:  # the driver's JVM exits when its Python parent dies; make sure
        try:
            psutil.Process(pid).wait(30)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)

    from tbspark.scenario import load_scenario

    conn = Connection(tb_url=platform.url, mqtt_port=platform.mqtt_port, kafka_bootstrap=kafka.bootstrap)
    sc = load_scenario(scenario_file)
    # The restart may take the rest in one batch: the batch size is not part of the checkpoint's promise.
    sc = sc.model_copy(update={"aggregation": sc.aggregation.model_copy(
        update={"max_offsets_per_trigger": None})})
    report = aggregate(sc, conn, StateDir(state), once=True, spark=spark)
    assert report.stopped == "caught up" and report.records > 0
    client = TbRestClient(platform.url, "tenant@thingsboard.org", "tenant")
    assert _stored(client, "ASSET", _ids(client, "ASSET", zones)) == expected_table(truth)
