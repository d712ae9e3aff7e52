"""Benchmark: the job's driver-side window fold against Spark's own state store (withWatermark +
window aggregation, RocksDB provider), over the same Kafka records, at equal guarantees.

    .venv/bin/python bench/state_store.py [--records 2000000] [--zones 50] [--runs 3]
                                          [--max-offsets 100000] [--variants fold,rocksdb,...]
                                          [--restart-records 100000] [--kill-at 2] [--quick]

``--quick``: 200,000 records, batches of 40,000, one run, and the ``rocksdb-defaultwm`` variant too.

Starts its own Kafka broker (`stack_up` on free ports, no platform) and one local[2] SparkSession (the
job's `build_session`), fills a one-partition topic with --records forwarding-chain records
(``{"geoZone","windSpeed","ts"}``) over --zones zones, event time advancing 500 records a second
(many 10 s windows), 5 % of them up to 5 s out of order (never late) and 1 % 15 s to 10 min behind
(late or not depending on where they fall: the watermark is 5 s). Every variant then aggregates the
whole topic with ``Trigger.AvailableNow`` and ``maxOffsetsPerTrigger`` = --max-offsets (so the batch
boundaries are the same for all: offsets [k·M, (k+1)·M)), update mode, into the same sink — an
idempotent per-(zone, window) upsert into a SQLite file, as the job's sinks overwrite the point at
ts = window start — and its windows are compared with the exact expected ones (``expected_windows``,
computed in plain Python from the records and the batch boundaries: tbspark/testing/window_model.py).

Variants:

* ``fold``: the job's path — parse_stable + batch_partials in Spark, classify_groups and
  WindowState.apply on the driver, the state snapshot per batch beside the checkpoint through
  Hadoop's FileSystem (store.open_store), and late records as dead letters (a second pass over a
  batch that has any) to ``<topic>.dlq``, as the job does.
* ``fold-nodlq``: the same, late records counted but not written anywhere (Spark's own guarantee).
* ``rocksdb``: ``withWatermark("event_time", "5 seconds")`` + ``groupBy(window(event_time, "10
  seconds"), zone).agg(count, sum, min, max)`` with the RocksDB state store provider, output mode
  update, foreachBatch collecting the updated rows into the same sink. With
  ``spark.sql.streaming.statefulOperator.allowMultiple=false``, so late rows are judged against this
  batch's watermark (= the fold's rule); Spark's default judges them against the previous batch's.
* ``rocksdb-changelog``: the same with RocksDB changelog checkpointing.
* ``rocksdb-defaultwm`` (not in the default list): ``rocksdb`` with Spark's default watermark
  propagation (late rule one batch behind: checked against ``expected_windows(lag=1)``) — to show
  how Spark's default differs.

Reported per variant (median over --runs, after one unmeasured warm-up run of each variant on the
restart topic): records/s (wall), CPU-s per million records (this Python driver + the Spark JVM,
psutil user+system), the median micro-batch duration (Spark's ``triggerExecution``), the checkpoint's
size on disk (and the state part of it), late records, exact or not. Restart: for ``fold`` and
``rocksdb`` (--restart-variants) a child process aggregates a smaller topic (--restart-records, in
five batches) and SIGKILLs itself right after the sink's write of batch --kill-at (before Spark commits it), a
second child resumes from the checkpoint, and the sink must end exact (batch --kill-at written twice).

Results go to bench/results/state_store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tbspark.aggregate.tuning import DEFAULT_TUNING
from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.kafka import produce_all
from tbspark.testing.window_model import (DELAY_MS, WINDOW_MS, Agg, Record, compare, encode,
                                          expected_windows, make_records)

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("fold", "fold-nodlq", "rocksdb", "rocksdb-changelog", "rocksdb-defaultwm")
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


# ---- the sink both variants write to ----------------------------------------------------------

class UpsertSink:
    """An idempotent per-(zone, window) upsert into a SQLite file, one transaction per batch — the
    job's sinks overwrite the point at ts = window start the same way, so a replayed batch lands on
    the same rows. ``batches`` logs each write (a replay shows as a batch id written twice)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS windows (zone TEXT, start INTEGER, n INTEGER, "
                        "sum REAL, min REAL, max REAL, avg REAL, PRIMARY KEY (zone, start))")
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (batch INTEGER, windows INTEGER)")

    def write(self, batch_id: int, rows: Iterable[tuple[str, int, int, float, float, float]]) -> int:
        rows = [(z, int(s), int(n), float(sm), float(lo), float(hi), float(sm) / int(n))
                for z, s, n, sm, lo, hi in rows]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.db.execute("INSERT INTO batches VALUES (?, ?)", (batch_id, len(rows)))
        self.db.execute("COMMIT")
        return len(rows)

    def windows(self) -> dict[tuple[str, int], Agg]:
        return {(z, s): (n, sm, lo, hi) for z, s, n, sm, lo, hi, avg in self.db.execute(
            "SELECT * FROM windows") if avg == sm / n}  # a stored average that is not sum/count: missing

    def batch_ids(self) -> list[int]:
        return [b for (b,) in self.db.execute("SELECT batch FROM batches ORDER BY rowid")]

    def close(self) -> None:
        self.db.close()


