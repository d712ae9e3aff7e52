"""Benchmark: the local Kafka broker's CPU per record under a fixed produce rate, producer settings
as the forwarding chain's Kafka node maps them (acks, linger, batch size), A/B over variants.

    .venv/bin/python bench/kafka_broker.py [--rate 15000] [--seconds 20] [--variants linger0,linger10]

Each variant gets a fresh broker (tbspark.stack.kafka on a temp state dir, free ports) and a topic of
4 partitions (as fleet-3000), then one confluent-kafka producer in this process sends
forwarding-chain records (key = device name of 3,000, value
``{"windSpeed":42.1,"geoZone":"Zone 07","ts":…}``) at --rate records/s, paced every 10 ms, for
--seconds. Optionally (``--consume``) a consumer reads the topic the whole time, as a stand-in for
the Spark job's fetches (fetch settings from the variant).

Measured: broker JVM CPU seconds (psutil user+system) over the steady part (after a 3 s warm-up),
divided by the records produced in it; also the broker's idle CPU over 5 s before the load (so the
per-record figure can be read net of it) and this process's CPU. Every variant checks that all
records were acknowledged (acks as configured) — a setting that loses records is not a speed-up.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from tbspark.errors import ServiceStartError
from tbspark.stack import kafka
from tbspark.state import StateDir
from tbspark.testing.cpu import cpu_seconds as cpu
from tbspark.testing.paced import produce_paced

WARMUP_S = 3.0
IDLE_S = 5.0

# Producer settings of the chain's Kafka node, as tbspark/platform/rules/nodes/kafka.py maps them.
NODE_PRODUCER = {"acks": "-1", "retries": 0, "batch.size": 16384, "linger.ms": 0,
                 "queue.buffering.max.kbytes": 32768}

# name -> (producer overrides, broker property overrides, JVM options or None, consumer overrides)
VARIANTS: dict[str, tuple[dict, dict, list | None, dict]] = {
    "linger0": ({}, {}, None, {}),
    "linger5": ({"linger.ms": 5}, {}, None, {}),
    "linger10": ({"linger.ms": 10}, {}, None, {}),
    "linger20": ({"linger.ms": 20}, {}, None, {}),
    "linger10-batch64k": ({"linger.ms": 10, "batch.size": 65536}, {}, None, {}),
    # the forwarding chain's settings (tbspark/thingsboard/rulechain.py)
    "chain": ({"linger.ms": 20, "batch.size": 65536}, {}, None, {}),
    # the chain's settings with the Kafka node's otherProperties {"compression.type": ...}
    "chain-lz4": ({"linger.ms": 20, "batch.size": 65536, "compression.type": "lz4"}, {}, None, {}),
    "chain-zstd": ({"linger.ms": 20, "batch.size": 65536, "compression.type": "zstd"}, {}, None, {}),
    "chain-1thread": ({"linger.ms": 20, "batch.size": 65536},
                      {"num.network.threads": "1", "num.io.threads": "1"}, None, {}),
    "chain-serialgc": ({"linger.ms": 20, "batch.size": 65536}, {},
                       ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"], {}),
    "chain-parallelgc": ({"linger.ms": 20, "batch.size": 65536}, {},
                         ["-Xms256m", "-Xmx512m", "-XX:+UseParallelGC", "-XX:ParallelGCThreads=2",
                          "-Djava.awt.headless=true"], {}),
    "chain-3threads": ({"linger.ms": 20, "batch.size": 65536},
                       {"num.network.threads": "3", "num.io.threads": "8"}, None, {}),
    "linger10-1thread": ({"linger.ms": 10}, {"num.network.threads": "1", "num.io.threads": "1"}, None, {}),
    "linger10-serialgc": ({"linger.ms": 10}, {}, ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC",
                                                 "-Djava.awt.headless=true"], {}),
    "linger10-fetchwait": ({"linger.ms": 10}, {}, None,
                           {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 500}),
}


def start(tmp: Path, props: dict, jvm_opts: list | None) -> kafka.Broker:
    """A broker with ``props`` added to tbspark's server.properties and ``jvm_opts`` instead of
    tbspark's JVM flags (both patched in for this process only)."""
    orig_props, orig_cmd = kafka.server_properties, kafka.java_cmd

    def server_properties(*a, **kw):
        text = orig_props(*a, **kw)
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0] not in props]
        return "\n".join(lines + [f"{k}={v}" for k, v in props.items()]) + "\n"

    def java_cmd(*a, **kw):
        if jvm_opts is not None and a[3] == "kafka.Kafka":
            kw["opts"] = jvm_opts
        return orig_cmd(*a, **kw)

    kafka.server_properties, kafka.java_cmd = server_properties, java_cmd
    try:
        for attempt in range(3):
            try:
                return kafka.start_broker(StateDir(tmp).ensure(), port=0)
            except ServiceStartError:
                # a free port picked for it can be taken by another process first (a shared machine)
                if attempt == 2:
                    raise
    finally:
        kafka.server_properties, kafka.java_cmd = orig_props, orig_cmd


