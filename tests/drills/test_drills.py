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

from tbspark.testing.pipeline import Pipeline, describe, scenario_yaml
from tbspark.testing.wait import wait_until
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


def _run(p: Pipeline, fault, settle=None, sim_exit: tuple = (0,)) -> tuple:
    """Aggregator up, simulator for RUN_S, ``fault(p)`` at FAULT_AT_S, then wait for the verdict
    (``settle(p)`` instead of waiting for verify to hold, when given; its result is returned).
    ``sim_exit``: the simulator's accepted exit codes (3: it saw acknowledged messages missing in Kafka)."""
    job = p.aggregator()
    try:
        p.wait_job_running(job)
        sim = p.simulator(RUN_S)
        time.sleep(FAULT_AT_S)  # the drill's schedule: the fault strikes mid-run, not a readiness wait
        fault(p)
        assert sim.popen.wait(RUN_S + 120) in sim_exit, sim.tail()
        result = sim.json_output()
        report = settle(p) if settle else p.wait_verified(SETTLE_S)[0]
        return report, result, job
    finally:
        for proc in p.procs:
            proc.stop()


def test_rest_side_unavailable_for_30_s_loses_no_window(stack, tmp_path):
    proxy = Proxy(stack.services["platform"]["http_port"])
    p = _pipeline(stack, tmp_path, "rest-outage", env={"TB_URL": f"http://127.0.0.1:{proxy.port}"})

    def outage(p: Pipeline) -> None:
        wait_until(lambda: proxy.accepted > 0, 180, "the job's first write to ThingsBoard", poll_s=0.2)
        proxy.down()  # from the job's first write on: windows are closing while it is down
        t0 = time.monotonic()
        # 30 s, and longer if need be until the job has really tried (a slow batch on a busy machine)
        wait_until(lambda: time.monotonic() - t0 >= 30 and proxy.refused > 0, 180,
                   "the job to try to reach ThingsBoard during the outage", poll_s=0.2)
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


def _rest_session(url: str) -> requests.Session:
    s = requests.Session()
    tok = s.post(f"{url}/api/auth/login", json={"username": "tenant@thingsboard.org",
                                                 "password": "tenant"}, timeout=10).json()["token"]
    s.headers["X-Authorization"] = f"Bearer {tok}"
    return s


def _series(s: requests.Session, url: str, kind: str, entity_id: str, keys: list[str], start: int,
            end: int) -> dict[str, list[tuple[int, float]]]:
    """One entity's raw points of ``keys`` in [start, end], as (ts, value) sorted by ts."""
    got = s.get(f"{url}/api/plugins/telemetry/{kind}/{entity_id}/values/timeseries",
                params={"keys": ",".join(keys), "startTs": start, "endTs": end, "limit": 1_000_000,
                        "orderBy": "ASC"}, timeout=30)
    got.raise_for_status()
    body = got.json()
    return {k: sorted((int(pt["ts"]), float(pt["value"])) for pt in body.get(k, [])) for k in keys}


