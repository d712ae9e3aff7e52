"""Benchmark: the aggregation job's CPU per record at steady state (a fixed produce rate, the job
keeping up), A/B over job settings.

    .venv/bin/python bench/spark_steady.py [--rate 15000] [--seconds 150] [--warmup 90] [--variants base,trigger3]

Starts its own Kafka broker and embedded platform (`stack_up`, free ports). For each variant: a fresh
topic of 4 partitions (as fleet-3000) and a separate job process (``--child``: a local[2] SparkSession
with the variant's settings and ``aggregate()`` into the REST sink, i.e. the real zone assets), while
this process produces forwarding-chain records (``{"windSpeed":42.1,"geoZone":"Zone 07","ts":…}``,
ts = now, 3,000 device keys over 50 zones) at --rate records/s, paced every 10 ms. Measured: CPU
seconds (psutil user+system) of the job process and its children (the Python driver + its Spark
JVM) from --warmup seconds after the job's first batch to the end, divided by the records the job
consumed in that interval (its own running count). A variant whose job falls behind (Kafka lag left
at the end, or fewer records consumed than produced after the drain) is marked ``kept_up: false``:
its per-record figure does not describe a steady state. The last line is one JSON object.

Each result also has the job's start-up (`startup_cpu_s`, `startup_wall_s`: JVM, session, JIT
priming, first empty batch) and `slices`: CPU and records per 30 s of load from its start, which show
how long the young JVM's warm-up costs more (a slice where the job lagged has fewer records than
were produced). Pipeline rates with fleet-3000's settings (trigger 3 s, watermark 120 s, at most
150,000 records a batch):

    .venv/bin/python bench/spark_steady.py --rate 25000 --variants fleet,fleet-noprime

`--compression lz4` makes the producer compress (the job's consumer decompresses); `--jfr PREFIX`
records the measured interval with Java Flight Recorder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.paced import produce_paced


FLEET = {"trigger_s": 3.0, "watermark_s": 120, "max_offsets_per_trigger": 150000}
# name -> (scenario aggregation overrides, driver JVM flags added, session conf, source options)
VARIANTS: dict[str, tuple[dict, list, dict, dict]] = {
    "base": ({}, [], {}, {}),
    "trigger2": ({"trigger_s": 2.0}, [], {}, {}),
    "trigger3": ({"trigger_s": 3.0}, [], {}, {}),
    "trigger5": ({"trigger_s": 5.0}, [], {}, {}),
    "shuffle1": ({"shuffle_partitions": 1}, [], {}, {}),
    "parallelgc": ({}, ["-XX:+UseParallelGC"], {}, {}),
    "serialgc": ({}, ["-XX:+UseSerialGC"], {}, {}),
    "fetchwait": ({}, [], {}, {"kafka.fetch.min.bytes": "65536", "kafka.fetch.max.wait.ms": "100"}),
    "mpt": ({"max_offsets_per_trigger": 60000}, [], {}, {}),
    # the JIT: C1 only (no C2 recompilation of hot code; less optimised code, much less compiling)
    "c1only": ({"trigger_s": 3.0}, ["-XX:TieredStopAtLevel=1"], {}, {}),
    # every batch spread over the cores (a task per Kafka partition, then a shuffle), as before
    # JobTuning.single_task_below read a small batch in one task
    "spread": ({"trigger_s": 3.0}, [], {}, {}),
    # scenarios/fleet-3000.yaml's aggregation: trigger 3 s, watermark 120 s, at most 150,000 a batch
    "fleet": (dict(FLEET), [], {}, {}),
    # the job without its JIT priming before the query starts (JobTuning.prime_records = 0)
    "fleet-noprime": (dict(FLEET), [], {}, {}),
    "fleet-prime50k": (dict(FLEET), [], {}, {}),  # priming with 3 x 50,000 records
    "fleet-c1": (dict(FLEET), ["-XX:TieredStopAtLevel=1"], {}, {}),
    "fleet-serialgc": (dict(FLEET), ["-XX:+UseSerialGC"], {}, {}),
    "fleet-parallelgc": (dict(FLEET), ["-XX:+UseParallelGC"], {}, {}),
    # the Kafka consumer: no CRC check of fetched batches, larger polls
    "fleet-nocrc": (dict(FLEET), [], {}, {"kafka.check.crcs": "false"}),
    "fleet-poll": (dict(FLEET), [], {}, {"kafka.max.poll.records": "10000"}),
}
# further JobTuning fields per variant (tbspark/aggregate/tuning.py)
JOB_KNOBS: dict[str, dict] = {"spread": {"single_task_below": 0}, "fleet-noprime": {"prime_records": 0},
                              "fleet-prime50k": {"prime_records": 50_000}}


def variant_tuning(name: str, jfr: str | None = None, warmup: float = 0.0, seconds: float = 0.0):
    """The job's tuning for a variant: the defaults with the variant's JVM flags, session settings,
    source options and knobs (and a flight recording of the measured interval with ``jfr``)."""
    from dataclasses import replace

    from tbspark.aggregate.tuning import DEFAULT_TUNING

    _, jvm_flags, conf, source = VARIANTS[name]
    flags = [*DEFAULT_TUNING.driver_java_options, *jvm_flags]
    if jfr:  # a flight recording of the measured interval (the JVM's hot methods, GC, JIT)
        flags.append(f"-XX:StartFlightRecording=delay={int(warmup)}s,duration={int(seconds - warmup)}s,"
                     f"settings=profile,dumponexit=true,filename={jfr}")
    return replace(DEFAULT_TUNING, driver_java_options=tuple(flags), session_conf=conf, source_options=source,
                   **JOB_KNOBS.get(name, {}))


def scenario_text(name: str, topic: str, over: dict, rate: int) -> str:
    """A scenario whose fleet sends ``rate`` messages a second (as the producer does: the job primes
    its JIT for a fleet of 5,000 messages a second or more)."""
    agg = {"window_s": 10, "watermark_s": 5, "trigger_s": 1.0, "sink": "rest", **over}
    return f"""