def consume(bootstrap: str, topic: str, conf: dict, stop: threading.Event, counter: list) -> None:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-kafka-broker",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    c.subscribe([topic])
    try:
        while not stop.is_set():
            msgs = c.consume(10000, 0.2)
            counter[0] += sum(1 for m in msgs if m.error() is None)
    finally:
        c.close()


def run_variant(name: str, rate: int, seconds: float, consume_too: bool) -> dict:
    from confluent_kafka import Producer

    prod_over, props, jvm_opts, cons_conf = VARIANTS[name]
    tmp = Path(tempfile.mkdtemp(prefix="tbspark-bench-kafka-"))
    state = StateDir(tmp)
    broker = start(tmp, props, jvm_opts)
    try:
        topic = "weather-stations-data"
        kafka.ensure_topic(broker.bootstrap, topic, 4)
        c0 = cpu(broker.pid)
        time.sleep(IDLE_S)  # measuring the idle broker: the interval is the measurement
        idle_per_s = (cpu(broker.pid) - c0) / IDLE_S
        acked, failed = [0], [0]

        def on_delivery(err, _msg):
            if err is None:
                acked[0] += 1
            else:
                failed[0] += 1

        p = Producer({"bootstrap.servers": broker.bootstrap, **NODE_PRODUCER, **prod_over})
        stop = threading.Event()
        consumed = [0]
        th = None
        if consume_too:
            th = threading.Thread(target=consume, args=(broker.bootstrap, topic, cons_conf, stop, consumed),
                                  daemon=True)
            th.start()
        mark = None

        def take_mark(elapsed: float, sent: int) -> None:
            nonlocal mark
            if mark is None and elapsed >= WARMUP_S:
                mark = (time.monotonic(), sent, cpu(broker.pid), cpu())

        sent = produce_paced(p, topic, rate, seconds, on_tick=take_mark, on_delivery=on_delivery)
        end = (time.monotonic(), sent, cpu(broker.pid), cpu())
        left = p.flush(60)
        del p  # before the broker stops: an idle producer would log its reconnect attempts
        stop.set()
        if th is not None:
            th.join(10)
        wall = end[0] - mark[0]
        recs = end[1] - mark[1]
        broker_cpu = end[2] - mark[2]
        return {
            "variant": name, "rate": rate, "records": sent, "acked": acked[0], "failed": failed[0],
            "unflushed": left, "consumed": consumed[0] if consume_too else None,
            "achieved_rate": round(recs / wall, 1),
            "broker_cpu_s": round(broker_cpu, 2),
            "broker_us_per_record": round(1e6 * broker_cpu / recs, 1),
            "broker_records_per_cpu_s": round(recs / broker_cpu) if broker_cpu else None,
            "broker_idle_cpu_per_s": round(idle_per_s, 3),
            "broker_us_per_record_net_of_idle": round(1e6 * (broker_cpu - idle_per_s * wall) / recs, 1),
            "producer_us_per_record": round(1e6 * (end[3] - mark[3]) / recs, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        kafka.stop_broker(state)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=15000, help="records per second (default 15000)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--variants", default="linger0,chain",
                    help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the variant list (A/B/A/B...)")
    ap.add_argument("--consume", action="store_true", help="a consumer reads the topic meanwhile")
    args = ap.parse_args(argv)
    import signal

    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the variant's broker is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.rate <= 0 or args.seconds <= WARMUP_S + 2:
        ap.error(f"--rate must be positive and --seconds more than {WARMUP_S + 2:g}")
    results = []
    for _ in range(args.rounds):
        for name in names:
            r = run_variant(name, args.rate, args.seconds, args.consume)
            print(json.dumps(r), flush=True)
            results.append(r)
    summary: dict = {}
    for name in names:
        rs = [r for r in results if r["variant"] == name]
        us = sorted(r["broker_us_per_record"] for r in rs)
        summary[name] = {"broker_us_per_record_median": us[len(us) // 2],
                         "runs": us, "all_acked": all(r["acked"] == r["records"] for r in rs)}
    print("\nvariant                 broker us/record (median)   records per broker CPU-s   all acked")
    for name, s in summary.items():
        m = s["broker_us_per_record_median"]
        print(f"{name:<24}{m:>10.1f}                  {1e6 / m:>12,.0f}            {s['all_acked']}")
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "consume": args.consume,
                      "summary": summary, "load_average": [round(x, 2) for x in os.getloadavg()]}))
    return 0 if all(s["all_acked"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