def _topic_records(bootstrap: str, topic: str) -> list[tuple[str, int, float, str]]:
    """Every record of ``topic`` as (key = device name, ts, windSpeed, geoZone), read to the end."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"drill-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {i: c.get_watermark_offsets(TopicPartition(topic, i), timeout=10)[1] for i in parts}
        c.assign([TopicPartition(topic, i, 0) for i in parts])
        out, done = [], {i: 0 for i in parts}
        deadline = time.monotonic() + 60
        while any(done[i] < ends[i] for i in parts):
            assert time.monotonic() < deadline, f"could not read {topic} to its end {ends}: {done}"
            for m in c.consume(1000, 1.0):
                assert m.error() is None, m.error()
                done[m.partition()] = m.offset() + 1
                if m.offset() < ends[m.partition()]:
                    d = json.loads(m.value())
                    out.append((m.key().decode(), int(float(d["ts"])), float(d["windSpeed"]), d["geoZone"]))
        return out
    finally:
        c.close()


def _windows(points, window_ms: int) -> dict[tuple[str, int], tuple[int, float, float, float]]:
    """(zone, ts, value) → per (zone, window start): count, sum, min, max — what the job must write."""
    agg: dict[tuple[str, int], list] = {}
    for zone, ts, v in points:
        a = agg.setdefault((zone, ts - ts % window_ms), [0, 0.0, v, v])
        a[0] += 1
        a[1] += v
        a[2] = min(a[2], v)
        a[3] = max(a[3], v)
    return {k: tuple(a) for k, a in agg.items()}


def _zone_windows(s, url, prov: dict, keys, zones, start: int, end: int):
    """What the zone assets hold: per (zone, window start) (count, avg, min, max)."""
    out = {}
    for zone in zones:
        got = _series(s, url, "ASSET", prov["assets"][zone]["id"], [keys.count, keys.avg, keys.min, keys.max],
                      start, end)
        by = {m: dict(got[k]) for m, k in (("count", keys.count), ("avg", keys.avg), ("min", keys.min),
                                            ("max", keys.max))}
        for ws, n in by["count"].items():
            out[(zone, ws)] = (int(n), by["avg"].get(ws), by["min"].get(ws), by["max"].get(ws))
    return out


def _diff(expected: dict, found: dict) -> list[str]:
    """Windows where the zone assets differ from ``expected`` (count exact; avg/min/max to 1e-9)."""
    def close(a, b):
        return a is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))

    bad = []
    for key in sorted(set(expected) | set(found)):
        e, f = expected.get(key), found.get(key)
        if e is None or f is None:
            bad.append(f"{key}: expected {e}, zone asset has {f}")
            continue
        n, total, lo, hi = e
        if f[0] != n or not close(f[1], total / n) or not close(f[2], lo) or not close(f[3], hi):
            bad.append(f"{key}: expected count/avg/min/max {n}/{total / n}/{lo}/{hi}, zone asset has {f}")
    return bad


def test_platform_sigkill_and_restart_keeps_what_it_acknowledged(stack, tmp_path):
    """Exact, not approximate: every window on the zone assets equals the aggregate of exactly the
    records the platform forwarded to Kafka, and those are exactly what the platform stored (read back
    per device with timestamps) — apart from records the kill caught in the platform's Kafka producer
    queue, which must be stored, few, and from the moment of the kill; every window they do not touch
    equals the aggregate of what was stored. Per device, acked <= stored <= sent."""
    from tbspark.stack.services import start_platform
    from tbspark.state import StateDir, write_json_atomic
    from tbspark.verify import metric_keys

    p = _pipeline(stack, tmp_path, "platform-kill")
    plat = stack.services["platform"]
    killed_at = {}
    window_ms = WINDOW_S * 1000
    topic = p.scenario.kafka.topic
    bootstrap = stack.services["kafka"]["bootstrap"]
    keys = metric_keys(p.scenario)

    def kill_platform(p: Pipeline) -> None:
        os.kill(plat["pid"], signal.SIGKILL)
        killed_at["ms"] = int(time.time() * 1000)
        info = start_platform(StateDir(stack.state.root), plat["http_port"], plat["mqtt_port"])
        stack.services["platform"] = info
        write_json_atomic(stack.state.services_file, stack.services)  # stack_down stops the new pid

    def settle(p: Pipeline):
        """Until the zone assets equal the aggregate of the whole topic (read again each round, so
        records still on their way from the platform count), or SETTLE_S pass."""
        gt = p.groundtruth()
        prov = json.loads(p.state.provision_file.read_text())
        zones = sorted({d["zone"] for d in gt["devices"].values()})
        s = _rest_session(plat["url"])
        span = (gt["started_ms"] - 2 * window_ms, gt["ended_ms"] + 2 * window_ms)
        deadline = time.monotonic() + SETTLE_S
        last_n = -1
        while True:
            recs = _topic_records(bootstrap, topic)
            expected = _windows([(z, ts, v) for _, ts, v, z in recs], window_ms)
            found = _zone_windows(s, plat["url"], prov, keys, zones, *span)
            bad = _diff(expected, found)
            if (not bad and len(recs) == last_n) or time.monotonic() > deadline:
                return recs, found, bad
            last_n = len(recs)
            time.sleep(1.0)  # poll interval: the job writes a window about one trigger after its records

    # A SIGKILL can catch acknowledged records in the platform's Kafka producer queue (checked below):
    # then `tbspark simulate` says so and exits 3, which is the truth, not a failure of the drill.
    (recs, found, bad), sim, _ = _run(p, kill_platform, settle, sim_exit=(0, 3))
    gt = p.groundtruth()
    assert sim.get("reconnects", 0) >= DEVICES, f"devices did not reconnect: {sim}"
    # 1. the Spark side is exact through the kill: zone windows = the aggregate of the topic's records
    assert not bad, "zone windows differ from the records in Kafka:\n" + "\n".join(bad[:12])
    # 2. everything acknowledged is in the platform's store (per device, read back over REST)
    s = _rest_session(plat["url"])
    prov = json.loads(p.state.provision_file.read_text())
    stored: dict[tuple[str, int], float] = {}
    short = {}
    for name, dev in gt["devices"].items():
        pts = _series(s, plat["url"], "DEVICE", prov["devices"][name]["id"], ["windSpeed"],
                      gt["started_ms"] - 1000, gt["ended_ms"] + 1000)["windSpeed"]
        stored.update(((name, ts), v) for ts, v in pts)
        if not dev["acked"] <= len(pts) <= dev["sent"]:
            short[name] = (dev["sent"], dev["acked"], len(pts))
    assert not short, f"(sent, acked, stored) per device: {short}"
    # 3. what Kafka got is what was stored: nothing twice, nothing unstored, nothing altered, each
    #    device in its zone
    in_kafka: dict[tuple[str, int], float] = {}
    for name, ts, v, zone in recs:
        assert (name, ts) not in in_kafka, f"{name} ts={ts} is in Kafka twice"
        assert zone == gt["devices"][name]["zone"], f"{name} forwarded with zone {zone}"
        in_kafka[(name, ts)] = v
    not_stored = {k: v for k, v in in_kafka.items() if stored.get(k) != v}
    assert not not_stored, f"in Kafka but not stored (or another value): {list(not_stored.items())[:10]}"
    # 4. stored but never forwarded: only what the kill caught in flight, at the moment of the kill
    lost = sorted(k for k in stored if k not in in_kafka)
    far = [k for k in lost if not killed_at["ms"] - 5000 <= k[1] <= killed_at["ms"]]
    # simulate's delivery check counted exactly the topic's records, and failed iff acked ones are missing
    assert sim["delivery"]["in_kafka"] == len(recs), sim["delivery"]
    assert sim["delivery"]["ok"] is (len(recs) >= sim["delivery"]["acked"]), sim["delivery"]
    assert not far and len(lost) <= DEVICES * RATE_HZ, (
        f"{len(lost)} stored records never reached Kafka, {len(far)} of them not from the kill "
        f"(killed at {killed_at['ms']}): {far[:10]}")
    # 5. so every window untouched by those equals the aggregate of what the platform stored
    zone_of = {n: d["zone"] for n, d in gt["devices"].items()}
    from_store = _windows([(zone_of[n], ts, v) for (n, ts), v in stored.items()], window_ms)
    touched = {(zone_of[n], ts - ts % window_ms) for n, ts in lost}
    bad_store = [b for b in _diff({k: v for k, v in from_store.items() if k not in touched},
                                  {k: v for k, v in found.items() if k not in touched})]
    assert not bad_store, "zone windows differ from what the platform stored:\n" + "\n".join(bad_store[:12])
    assert len(from_store) - len(touched) >= ZONES * (RUN_S // WINDOW_S - 2), (len(from_store), touched)
    print(f"platform kill: {gt['sent']} sent, {gt['acked']} acked, {len(stored)} stored, {len(in_kafka)} in "
          f"Kafka, {len(lost)} stored but lost in the Kafka producer queue at the kill; "
          f"{len(from_store) - len(touched)} of {len(from_store)} windows equal the stored aggregate")