name: {name}
kafka: {{topic: {topic}, partitions: 4}}
devices:
  - {{name: "T{{i}}", count: {rate}, type: WeatherStation, zone: Z,
     telemetry: {{windSpeed: {{kind: constant, value: 1, rate_hz: 1}}}}}}
aggregation: {json.dumps(agg)}
"""


def child(args) -> int:
    """The job process: print one JSON status line about every 0.5 s, stop on SIGTERM."""
    import signal

    from tbspark.aggregate import job
    from tbspark.scenario import parse_scenario
    from tbspark.settings import Connection
    from tbspark.state import StateDir

    over = VARIANTS[args.variant][0]
    tuning = variant_tuning(args.variant, args.jfr, args.warmup, args.seconds)
    sc = parse_scenario(scenario_text(f"steady-{args.variant}-{os.getpid()}", args.topic, over, args.rate))
    conn = Connection(tb_url=args.tb_url, kafka_bootstrap=args.bootstrap)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def progress(st) -> None:
        print(json.dumps({"t": time.time(), "batches": st.batches, "records": st.records, "lag": st.lag}),
              flush=True)

    seen = set()
    orig_lag = job._lag

    def lag(query, st) -> None:  # also report each micro-batch's phases (Spark's durationMs)
        orig_lag(query, st)
        pr = query.lastProgress
        if pr and pr.get("batchId") not in seen:
            seen.add(pr.get("batchId"))
            print(json.dumps({"t": time.time(), "batch": pr.get("batchId"), "rows": pr.get("numInputRows"),
                              "durationMs": pr.get("durationMs"), "phase_s": st.phase_s}),
                  file=sys.stderr, flush=True)

    job._lag = lag
    spark = job.build_session("local[2]", sc.aggregation.shuffle_partitions, tuning=tuning)
    if args.probe:
        _probe_batches(job, spark)
    rep = job.aggregate(sc, conn, StateDir(Path(args.state)).ensure(), spark=spark, stop_event=stop,
                        progress=progress, starting_offsets="earliest", tuning=tuning)
    print(json.dumps({"t": time.time(), "done": True, "batches": rep.batches, "records": rep.records}),
          flush=True)
    return 0


def _probe_batches(job, spark) -> None:
    """--probe: for each micro-batch, log to the job log what it cost and what Spark did in it —
    CPU of the Python driver and of the JVM (psutil), Janino compilations (Spark's CodegenMetrics:
    generated classes compiled, not found in the code cache), Spark jobs and tasks run. The probe's
    own py4j calls cost a little CPU, so --probe runs are for diagnosis, not for the CPU figures."""
    jvm = spark._jvm
    codegen = jvm.org.apache.spark.metrics.source.CodegenMetrics
    store = spark.sparkContext._jsc.sc().statusStore()
    me = psutil.Process()
    orig = job._Batcher.__call__
    prev: dict = {}

    def snapshot() -> dict:
        jobs = store.jobsList(None)
        tasks = stages = 0
        for i in range(jobs.size()):
            j = jobs.apply(i)
            tasks += j.numTasks()
            stages += j.stageIds().size()
        py = me.cpu_times()
        jv = sum(sum(c.cpu_times()[:2]) for c in me.children(recursive=True))
        return {"py": py.user + py.system, "jvm": jv, "compiles": codegen.METRIC_COMPILATION_TIME().getCount(),
                "compile_ms": codegen.METRIC_COMPILATION_TIME().getSnapshot().getMean()
                * codegen.METRIC_COMPILATION_TIME().getCount(),
                "jobs": jobs.size(), "stages": stages, "tasks": tasks}

    def call(self, df, batch_id):
        nonlocal prev
        before = snapshot()
        started = time.time()
        try:
            return orig(self, df, batch_id)
        finally:
            after = snapshot()
            # between batches: what the streaming engine itself did (offsets, logs, planning)
            gap = {k: round(before[k] - prev[k], 3) for k in before} if prev else {}
            inside = {k: round(after[k] - before[k], 3) for k in after}
            prev = after
            print(json.dumps({"probe": batch_id, "wall_s": round(time.time() - started, 3),
                              "in_batch": inside, "between": gap, "phase_s": self.status.phase_s}),
                  file=sys.stderr, flush=True)

    job._Batcher.__call__ = call


def tree_cpu(pid: int) -> float:
    return cpu_seconds(pid, children=True)


def run_variant(name: str, services: dict, tmp: Path, rate: int, seconds: float, warmup: float,
                probe: bool = False, compression: str = "none", jfr: str | None = None) -> dict:
    from confluent_kafka import Producer

    from tbspark.stack.kafka import ensure_topic

    bootstrap = services["kafka"]["bootstrap"]
    topic = f"steady-{name}-{int(time.time())}"
    ensure_topic(bootstrap, topic, 4)
    log = tmp / f"{name}.log"
    proc = subprocess.Popen([sys.executable, __file__, "--child", "--variant", name, "--topic", topic,
                             "--bootstrap", bootstrap, "--tb-url", services["platform"]["url"],
                             "--state", str(tmp / f"state-{name}"), "--rate", str(rate),
                             *(["--probe"] if probe else []),
                             *(["--jfr", jfr, "--warmup", str(warmup), "--seconds", str(seconds)] if jfr else [])],
                            stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    print(f"job log: {log}", flush=True)
    status: list[dict] = []

    def reader() -> None:
        for line in proc.stdout:
            if line.startswith("{"):
                status.append(json.loads(line))

    threading.Thread(target=reader, daemon=True).start()
    try:
        return _measure(name, proc, log, status, bootstrap, topic, rate, seconds, warmup, compression)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


SLICE_S = 30.0


def _measure(name, proc, log, status, bootstrap, topic, rate, seconds, warmup, compression) -> dict:
    from confluent_kafka import Producer

    launched = time.time()

    deadline = time.monotonic() + 300
    while not any(s.get("batches", 0) >= 1 for s in status):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"job {name} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)  # poll interval on the job's status lines
    # the job's start-up (JVM, session, priming, first empty batch): CPU and wall seconds
    startup = (round(tree_cpu(proc.pid), 1), round(time.time() - launched, 1))
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "-1",
                  "compression.type": compression})
    mark = None
    # (elapsed s, job CPU s, records consumed) every SLICE_S from the start of the load: how long
    # the young JVM's warm-up (JIT) costs more per record
    slices: list[tuple[float, float, int]] = []

    def take_mark(elapsed: float, _sent: int) -> None:
        nonlocal mark
        if mark is None and elapsed >= warmup:
            mark = (time.time(), tree_cpu(proc.pid), status[-1]["records"])
        if elapsed >= len(slices) * SLICE_S:
            slices.append((elapsed, tree_cpu(proc.pid), status[-1]["records"]))

    sent = produce_paced(p, topic, rate, seconds, on_tick=take_mark, ts_as_string=True)
    end = (time.time(), tree_cpu(proc.pid), status[-1]["records"], status[-1].get("lag"))
    slices.append((seconds, end[1], end[2]))
    warm = [{"from_s": round(a[0]), "to_s": round(b[0]), "cpu_s": round(b[1] - a[1], 1),
             "records": b[2] - a[2],
             "us_per_record": round(1e6 * (b[1] - a[1]) / (b[2] - a[2]), 1) if b[2] > a[2] else None}
            for a, b in zip(slices, slices[1:]) if b[0] - a[0] >= SLICE_S / 2]
    p.flush(30)
    # drain: the job should have consumed everything within a few triggers
    drain_deadline = time.monotonic() + 60
    while status[-1]["records"] < sent and time.monotonic() < drain_deadline:
        time.sleep(0.2)  # poll interval on the job's status lines
    drained = status[-1]["records"]
    recs = end[2] - mark[2]
    cpu = end[1] - mark[1]
    wall = end[0] - mark[0]
    batches = [s for s in status if mark[0] <= s["t"] <= end[0]]
    nb = (batches[-1]["batches"] - batches[0]["batches"]) if batches else 0
    return {"variant": name, "rate": rate, "sent": sent, "consumed_after_drain": drained,
            "kept_up": drained >= sent and (end[3] or 0) < rate * 5,
            "lag_at_end": end[3], "measured_s": round(wall, 1), "records_in_interval": recs,
            "batches_in_interval": nb, "cpu_s": round(cpu, 2), "cpu_per_s": round(cpu / wall, 3),
            "us_per_record": round(1e6 * cpu / recs, 1) if recs else None,
            "records_per_cpu_s": round(recs / cpu) if cpu else None,
            "cpu_ms_per_batch": round(1000 * cpu / nb, 1) if nb else None,
            "compression": compression, "startup_cpu_s": startup[0], "startup_wall_s": startup[1],
            "slices": warm,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=15000)
    ap.add_argument("--seconds", type=float, default=150.0)
    # A fresh job's JVM is still JIT-compiling Spark's own code (Janino, the JSON parser, task
    # deserialisation) 90 s into the load on a busy 2-core machine (JFR), so measure after that.
    ap.add_argument("--warmup", type=float, default=90.0, help="seconds of load before measuring")
    ap.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep-logs", action="store_true", help="keep the job logs (per-batch phases)")
    ap.add_argument("--probe", action="store_true",
                    help="log per batch: driver/JVM CPU, code compilations, Spark jobs and tasks "
                         "(diagnosis; adds a little CPU)")
    ap.add_argument("--compression", default="none", choices=("none", "lz4", "zstd", "snappy", "gzip"),
                    help="the producer's compression.type (what the job's Kafka consumer decompresses)")
    ap.add_argument("--jfr", metavar="PREFIX", help="record the job JVM's measured interval with JFR "
                    "(profile settings) to PREFIX.<variant>.jfr (diagnosis: `jfr print`)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--tb-url", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.seconds <= args.warmup + 5:
        ap.error("--seconds must exceed --warmup by more than 5")
    from tbspark.stack.services import stack_down, stack_up

    import signal

    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the stack and the job process are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="tbspark-bench-steady-"))
    services = stack_up(tmp / "stack", kafka_port=0, http_port=0, mqtt_port=0, topic=None)
    results = []
    try:
        for _ in range(args.rounds):
            for name in names:
                r = run_variant(name, services, tmp, args.rate, args.seconds, args.warmup, args.probe,
                                args.compression, args.jfr and f"{args.jfr}.{name}.jfr")
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        stack_down(tmp / "stack")
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    print("\nvariant        us/record (median)   records per CPU-s   CPU ms per batch   kept up")
    for name in names:
        rs = [r for r in results if r["variant"] == name]
        us = sorted(r["us_per_record"] for r in rs if r["us_per_record"])
        mb = sorted(r["cpu_ms_per_batch"] for r in rs if r["cpu_ms_per_batch"])
        med = us[len(us) // 2] if us else None
        summary[name] = {"us_per_record_median": med, "runs": us,
                         "cpu_ms_per_batch_median": mb[len(mb) // 2] if mb else None,
                         "kept_up": all(r["kept_up"] for r in rs)}
        s = summary[name]
        print(f"{name:<15}{med or 0:>10.1f}          {1e6 / med if med else 0:>12,.0f}      "
              f"{s['cpu_ms_per_batch_median'] or 0:>10.1f}        {s['kept_up']}")
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "summary": summary,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))
    return 0 if all(s["kept_up"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