# ---- the two ways of keeping the window state -------------------------------------------------

@dataclass
class Query:
    variant: str
    bootstrap: str
    topic: str
    checkpoint: Path
    sink_path: Path
    max_offsets: int
    kill_at: int | None = None  # SIGKILL this process right after the sink's write of this batch


def _source(spark: Any, q: Query) -> Any:
    return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", q.bootstrap)
            .option("subscribe", q.topic).option("startingOffsets", "earliest")
            .option("failOnDataLoss", "false").option("maxOffsetsPerTrigger", str(q.max_offsets))
            .option("minPartitions", str(spark.sparkContext.defaultParallelism)).load())


def _maybe_die(q: Query, batch_id: int) -> None:
    if q.kill_at is not None and batch_id == q.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # written, not committed: the restart replays it


def _fold_batch(spark: Any, q: Query, sink: UpsertSink) -> Any:
    """The job's foreachBatch (job._Batcher._run), without its status line and batch log."""
    from tbspark.aggregate.location import location_uri
    from tbspark.aggregate.parse import (ParseSpec, batch_partials, classify_groups, dead_letters, parse,
                                         parse_stable)
    from tbspark.aggregate.store import open_store

    spec = ParseSpec(window_ms=WINDOW_MS)
    store = open_store(spark, location_uri(q.checkpoint), WINDOW_MS, DELAY_MS)
    letters = q.variant == "fold"
    last = {"records": None}

    def run(df: Any, batch_id: int) -> None:
        state = store.before(batch_id)
        now_ms = int(time.time() * 1000)
        prev = last["records"]
        if prev is not None and prev < DEFAULT_TUNING.single_task_below:
            df = df.coalesce(1)
        groups = classify_groups(batch_partials(parse_stable(df, spec)).collect(), spec,
                                 state.watermark_ms, now_ms)
        if groups is None:
            groups = classify_groups(batch_partials(parse(df, spec, state.watermark_ms, now_ms)).collect(),
                                     spec, state.watermark_ms, now_ms, exact=True)
        if groups.rejected and letters:
            (dead_letters(parse(df, spec, state.watermark_ms, now_ms), q.topic).write.format("kafka")
             .option("kafka.bootstrap.servers", q.bootstrap).option("kafka.acks", "all")
             .option("kafka.enable.idempotence", "true").option("topic", q.topic + ".dlq").save())
        new_state, out = state.apply(batch_id, groups.partials, groups.max_event_ms, "update")
        store.save(new_state)
        sink.write(batch_id, [(w.zone, w.start_ms, w.agg.count, w.agg.sum, w.agg.min, w.agg.max)
                              for w in out])
        last["records"] = groups.total
        _maybe_die(q, batch_id)

    return _source(spark, q).writeStream.foreachBatch(run)


