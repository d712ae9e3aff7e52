"""Benchmark: the aggregation job's backlog catch-up (records/s) and its latency to the zone assets.

    .venv/bin/python bench/aggregate.py [--records 3000000] [--runs 3] [--latency-s 60]

Starts its own Kafka broker and embedded platform (`stack_up` on free ports) and one local[2]
SparkSession, then:

* catch-up: a topic pre-filled with --records forwarding-chain records (10 zones, 10 K records per
  second of event time) is aggregated with ``--once`` through the full job into the REST sink; each
  run uses a fresh checkpoint. Reference side by side: the same parse + window aggregation as a plain
  Spark *batch* query over the same topic (spark.read, no streaming, no sink), on the same session.
* latency: the job runs continuously (trigger 1 s, update mode) while records with ts = now are
  produced for 3 zones at 300 records/s; the zone assets are polled every 100 ms, and for each
  window the time its stored count first equals the final count is taken, relative to the window's
  end and to end + watermark (negative = before the watermark passed).

Results go to bench/results/aggregate.json; the figures are medians over --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

from tbspark.aggregate.job import aggregate, build_session
from tbspark.aggregate.parse import ParseSpec, batch_partials, parse
from tbspark.scenario import parse_scenario
from tbspark.settings import Connection
from tbspark.stack.kafka import ensure_topic
from tbspark.stack.services import stack_down, stack_up
from tbspark.state import StateDir
from tbspark.thingsboard.rest import TbRestClient
from tbspark.testing.kafka import produce_all
from tbspark.testing.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000


def scenario(topic: str, name: str) -> object:
    return parse_scenario(f"""
name: {name}
kafka: {{topic: {topic}}}
devices:
  - {{name: T1, type: WeatherStation, zone: Z, telemetry: {{windSpeed: {{kind: constant, value: 1, rate_hz: 1}}}}}}
