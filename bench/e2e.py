"""End-to-end benchmark: a fleet scenario through the whole local pipeline (simulator → embedded
platform → Kafka → Spark → zone assets) with exact verification of every window.

    .venv/bin/python bench/e2e.py [--scenario scenarios/fleet-3000.yaml] [--devices N] [--zones Z]
        [--rate-hz R] [--duration 60] [--runs 3] [--search] [--profile] [--keep-stack]
        [--trigger-s S] [--job-nice 10] [--skip-mosquitto]

The Spark job runs with `tbspark aggregate --nice 10` by default (--job-nice): on two cores shared by
the four components the platform's single ingest thread gets the CPU first when both want it, and the
job, which has until its next trigger, catches up in between.

One stack, one provisioning and one Spark job serve all runs (the runs differ only in the simulator's
rate); each run simulates for --duration seconds, then waits until `tbspark verify` holds exactly (or
gives up), measuring:
  sustained_msg_per_s   messages sent / simulation seconds, counted only when the run verified exactly
                        and the pipeline kept up: the last window was final within one window plus two
                        triggers of the simulation's end (kept_up); a run that verified only after
                        draining a backlog counts 0 here
  completed_msg_per_s   messages sent / seconds from simulation start to the verdict (drain included)
  p50/p95_window_latency_s  window end → the moment its final count was readable on the zone asset
  cpu_s                 user+system CPU seconds of each component from simulation start to verdict
                        (psutil on their PIDs; spark = driver + its JVM)
  latency_split         where each window's latency went: platform_lag_s (its last record's Kafka
                        append - window end), spark_lag_s (the job's write of the final count - that
                        append; from the job's batch log), poll_lag_s (the poller's sight - the write),
                        worst_record_delay_s (per window, the largest Kafka append - device ts), the
                        job's batches (interval, duration, records) and the records it dropped as late
                        (beyond the watermark), per batch and per window start (from the dead letters)
--search bisects the per-device rate for the highest rate that still verifies exactly.
The last line of output is one JSON object (the figures of the median run by sustained rate, plus all runs).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from tbspark.thingsboard.rest import TbRestClient
from tbspark.testing.cpu import CpuMeter
from tbspark.testing.pipeline import Pipeline, Proc, describe, keep_up_limit_s
from tbspark.testing.platform import TENANT

REPO = Path(__file__).resolve().parents[1]
SENT_SHARE_OK = 0.90  # --search: a run whose simulator sent less than this share of the offered rate
SETTLE_S = 240  # after the simulation: the last window closes, the job catches up, verify holds


def derived_scenario(src: Path, out: Path, devices: int | None, zones: int | None, rate_hz: float | None,
                     duration_s: float, trigger_s: float | None = None) -> Path:
    """The scenario with the fleet's size and rate (and the job's trigger) replaced (the name stays:
    one provisioning)."""
    doc = yaml.safe_load(src.read_text())
    if trigger_s:
        agg = doc.setdefault("aggregation", {})
        old = float(agg.get("trigger_s") or 1.0)
        agg["trigger_s"] = trigger_s
        # The per-batch bound grows with the trigger, so the job can catch up as fast as before.
        if agg.get("max_offsets_per_trigger") and trigger_s > old:
            agg["max_offsets_per_trigger"] = int(agg["max_offsets_per_trigger"] * trigger_s / old)
    group = doc["devices"][0]
    if devices:
        group["count"] = devices
    if zones:
        group["zones"]["count"] = zones
    if rate_hz:
        for gen in group["telemetry"].values():
            gen["rate_hz"] = rate_hz
    doc.setdefault("simulation", {})["duration_s"] = duration_s
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


class WindowWatcher:
    """Polls every zone asset's windSpeedCount series and remembers when each (zone, window, count)
    was first readable, so a window's latency is known once the ground truth says its final count."""

    def __init__(self, p: Pipeline, interval_s: float = 1.0):
        self.p, self.interval_s = p, interval_s
        self.first_seen: dict[tuple[str, int, int], float] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sc = self.p.scenario
        conn = self.p.conn()
        prov = json.loads(self.p.state.provision_file.read_text())
        ids = {z: a["id"] for z, a in prov["assets"].items()}
        key = sc.aggregation.metrics.count
        window_ms = int(sc.aggregation.window_s * 1000)
        with TbRestClient(conn.tb_url, conn.username, conn.password) as tb:
            while not self.stop_event.is_set():
                now_ms = int(time.time() * 1000)
                for zone, eid in ids.items():
                    try:
                        ts = tb.get_timeseries("ASSET", eid, [key], now_ms - 12 * window_ms, now_ms + window_ms)
                    except Exception:  # noqa: BLE001 - a busy platform: try again next round
                        continue
                    seen = time.time()
                    for point in ts.get(key, []):
                        k = (zone, int(point["ts"]), int(float(point["value"])))
                        self.first_seen.setdefault(k, seen)
                self.stop_event.wait(self.interval_s)

    def latencies(self, gt: dict, window_s: float) -> list[float]:
        out = []
        for zone, wins in gt["windows"].items():
            for start, w in wins.items():
                t = self.first_seen.get((zone, int(start), int(w["count"])))
                if t is not None:
                    out.append(max(0.0, t - (int(start) / 1000 + window_s)))
        return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 2)