def _state_store_batch(spark: Any, q: Query, sink: UpsertSink) -> Any:
    """withWatermark + window aggregation in Spark's state store; foreachBatch gets the windows the
    batch updated (output mode update) with their values so far, as the fold writes them."""
    from pyspark.sql import functions as F

    from tbspark.aggregate.parse import ParseSpec, parse_stable

    spec = ParseSpec(window_ms=WINDOW_MS)
    spark.conf.set("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
    spark.conf.set("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled",
                   str(q.variant == "rocksdb-changelog").lower())
    spark.conf.set("spark.sql.streaming.statefulOperator.allowMultiple",
                   str(q.variant == "rocksdb-defaultwm").lower())
    usable = parse_stable(_source(spark, q), spec).filter(F.col("reason").isNull())
    agg = (usable.select("zone", "speed", F.timestamp_millis("event_ms").alias("event_time"))
           .withWatermark("event_time", f"{DELAY_MS // 1000} seconds")
           .groupBy(F.window("event_time", f"{WINDOW_MS // 1000} seconds"), "zone")
           .agg(F.count(F.lit(1)).alias("n"), F.sum("speed").alias("sum"), F.min("speed").alias("min"),
                F.max("speed").alias("max")))

    def run(df: Any, batch_id: int) -> None:
        rows = df.select("zone", F.unix_millis(F.col("window.start")).alias("start"), "n", "sum", "min",
                         "max").collect()
        sink.write(batch_id, [tuple(r) for r in rows])
        _maybe_die(q, batch_id)

    return agg.writeStream.outputMode("update").foreachBatch(run)


def run_query(spark: Any, q: Query) -> list[dict]:
    """Run ``q`` to the end of the topic (availableNow); returns Spark's progress of every batch."""
    sink = UpsertSink(q.sink_path)
    try:
        make = _fold_batch if q.variant.startswith("fold") else _state_store_batch
        query = (make(spark, q, sink).option("checkpointLocation", str(q.checkpoint))
                 .trigger(availableNow=True).queryName(f"bench-{q.variant}").start())
        query.awaitTermination()
        return list(query.recentProgress)
    finally:
        sink.close()


# ---- measuring --------------------------------------------------------------------------------

def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(spark: Any, q: Query, records: int, want: dict, want_late: int, jvm_pid: int) -> dict:
    pids = [os.getpid(), jvm_pid]
    c0, t0 = _cpu(pids), time.monotonic()
    progress = run_query(spark, q)
    wall, cpu = time.monotonic() - t0, _cpu(pids) - c0
    data = [p for p in progress if p.get("numInputRows")]
    durations = [p["durationMs"]["triggerExecution"] for p in data]
    sink = UpsertSink(q.sink_path)
    got = sink.windows()
    sink.close()
    check = compare(got, want)
    late = records - sum(v[0] for v in got.values())
    state_dir = q.checkpoint / ("tbspark-windows" if q.variant.startswith("fold") else "state")
    return {"rec_per_s": records / wall, "wall_s": wall, "cpu_s_per_m": cpu / records * 1e6,
            "batches": len(data), "batches_all": len(progress),
            "batch_ms_median": statistics.median(durations) if durations else None,
            "checkpoint_bytes": _du(q.checkpoint), "state_bytes": _du(state_dir),
            "late": late, "late_expected": want_late, **check,
            "exact": check["exact"] and late == want_late}


def fill(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    # Idempotence keeps the offset order = the generated order (expected_windows relies on it).
    return produce_all(bootstrap, topic, map(encode, records), idempotent=True)


def restart_check(variant: str, bootstrap: str, topic: str, records: Sequence[Record], max_offsets: int,
                  kill_at: int, tmp: Path) -> dict:
    """Child 1 dies by SIGKILL right after the sink's write of batch ``kill_at``; child 2 resumes from
    the checkpoint. The sink must end exact, with batch ``kill_at`` written twice (replayed)."""
    ckpt, sink_path = tmp / f"restart-{variant}", tmp / f"restart-{variant}.db"
    base = [sys.executable, __file__, "--child", variant, "--bootstrap", bootstrap, "--topic", topic,
            "--checkpoint", str(ckpt), "--sink", str(sink_path), "--max-offsets", str(max_offsets)]
    t = time.monotonic()
    first = subprocess.run(base + ["--kill-at", str(kill_at)], capture_output=True, text=True)
    second = subprocess.run(base, capture_output=True, text=True)
    want, want_late = expected_windows(records, max_offsets)
    sink = UpsertSink(sink_path)
    got, ids = sink.windows(), sink.batch_ids()
    sink.close()
    check = compare(got, want)
    late = len(records) - sum(v[0] for v in got.values())
    return {"killed": first.returncode == -signal.SIGKILL, "resumed_rc": second.returncode,
            "replayed": ids.count(kill_at) == 2, "batches_written": ids, **check,
            "late": late, "late_expected": want_late,
            "exact": check["exact"] and late == want_late and second.returncode == 0,
            "wall_s": time.monotonic() - t,
            "stderr": (second.stderr.strip().splitlines() or [""])[-1][:300] if second.returncode else ""}


def session(log: Path) -> Any:
    from tbspark.aggregate.job import build_session

    return build_session("local[2]", 2, log_file=log, app_name="tbspark-bench-state-store",
                         conf={"spark.sql.streaming.numRecentProgressUpdates": "1000"})


def child(args: argparse.Namespace) -> None:
    spark = session(Path(args.checkpoint).parent / f"spark-{args.child}.log")
    run_query(spark, Query(args.child, args.bootstrap, args.topic, Path(args.checkpoint), Path(args.sink),
                           args.max_offsets, args.kill_at))
    spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--zones", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-offsets", type=int, default=100_000, help="maxOffsetsPerTrigger (batch size)")
    ap.add_argument("--variants", default="fold,fold-nodlq,rocksdb,rocksdb-changelog",
                    help="add rocksdb-defaultwm to see Spark's default late rule (--quick does)")
    ap.add_argument("--restart-records", type=int, default=100_000)
    ap.add_argument("--restart-variants", default="fold,rocksdb")
    ap.add_argument("--kill-at", type=int, default=None,
                    help="restart: the batch after whose write the first child dies (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200,000 records, 1 run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "state_store.json"))
    for hidden in ("--child", "--bootstrap", "--topic", "--checkpoint", "--sink"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    kill_at = 2 if args.kill_at is None else args.kill_at
    if args.quick:
        args.records, args.runs, args.restart_records = 200_000, 1, 100_000
        args.max_offsets = min(args.max_offsets, 40_000)
        if "rocksdb-defaultwm" not in args.variants:
            args.variants += ",rocksdb-defaultwm"
    variants = [v for v in args.variants.split(",") if v]
    for v in variants + args.restart_variants.split(","):
        if v and v not in VARIANTS:
            ap.error(f"unknown variant {v!r} (one of {', '.join(VARIANTS)})")
    restart_batch = max(1, args.restart_records // 5)

    from tbspark.stack.kafka import ensure_topic
    from tbspark.stack.services import stack_down, stack_up

    tmp = Path(tempfile.mkdtemp(prefix="tbspark-bench-state-"))
    services = stack_up(tmp / "stack", kafka_port=0, platform=False, topic=None, die_with_parent=True)
    out: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cores": os.cpu_count(),
                 "load_avg_at_start": os.getloadavg(), "records": args.records, "zones": args.zones,
                 "max_offsets_per_trigger": args.max_offsets, "runs": args.runs}
    try:
        bootstrap = services["kafka"]["bootstrap"]
        records = make_records(args.records, args.zones)
        small = make_records(args.restart_records, args.zones, seed=19)
        for topic, recs in (("bench-state", records), ("bench-state-small", small)):
            ensure_topic(bootstrap, topic, 1)
            ensure_topic(bootstrap, topic + ".dlq", 1)
            print(f"filled {topic}: {len(recs):,} records in {fill(bootstrap, topic, recs):.1f} s", flush=True)
        want = {0: expected_windows(records, args.max_offsets, lag=0),
                1: expected_windows(records, args.max_offsets, lag=1)}
        out["windows"], out["late_expected"] = len(want[0][0]), want[0][1]
        out["late_expected_lag1"] = want[1][1]
        print(f"{len(want[0][0]):,} windows, {want[0][1]:,} late records expected "
              f"({want[1][1]:,} with Spark's default late rule)", flush=True)

        # Restart drills first (children: their own JVMs), then the measured runs in this one.
        out["restart"] = {}
        for v in [v for v in args.restart_variants.split(",") if v]:
            r = restart_check(v, bootstrap, "bench-state-small", small, restart_batch, kill_at, tmp)
            out["restart"][v] = r
            print(f"restart {v}: killed={r['killed']} replayed={r['replayed']} exact={r['exact']} "
                  f"({r['wall_s']:.0f} s) {r['stderr']}", flush=True)

        t = time.monotonic()
        spark = session(tmp / "spark.log")
        out["session_s"] = time.monotonic() - t
        jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        for v in variants:  # warm-up: the JIT compiles what the variant runs (not measured)
            run_query(spark, Query(v, bootstrap, "bench-state-small", tmp / f"warm-{v}", tmp / f"warm-{v}.db",
                                   restart_batch))
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for i in range(args.runs):
            for v in variants:  # interleaved, so a load change hits every variant alike
                lag = 1 if v == "rocksdb-defaultwm" else 0
                q = Query(v, bootstrap, "bench-state", tmp / f"ckpt-{v}-{i}", tmp / f"sink-{v}-{i}.db",
                          args.max_offsets)
                r = measure(spark, q, args.records, *want[lag], jvm_pid)
                r["load_avg"] = os.getloadavg()[0]
                runs[v].append(r)
                print(f"run {i + 1} {v}: {r['rec_per_s']:,.0f} rec/s, {r['cpu_s_per_m']:.1f} CPU-s/M, "
                      f"batch {r['batch_ms_median']:.0f} ms ({r['batches']} batches), state "
                      f"{r['state_bytes'] / 1e6:.2f} MB of {r['checkpoint_bytes'] / 1e6:.2f} MB, "
                      f"late {r['late']:,}, exact={r['exact']}", flush=True)
                shutil.rmtree(q.checkpoint, ignore_errors=True)
            out["runs_detail"] = runs  # so far: an interrupted run keeps its finished rounds
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        spark.stop()
        out["variants"] = {v: summary(rs) for v, rs in runs.items()}
        out["runs_detail"] = runs
        out["load_avg_at_end"] = os.getloadavg()
        print(json.dumps({k: out[k] for k in ("variants", "restart", "load_avg_at_start", "load_avg_at_end")},
                         indent=2))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        stack_down(tmp / "stack")
        shutil.rmtree(tmp, ignore_errors=True)


def summary(rs: list[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
    return {"rec_per_s": med("rec_per_s"), "cpu_s_per_m": med("cpu_s_per_m"),
            "batch_ms_median": med("batch_ms_median"), "batches": rs[0]["batches"],
            "state_bytes": med("state_bytes"), "checkpoint_bytes": med("checkpoint_bytes"),
            "late": rs[0]["late"], "exact": all(r["exact"] for r in rs),
            "rec_per_s_runs": [round(r["rec_per_s"]) for r in rs]}


if __name__ == "__main__":
    main()