aggregation: {{window_s: 10, watermark_s: 5, trigger_s: 1.0}}
""")


def fill(bootstrap: str, topic: str, n: int, zones: int = 10) -> float:
    return produce_all(bootstrap, topic, (b'{"windSpeed":"%d","geoZone":"Zone %d","ts":"%d"}'
                                          % (30 + i % 31, i % zones, T0 + i // 10) for i in range(n)),
                       timeout_s=120)


def batch_reference(spark, bootstrap: str, topic: str) -> tuple[float, int]:
    """The same parse + aggregation as one Spark batch query (the issue's ~450K rec/s reference)."""
    t = time.monotonic()
    df = (spark.read.format("kafka").option("kafka.bootstrap.servers", bootstrap)
          .option("subscribe", topic).option("minPartitions", "2").load())
    rows = batch_partials(parse(df, ParseSpec(), None, 0)).collect()
    n = sum(r["n"] for r in rows)
    return time.monotonic() - t, n


def catch_up(spark, conn: Connection, tmp: Path, topic: str, n: int, runs: int) -> dict:
    job, ref = [], []
    for i in range(runs):
        state = StateDir(tmp / f"catchup{i}").ensure()
        r = aggregate(scenario(topic, f"bench-catchup-{i}"), conn, state, once=True, spark=spark)
        assert r.records == n, (r.records, n)
        job.append(r.records / r.duration_s)
        secs, got = batch_reference(spark, conn.kafka_bootstrap, topic)
        assert got == n
        ref.append(n / secs)
        print(f"catch-up run {i + 1}: job {job[-1]:,.0f} rec/s ({r.batches} batches, "
              f"{r.windows_written} windows), batch reference {ref[-1]:,.0f} rec/s", flush=True)
    return {"records": n, "job_rec_per_s": statistics.median(job), "batch_reference_rec_per_s":
            statistics.median(ref), "runs_job": job, "runs_reference": ref}


def _poll_counts(conn: Connection, zones: list[str], stop: threading.Event,
                 history: dict[tuple[str, int], list[tuple[float, int]]]) -> None:
    """Every 100 ms, the stored windSpeedCount of each zone's recent windows, with the time seen."""
    client = TbRestClient(conn.tb_url, conn.username, conn.password)
    ids: dict[str, str] = {}
    while not stop.is_set():
        for z in zones:
            if z not in ids:
                found = client.get_asset_by_name(z)
                if not found:
                    continue
                ids[z] = found["id"]["id"]
            now_ms = int(time.time() * 1000)
            ts = client.get_timeseries("ASSET", ids[z], ["windSpeedCount"], now_ms - 60_000, now_ms + 1)
            seen = time.time()
            for point in ts.get("windSpeedCount", []):
                h = history.setdefault((z, int(point["ts"])), [])
                count = int(float(point["value"]))
                if not h or h[-1][1] != count:
                    h.append((seen, count))
        time.sleep(0.1)  # poll interval


def latency(spark, conn: Connection, tmp: Path, topic: str, seconds: float) -> dict:
    zones = [f"Lat {z} {os.getpid()}" for z in range(3)]
    sent: dict[tuple[str, int], int] = {}
    history: dict[tuple[str, int], list[tuple[float, int]]] = {}
    stop_job, stop_poll = threading.Event(), threading.Event()
    result: dict = {}
    statuses: list = []

    def job() -> None:
        try:
            aggregate(scenario(topic, "bench-latency"), conn, StateDir(tmp / "latency").ensure(),
                      starting_offsets="earliest", spark=spark, stop_event=stop_job,
                      progress=statuses.append)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    th = threading.Thread(target=job, daemon=True)
    th.start()
    # until the query runs (its first progress report), or the job thread ended (its error is reported)
    wait_until(lambda: statuses or not th.is_alive(), 600, "the latency job's first progress report", poll_s=0.1)
    poller = threading.Thread(target=_poll_counts, args=(conn, zones, stop_poll, history), daemon=True)
    poller.start()
    p = Producer({"bootstrap.servers": conn.kafka_bootstrap, "linger.ms": 1})
    rate = 300
    started = time.time()
    i = 0
    while time.time() - started < seconds:
        now = int(time.time() * 1000)
        z = zones[i % 3]
        p.produce(topic, json.dumps({"geoZone": z, "windSpeed": str(30 + i % 7), "ts": str(now)}).encode())
        key = (z, now - now % 10_000)
        sent[key] = sent.get(key, 0) + 1
        i += 1
        p.poll(0)
        time.sleep(max(0.0, started + i / rate - time.time()))
    p.flush(30)
    time.sleep(5)  # the last windows' final values land within ~2 s; poll a while longer
    stop_poll.set()
    poller.join(30)
    stop_job.set()
    th.join(60)
    # Whole windows only: not the first (started mid-window) nor any still open at the end.
    first_ws = int(started * 1000) - int(started * 1000) % 10_000
    lat_end, missing = [], 0
    for (z, ws), n in sent.items():
        if ws == first_ws or ws + 10_000 > int((started + seconds) * 1000):
            continue
        hit = next((t for t, c in history.get((z, ws), []) if c == n), None)
        if hit is None:
            missing += 1
            continue
        lat_end.append(hit - (ws + 10_000) / 1000)
    lat_end.sort()
    pct = lambda q: lat_end[min(len(lat_end) - 1, int(q * len(lat_end)))] if lat_end else None  # noqa: E731
    return {"error": repr(result["error"]) if "error" in result else None, "windows": len(lat_end),
            "windows_seen_at_all": len(history),
            "windows_never_complete": missing, "rate_per_s": rate,
            "from_window_end_s": {"p50": pct(0.5), "p95": pct(0.95), "max": lat_end[-1] if lat_end else None},
            "from_end_plus_watermark_s": {"p50": pct(0.5) - 5 if lat_end else None,
                                          "p95": pct(0.95) - 5 if lat_end else None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=3_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-s", type=float, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tbspark-bench-agg-"))
    services = stack_up(tmp / "stack", kafka_port=0, http_port=0, mqtt_port=0, topic=None)
    try:
        conn = Connection(tb_url=services["platform"]["url"], mqtt_port=services["platform"]["mqtt_port"],
                          kafka_bootstrap=services["kafka"]["bootstrap"])
        t = time.monotonic()
        spark = build_session("local[2]", 2)
        session_s = time.monotonic() - t
        topic = "bench-backlog"
        ensure_topic(conn.kafka_bootstrap, topic, 1)
        fill_s = fill(conn.kafka_bootstrap, topic, args.records)
        print(f"session {session_s:.1f} s; filled {args.records:,} records in {fill_s:.1f} s", flush=True)
        out = {"session_s": session_s, "load_avg_at_start": os.getloadavg(),
               "catch_up": catch_up(spark, conn, tmp, topic, args.records, args.runs)}
        ensure_topic(conn.kafka_bootstrap, "bench-latency", 1)
        out["latency"] = latency(spark, conn, tmp, "bench-latency", args.latency_s)
        out["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(out, indent=2))
        res = REPO / "bench" / "results"
        res.mkdir(exist_ok=True)
        (res / "aggregate.json").write_text(json.dumps(out, indent=2) + "\n")
        spark.stop()
    finally:
        stack_down(tmp / "stack")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