def topic_records(p: Pipeline) -> int:
    """Records in the scenario's topic (sum of the partitions' end offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": p.services["kafka"]["bootstrap"], "group.id": "tbspark-e2e-bench"})
    try:
        md = c.list_topics(p.scenario.kafka.topic, timeout=10).topics[p.scenario.kafka.topic]
        return sum(c.get_watermark_offsets(TopicPartition(p.scenario.kafka.topic, i), timeout=10)[1]
                   for i in md.partitions)
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end offset (the next record's offset)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tbspark-e2e-bench"})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or not md.partitions:
            return {}
        return {i: c.get_watermark_offsets(TopicPartition(topic, i), timeout=10)[1] for i in md.partitions}
    finally:
        c.close()


def read_range(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int]):
    """Yield (Kafka timestamp ms, value bytes) of the records in [start, end) of each partition."""
    from confluent_kafka import Consumer, TopicPartition

    todo = {i: e for i, e in end.items() if e > start.get(i, 0)}
    if not todo:
        return
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tbspark-e2e-bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800})
    try:
        c.assign([TopicPartition(topic, i, start.get(i, 0)) for i in todo])
        idle = 0
        while todo and idle < 20:
            msgs = c.consume(10000, timeout=0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error() or m.partition() not in todo:
                    continue
                if m.offset() >= todo[m.partition()]:
                    continue
                yield m.timestamp()[1], m.value()
                if m.offset() + 1 >= todo[m.partition()]:
                    del todo[m.partition()]
    finally:
        c.close()


_ZONE = re.compile(rb'"geoZone"\s*:\s*"([^"]*)"')
_TS = re.compile(rb'"ts"\s*:\s*"?(-?\d+)')


def latency_split(p: Pipeline, start: dict[int, int], end: dict[int, int], batch_log: Path,
                  gt: dict, first_seen: dict) -> dict:
    """Where each window's latency went, from the records themselves: its last record's Kafka append
    time minus the window's end (simulator + platform + forwarding: the platform's lag), the job's
    write of the final count minus that append (Spark: waiting for the trigger, the batch, the REST
    write), and the poller's first sight of it minus the write (the watcher's own lag). Plus the
    records the job rejected as late (beyond the watermark), per window, from the job's batch log
    and the dead-letter topic."""
    sc = p.scenario
    window_ms = int(sc.aggregation.window_s * 1000)
    bootstrap = p.services["kafka"]["bootstrap"]
    last_append: dict[tuple[str, int], int] = {}
    worst_delay: dict[tuple[str, int], int] = {}  # max over the window's records of append - device ts
    for kts, value in read_range(bootstrap, sc.kafka.topic, start, end):
        z, t = _ZONE.search(value or b""), _TS.search(value or b"")
        if not z or not t:
            continue
        ts = int(t.group(1))
        key = (z.group(1).decode(), ts - ts % window_ms)
        if kts > last_append.get(key, -1):
            last_append[key] = kts
        if kts - ts > worst_delay.get(key, -1 << 62):
            worst_delay[key] = kts - ts
    final = {(zone, int(s)): int(w["count"]) for zone, wins in gt["windows"].items() for s, w in wins.items()}
    batches = []
    if batch_log.exists():
        for line in batch_log.read_text().splitlines():
            try:
                batches.append(json.loads(line))
            except ValueError:
                continue
    written: dict[tuple[str, int], float] = {}
    for b in batches:
        for zone, s, count in b["windows"]:
            if final.get((zone, s)) == count:
                written.setdefault((zone, s), b["ended"])
    platform, spark, poll, record_delay = [], [], [], []
    for key in final:
        end_s = (key[1] + window_ms) / 1000
        if key in last_append:
            platform.append(last_append[key] / 1000 - end_s)
            record_delay.append(worst_delay[key] / 1000)
            if key in written:
                spark.append(written[key] - last_append[key] / 1000)
        seen = first_seen.get((key[0], key[1], final[key]))
        if seen is not None and key in written:
            poll.append(seen - written[key])
    t0_ms = gt.get("started_ms") or 0
    run_batches = [b for b in batches if b["ended"] * 1000 >= t0_ms]
    late_text = "late: window already closed by the watermark"
    late_batches = [[b["batch"], b["rejected"][late_text]] for b in run_batches if b["rejected"].get(late_text)]
    late_by_window: dict[tuple[str, int], int] = {}
    for _kts, value in read_range(bootstrap, sc.kafka.dlq_topic, {}, end_offsets(bootstrap, sc.kafka.dlq_topic)):
        try:
            d = json.loads(value)
            rec = json.loads(d.get("value") or "null") or {}
            ts = int(float(rec.get("ts")))
        except (ValueError, TypeError):
            continue
        key = (str(rec.get("geoZone")), ts - ts % window_ms)
        if d.get("reason") == late_text and key in final:
            late_by_window[key] = late_by_window.get(key, 0) + 1
    durations = [b["ended"] - b["started"] for b in run_batches]
    gaps = [b["started"] - a["started"] for a, b in zip(run_batches, run_batches[1:])]

    def stats(xs: list[float]) -> dict:
        return {"p50": pct(xs, 0.5), "p95": pct(xs, 0.95), "max": round(max(xs), 2) if xs else None, "n": len(xs)}

    delay_by_slice: dict[int, float] = {}
    for (zone, s), d in worst_delay.items():
        if (zone, s) in final:
            delay_by_slice[s] = max(delay_by_slice.get(s, 0.0), d / 1000)
    by_slice: dict[int, int] = {}
    for (zone, s), n in late_by_window.items():
        by_slice[s] = by_slice.get(s, 0) + n
    return {
        "platform_lag_s": stats(platform), "spark_lag_s": stats(spark), "poll_lag_s": stats(poll),
        "worst_record_delay_s": stats(record_delay),
        "batches": {"count": len(run_batches), "duration_s": stats(durations), "interval_s": stats(gaps),
                    "records": stats([b["records"] for b in run_batches])},
        "late_records": sum(n for _, n in late_batches), "late_batches": late_batches[:10],
        "late_by_slice": {str(s): n for s, n in sorted(by_slice.items())},
        "windows_with_late_records": len(late_by_window),
        # per window start (all zones): the most a record of it waited between device and Kafka;
        # records later than the watermark (relative to the newest) are dropped as late
        "worst_record_delay_by_slice_s": {str(s): round(d, 1) for s, d in sorted(delay_by_slice.items())},
    }


_OPERATOR: dict[str, TbRestClient] = {}  # platform url -> a tenant session


def platform_messages(p: Pipeline) -> int:
    url = p.services["platform"]["url"]
    if url not in _OPERATOR:  # /tbspark/stats takes the tenant's JWT, like /api (one login per run)
        _OPERATOR[url] = TbRestClient(url, *TENANT, timeout_s=30)
    stats = _OPERATOR[url].request("GET", "/tbspark/stats")
    return int((stats.get("mqtt") or {}).get("messages", 0))


def broker_pids(services: dict) -> list[int]:
    """Every Kafka broker of the stack (one, or the cluster's N)."""
    return [b["pid"] for b in services["kafka"].get("brokers") or [services["kafka"]] if b.get("pid")]


def spark_cluster_pids(services: dict) -> list[int]:
    """The standalone cluster's master and workers (executors run as the workers' children); none
    with local[N], where the job's own process tree is everything."""
    spark = services.get("spark") or {}
    return [x["pid"] for x in [spark, *spark.get("workers", [])] if x.get("pid")]


def one_run(p: Pipeline, job: Proc, scenario: Path, duration_s: float, profile_dir: Path | None) -> dict:
    sim_p = Pipeline(scenario, p.state.root)  # same state dir, same name: the rate differs only
    # Runs must not share a backlog: wait until the job has finished every record of earlier runs.
    t_drain = time.monotonic()
    while p.committed_records() < topic_records(p) and time.monotonic() - t_drain < 2 * SETTLE_S:
        time.sleep(2.0)  # poll interval on the job's checkpoint
    drained_s = round(time.monotonic() - t_drain, 1)
    since_ms = None
    if topic_records(p):
        # A later run on the same zone assets starts at a fresh window boundary and is judged from
        # there: verify also reads the window before a run's start, which may hold the previous
        # run's last records ("extra window"), or, within one window, both runs' records.
        window_ms = int(p.scenario.aggregation.window_s * 1000)
        since_ms = (int(time.time() * 1000) // window_ms + 1) * window_ms
        time.sleep(max(0.0, since_ms / 1000 - time.time()) + 0.05)  # bench pacing, to the boundary
    in_topic0, at_platform0 = topic_records(p), platform_messages(p)
    bootstrap = p.services["kafka"]["bootstrap"]
    offsets0 = end_offsets(bootstrap, p.scenario.kafka.topic)
    meters = {"platform": CpuMeter(p.services["platform"]["pid"]), "kafka": CpuMeter(*broker_pids(p.services)),
              "spark": CpuMeter(job.pid, *spark_cluster_pids(p.services))}
    for m in meters.values():
        m.start()
    watcher = WindowWatcher(p)
    watcher.thread.start()
    t0 = time.monotonic()
    sim = sim_p.simulator(duration_s, seed=int(time.time()) % 100000)
    profilers = []
    if profile_dir is not None:
        profilers = [_py_spy(pid, name, duration_s, profile_dir)
                     for name, pid in (("platform", p.services["platform"]["pid"]), ("simulator", sim.pid))]
    sim_meter = CpuMeter(sim.pid)
    sim_meter.start()
    while sim.popen.poll() is None:
        sim_meter.sample()
        for m in meters.values():
            m.sample()
        time.sleep(0.5)  # CPU sampling interval while the simulator runs
    report = sim.json_output()
    sim_wall = time.monotonic() - t0
    verdict, held_at = p.wait_verified(SETTLE_S, since_ms)
    verdict_s = time.monotonic() - t0
    # where the messages were at the verdict: received by the platform's MQTT side, in Kafka
    at_platform, in_topic = platform_messages(p) - at_platform0, topic_records(p) - in_topic0
    watcher.stop_event.set()
    watcher.thread.join(10)
    for pr in profilers:
        pr.wait(60)
    gt = p.groundtruth()
    lat = watcher.latencies(gt, p.scenario.aggregation.window_s)
    split = latency_split(p, offsets0, end_offsets(bootstrap, p.scenario.kafka.topic), p.batch_log, gt,
                          watcher.first_seen)
    verified = bool(verdict.holds and verdict.exact)
    rate = report["sent"] / report["elapsed_s"] if report["elapsed_s"] else 0.0
    final_s = held_at - gt["ended_ms"] / 1000 if held_at else None
    agg = p.scenario.aggregation
    kept_up = final_s is not None and final_s <= keep_up_limit_s(agg.window_s, agg.trigger_s)
    return {
        "offered_msg_per_s": round(sim_p.scenario.expected_rate_hz(), 1),
        "sent": report["sent"], "acked": report["acked"], "errors": report["errors"],
        "received_by_platform": at_platform, "in_kafka": in_topic, "waited_for_backlog_s": drained_s,
        "simulated_s": round(report["elapsed_s"], 1),
        "msg_per_s": round(rate, 1),
        "sustained_msg_per_s": round(rate, 1) if verified and kept_up else 0.0,
        "verified": verified,
        "kept_up": kept_up,
        "completed_msg_per_s": round(report["sent"] / verdict_s, 1) if verified else 0.0,
        "windows_verified": verdict.windows_verified,
        "mismatches": [m.describe() for m in verdict.mismatches[:5]],
        "final_window_s": round(final_s, 1) if final_s is not None else None,
        "p50_window_latency_s": pct(lat, 0.5), "p95_window_latency_s": pct(lat, 0.95),
        "windows_timed": len(lat),
        "latency_split": split,
        "cpu_s": {"simulator": round(report.get("cpu_s") or sim_meter.total(), 1),
                  **{k: round(m.total(), 1) for k, m in meters.items()}},
        "wall_s": {"simulation": round(sim_wall, 1), "to_verdict": round(verdict_s, 1)},
        "problem": None if verified else describe(verdict, 5),
    }


def _py_spy(pid: int, name: str, duration_s: float, out_dir: Path):
    import subprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(int(duration_s)),
                             "--rate", "50", "--format", "raw", "--nonblocking",
                             "--output", str(out_dir / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 12) -> list[tuple[str, float]]:
    """Self time per function (share of samples) from py-spy's collapsed stacks."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        leaf = stack.split(";")[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
        total += int(n)
    return [(f, round(100 * c / total, 1)) for f, c in sorted(counts.items(), key=lambda x: -x[1])[:top]]


def mosquitto_reference(p: Pipeline, scenario: Path, duration_s: float, root: Path) -> dict:
    """The same simulator load against a plain Mosquitto broker (no subscribers, no persistence):
    what a bare MQTT broker spends per message, next to the platform's figure."""
    import shutil

    from tbspark.testing.mosquitto import start_mosquitto, stop

    work = root / "mosquitto"
    work.mkdir(exist_ok=True)
    started = start_mosquitto(work)
    if started is None:
        return {"skipped": "mosquitto is not installed (apt-get install -y mosquitto)"}
    proc, port = started
    try:
        # Its own state dir (the pipeline's ground truth stays), with the provisioned device tokens.
        ref = Pipeline(scenario, work / "state", env={"TB_MQTT_HOST": "127.0.0.1", "TB_MQTT_PORT": str(port)})
        shutil.copyfile(p.state.provision_file, ref.state.provision_file)
        broker, sim_meter = CpuMeter(proc.pid), None
        broker.start()
        sim = ref.simulator(duration_s, seed=7)
        sim_meter = CpuMeter(sim.pid)
        sim_meter.start()
        while sim.popen.poll() is None:
            sim_meter.sample()
            broker.sample()
            time.sleep(0.5)  # CPU sampling interval while the simulator runs
        report = sim.json_output()
        cpu = broker.total()
        return {"sent": report["sent"], "errors": report["errors"], "simulated_s": round(report["elapsed_s"], 1),
                "msg_per_s": round(report["sent"] / report["elapsed_s"], 1) if report["elapsed_s"] else 0.0,
                "cpu_s": {"mosquitto": round(cpu, 2),
                          "simulator": round(report.get("cpu_s") or sim_meter.total(), 1)},
                "mosquitto_msg_per_cpu_s": round(report["sent"] / cpu) if cpu > 0 else None}
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C, so the stack it started is stopped by PID
    # (Python's default handler would exit at once and leave the brokers and the platform running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "fleet-3000.yaml")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--zones", type=int, default=None)
    ap.add_argument("--rate-hz", type=float, default=None, help="per device (default: the scenario's)")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--job-nice", type=int, default=10,
                    help="run the Spark job with this nice increment (tbspark aggregate --nice; default 10: "
                         "the platform's ingest gets the CPU first, the job catches up between triggers)")
    ap.add_argument("--trigger-s", type=float, default=None,
                    help="the Spark job's trigger (default: the scenario's; 'kept up' allows one window "
                         "plus two triggers)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--search", action="store_true", help="bisect the rate for the highest that verifies")
    ap.add_argument("--search-steps", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="py-spy the platform and the simulator")
    ap.add_argument("--state-dir", type=Path, default=None)
    ap.add_argument("--kafka-brokers", type=int, default=1,
                    help="3 or more: the cluster stack (`stack up --kafka-brokers N`); 1: one broker")
    ap.add_argument("--spark-workers", type=int, default=0,
                    help="run the job on a Spark standalone cluster of this many workers (0: local[2])")
    ap.add_argument("--skip-mosquitto", action="store_true",
                    help="no reference run of the same simulator load against a plain Mosquitto")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.runs < 1:
        ap.error("--duration must be positive and --runs at least 1")

    root = args.state_dir or Path(tempfile.mkdtemp(prefix="tbspark-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    base_yaml = derived_scenario(args.scenario, root / "scenario.yaml", args.devices, args.zones,
                                 args.rate_hz, args.duration, args.trigger_s)
    p = Pipeline(base_yaml, root / "state")
    rate0 = float(yaml.safe_load(base_yaml.read_text())["devices"][0]["telemetry"]
                  ["windSpeed"]["rate_hz"])
    out: dict = {"scenario": p.scenario.name, "devices": len(p.scenario.expand_devices()),
                 "zones": len(p.scenario.zones()), "duration_s": args.duration,
                 "trigger_s": p.scenario.aggregation.trigger_s, "job_nice": args.job_nice, "runs": []}
    t = time.monotonic()
    print(f"stack up in {root}", flush=True)
    p.up(kafka_brokers=args.kafka_brokers, spark_workers=args.spark_workers)
    out.update(kafka_brokers=args.kafka_brokers, spark_workers=args.spark_workers)
    try:
        prov = p.provision()
        print(f"provisioned in {prov.elapsed_s:.1f} s; starting the Spark job", flush=True)
        from tbspark.aggregate.job import BATCH_LOG_ENV

        p.batch_log = root / "batches.jsonl"
        master = ("--master", p.services["spark"]["master"]) if args.spark_workers else ()
        job = p.aggregator(env={BATCH_LOG_ENV: str(p.batch_log)}, nice=args.job_nice, args=master)
        p.wait_job_running(job)
        out["setup_s"] = round(time.monotonic() - t, 1)

        def run_at(rate: float, i: int) -> dict:
            sc = derived_scenario(args.scenario, root / f"run-{i}.yaml", args.devices, args.zones, rate,
                                  args.duration, args.trigger_s)
            prof = root / f"profile-{i}" if args.profile else None
            r = one_run(p, job, sc, args.duration, prof)
            r["rate_hz"] = rate
            if prof is not None:
                r["profile"] = {f.stem: summarize_profile(f) for f in prof.glob("*.txt")}
            print(json.dumps(r), flush=True)
            sp = r["latency_split"]
            print(f"run {i} at {rate:g} Hz: sent {r['msg_per_s']} msg/s, verified {r['verified']}, kept up "
                  f"{r['kept_up']} (last window final {r['final_window_s']} s after the simulation), "
                  f"sustained {r['sustained_msg_per_s']}, completed {r['completed_msg_per_s']} msg/s", flush=True)
            print(f"run {i} at {rate:g} Hz: window latency p50 {r['p50_window_latency_s']} s = "
                  f"platform (last record's Kafka append - window end) p50 {sp['platform_lag_s']['p50']} / "
                  f"p95 {sp['platform_lag_s']['p95']} s + Spark (final write - that append) p50 "
                  f"{sp['spark_lag_s']['p50']} / p95 {sp['spark_lag_s']['p95']} s + poller p50 "
                  f"{sp['poll_lag_s']['p50']} s; a record's worst Kafka append - device ts p95 "
                  f"{sp['worst_record_delay_s']['p95']} s, max {sp['worst_record_delay_s']['max']} s; "
                  f"batches every {sp['batches']['interval_s']['p50']} s taking {sp['batches']['duration_s']['p50']} s; "
                  f"late records dropped {sp['late_records']} (by window start {sp['late_by_slice']})", flush=True)
            out["runs"].append(r)
            return r

        i = 0
        if args.search:
            lo, hi = 0.0, None
            rate = rate0
            for _ in range(args.search_steps):
                r = run_at(rate, i)
                i += 1
                # Kept up and exact, and the simulator was not held back by the platform's sockets.
                # Its sent rate is over the simulation's wall time, which includes connecting the
                # fleet: quiet single-stack runs that kept up sent 94-95 % of the offered rate
                # (fleet-3000, 2026-12-05), so 0.97 failed every run; below 90 % it was held back.
                if r["sustained_msg_per_s"] and r["msg_per_s"] >= SENT_SHARE_OK * r["offered_msg_per_s"]:
                    lo = rate
                    rate = rate * 2 if hi is None else (lo + hi) / 2
                else:
                    hi = rate
                    rate = (lo + hi) / 2 if lo else rate / 2
            out["highest_verified_msg_per_s"] = max(
                [r["msg_per_s"] for r in out["runs"] if r["verified"]], default=0.0)
        else:
            for _ in range(args.runs):
                run_at(rate0, i)
                i += 1
        job.stop()
        if not args.skip_mosquitto:
            print("reference: the same simulator load against a plain Mosquitto", flush=True)
            out["mosquitto"] = mosquitto_reference(p, base_yaml, args.duration, root)
            print(json.dumps(out["mosquitto"]), flush=True)
    finally:
        p.down()
    runs = out["runs"]
    ok = [r for r in runs if r["verified"]]
    # The headline figures are those of the median run by sustained rate (0 for a run that did not
    # verify or keep up), so "sustained_msg_per_s" is the median of the runs' sustained rates.
    pick = sorted(ok or runs, key=lambda r: (r["sustained_msg_per_s"], r["msg_per_s"]))[len(ok or runs) // 2] \
        if runs else {}
    out.update({k: pick.get(k) for k in ("sustained_msg_per_s", "completed_msg_per_s", "kept_up",
                                         "verified", "p50_window_latency_s",
                                         "p95_window_latency_s", "cpu_s", "msg_per_s", "offered_msg_per_s")})
    out["verified"] = bool(runs) and all(r["verified"] for r in runs if r.get("rate_hz") == rate0)
    out["median_sustained_msg_per_s"] = statistics.median([r["sustained_msg_per_s"] for r in runs]) if runs else 0
    out["load_average"] = [round(x, 1) for x in psutil.getloadavg()]
    cpu = out.get("cpu_s") or {}
    sent = pick.get("sent") or 0
    if sent:
        out["msg_per_cpu_s"] = {k: round(sent / v) if v else None for k, v in cpu.items()}
        out["us_cpu_per_msg"] = round(1e6 * sum(cpu.values()) / sent, 1)
    print(f"\nsummary: sustained {out.get('sustained_msg_per_s')} msg/s (kept up {out.get('kept_up')}), "
          f"completed {out.get('completed_msg_per_s')} msg/s, verified {out['verified']}, "
          f"p95 window latency {out.get('p95_window_latency_s')} s, CPU per message "
          f"{out.get('us_cpu_per_msg')} us in total, msg per CPU-s {out.get('msg_per_cpu_s')}, "
          f"mosquitto msg per CPU-s {(out.get('mosquitto') or {}).get('mosquitto_msg_per_cpu_s')}, "
          f"load average {out['load_average']}", flush=True)
    print(json.dumps(out))
    return 0 if out["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
