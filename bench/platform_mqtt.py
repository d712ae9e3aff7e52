"""Benchmark: MQTT ingest of the embedded platform (MQTT → store → forwarding chain → Kafka) with many
device connections at 10 Hz, QoS 0 and 1, in messages per platform CPU-second; side by side with
Mosquitto as a plain broker under the same load; and memory per idle connection.

    .venv/bin/python bench/platform_mqtt.py [--devices 3000] [--rate-hz 10] [--windows 3] [--window-s 8]
                                            [--idle 10000] [--skip-mosquitto]
                                            [--linger 0] [--batch-size 16384] [--compression lz4] [--broker-cpu]

Method: a fresh Kafka broker and a fresh `tbspark platform serve` process (own state dirs, free
ports); devices created over REST (tbspark's TbRestClient); the project's forwarding chain
(tbspark/thingsboard/rulechain.py, Kafka node settings as below) attached to their profile. The
load generator is a multiprocess asyncio publisher built on tbspark.mqtt.codec (one packet per
message, as devices send, each device on its own 100 ms schedule, at most 100 unacknowledged QoS 1
messages per device). After all devices are connected and a warm-up, several windows measure
messages received (server counter) and the server process's CPU time (psutil user+system, all its
threads: event loop, SQLite writer, librdkafka). The figure is the median over the windows; "msg/batch"
is messages per rule-engine batch (large when the platform runs backlogged). The Kafka node's producer
settings default to linger 0 / batchSize 16384 (the figures in docs/benchmarks.md); `--linger 20
--batch-size 65536` is the tutorial chain's (tbspark/thingsboard/rulechain.py), `--compression` sets
its otherProperties compression.type, and `--broker-cpu` adds the Kafka broker's CPU per forwarded
record over the same interval (the window then also waits for the deliveries). The platform inherits the
environment: `TBSPARK_EVENT_LOOP=asyncio` runs it on the stock asyncio loop instead of uvloop (A/B).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from tbspark.mqtt import codec as c
from tbspark.scenario import parse_scenario
from tbspark.thingsboard.rest import TbRestClient
from tbspark.thingsboard.rulechain import build_rule_chain
from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.mosquitto import raise_fd_limit, start_mosquitto, stop
from tbspark.testing.platform import TENANT, start_platform
from tbspark.testing.wait import wait_until

MAX_INFLIGHT = 100


# ---------------------------------------------------------------------------------- load generator

class Device(asyncio.Protocol):
    __slots__ = ("w", "token", "transport", "dec", "inflight", "pid", "connected", "zone")

    def __init__(self, w, token: str, zone: str):
        self.w, self.token, self.zone = w, token, zone
        self.transport = None
        self.dec = c.StreamDecoder()
        self.inflight = 0
        self.pid = 0
        self.connected = False

    def connection_made(self, transport):
        self.transport = transport
        data = c.encode_connect("", username=self.token, keep_alive=600, protocol_level=self.w.level)
        if self.w.send_attrs:
            data += c.encode_publish("v1/devices/me/attributes",
                                     json.dumps({"deviceType": "WeatherStation", "geoZone": self.zone}),
                                     1, 1, protocol_level=self.w.level)
        transport.write(data)

    def data_received(self, data):
        for t, _f, _b in self.dec.feed(data):
            if t == c.CONNACK:
                self.connected = True
                self.w.connected.value += 1
            elif t == c.PUBACK:
                self.inflight = max(0, self.inflight - 1)

    def connection_lost(self, exc):
        if self.connected:
            self.w.connected.value -= 1
        self.connected = False

    def send(self, payload: bytes) -> bool:
        if not self.connected or self.transport.is_closing():
            return False
        qos = self.w.qos
        if qos and self.inflight >= MAX_INFLIGHT:
            return False
        if self.transport.get_write_buffer_size() > 16384:
            return False  # the server is not reading: a real client would block here too
        self.pid = self.pid % 65535 + 1
        if qos:
            self.inflight += 1
        self.transport.write(c.encode_publish("v1/devices/me/telemetry", payload, qos, self.pid,
                                              protocol_level=self.w.level))
        return True


class Worker:
    def __init__(self, level, qos, connected, send_attrs):
        self.level, self.qos, self.connected, self.send_attrs = level, qos, connected, send_attrs


def worker_main(host, port, tokens, level, qos, rate_hz, stop, connected, sent, send_attrs, zones):
    raise_fd_limit()

    async def run():
        loop = asyncio.get_running_loop()
        w = Worker(level, qos, connected, send_attrs)
        devs = [Device(w, tok, zones[i % len(zones)]) for i, tok in enumerate(tokens)]
        for i in range(0, len(devs), 500):  # open in waves of 500 so the accept backlog keeps up
            await asyncio.gather(*(loop.create_connection(lambda d=d: d, host, port) for d in devs[i:i + 500]),
                                 return_exceptions=True)
        if rate_hz <= 0:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            return
        slots = 10  # each device on its own phase of the 1/rate period
        groups = [devs[i::slots] for i in range(slots)]
        period = 1.0 / rate_hz
        t0 = loop.time()
        k = 0
        n = 0
        while not stop.is_set():
            for d in groups[k % slots]:
                if d.send(b'{"windSpeed":"%d"}' % (n % 60)):
                    n += 1
            if k % slots == 0:
                sent.value = n
            k += 1
            # always yield, even when behind schedule, so acks and CONNACKs get read
            await asyncio.sleep(max(0.0, t0 + k * period / slots - loop.time()))
        sent.value = n
        for d in devs:
            if d.transport is not None:
                d.transport.close()

    asyncio.run(run())


class Load:
    """``procs`` generator processes sharing the device tokens."""

    def __init__(self, host, port, tokens, level, qos, rate_hz, procs=2, send_attrs=True, zones=("Zone A",)):
        self.stop = mp.Event()
        self.connected = [mp.Value("i", 0, lock=False) for _ in range(procs)]
        self.sent = [mp.Value("q", 0, lock=False) for _ in range(procs)]
        self.procs = [mp.Process(target=worker_main, args=(host, port, tokens[i::procs], level, qos, rate_hz,
                                                             self.stop, self.connected[i], self.sent[i],
                                                             send_attrs, list(zones)), daemon=True)
                      for i in range(procs)]
        for p in self.procs:
            p.start()

    def n_connected(self) -> int:
        return sum(v.value for v in self.connected)

    def n_sent(self) -> int:
        return sum(v.value for v in self.sent)

    def close(self):
        self.stop.set()
        for p in self.procs:
            p.join(20)
            if p.is_alive():
                p.kill()


# ---------------------------------------------------------------------------------- services

def rest(url: str) -> TbRestClient:
    """The project's REST client as the tenant (a backlogged platform answers slowly: 60 s)."""
    return TbRestClient(url, *TENANT, timeout_s=60)


def forwarding_chain(bootstrap: str, topic: str, dtype: str, producer: dict | None = None) -> dict:
    """The project's forwarding chain (tbspark/thingsboard/rulechain.py) for devices of type
    ``dtype`` into ``topic``; ``producer`` overrides Kafka node fields (linger, batchSize,
    otherProperties). Returns ThingsBoard's import JSON {"ruleChain", "metadata"}."""
    sc = parse_scenario(f"""
name: bench-mqtt-{dtype}
kafka: {{topic: {topic}}}
devices:
  - {{name: {dtype}, type: {dtype}, zone: Zone A, telemetry: {{windSpeed: {{kind: constant, value: 1, rate_hz: 1}}}}}}
""")
    chain = build_rule_chain(sc, bootstrap)
    for node in chain["metadata"]["nodes"]:
        if node["type"].endswith(".kafka.TbKafkaNode"):
            node["configuration"].update(producer or {})
    return chain


def provision(tb: TbRestClient, n: int, dtype: str, bootstrap: str | None = None, topic: str | None = None,
              producer: dict | None = None) -> list[str]:
    tokens = []
    for i in range(n):
        tok = uuid.uuid4().hex
        tb.save_device({"name": f"{dtype} {i}", "type": dtype}, access_token=tok)
        tokens.append(tok)
    if topic is None:
        return tokens
    wanted = forwarding_chain(bootstrap, topic, dtype, producer)
    chain = tb.save_rule_chain(wanted["ruleChain"])
    tb.save_rule_chain_metadata(dict(wanted["metadata"], ruleChainId=chain["id"]))
    profile = tb.get_device_profile_by_name(dtype)
    profile["defaultRuleChainId"] = chain["id"]
    tb.save_device_profile(profile)
    return tokens


# ---------------------------------------------------------------------------------- measurement

def measure(server: psutil.Process, received, windows: int, window_s: float) -> list[dict]:
    out = []
    for _ in range(windows):
        c0, m0, t0 = cpu_seconds(server.pid), received(), time.monotonic()
        time.sleep(window_s)  # a measurement interval, not a wait for a service
        c1, m1, t1 = cpu_seconds(server.pid), received(), time.monotonic()
        out.append({"msgs_per_s": (m1 - m0) / (t1 - t0), "cpu_util": (c1 - c0) / (t1 - t0),
                    "msgs_per_cpu_s": (m1 - m0) / max(c1 - c0, 1e-9)})
    return out


def summary(name: str, rows: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    per_batch = f"{med['per_batch']:>6,.0f} msg/batch   " if "per_batch" in med else ""
    print(f"{name:42s} {med['msgs_per_cpu_s']:>10,.0f} msg/CPU-s   {med['msgs_per_s']:>8,.0f} msg/s   "
          f"CPU {med['cpu_util'] * 100:5.0f} %   {per_batch}"
          + (f"broker {med['broker_us_per_record']:.1f} us/record + platform "
             f"{1e6 / med['msgs_per_cpu_s']:.1f} us/msg   " if "broker_us_per_record" in med else "")
          + "(windows: "
          + ", ".join(f"{r['msgs_per_cpu_s']:,.0f}" for r in rows) + ")", flush=True)
    return med


def platform_load(info, server, tokens, level, qos, args, broker=None) -> dict:
    """One row per run: the load runs ``window_s`` after warm-up, then stops, and the window closes
    only when the platform has processed everything it received (queue empty), so the messages
    counted and the CPU time measured belong together even though the platform works in batches."""
    operator = rest(info["url"])  # /tbspark/stats takes the tenant's JWT, like /api
    stats = lambda: operator.request("GET", "/tbspark/stats")  # noqa: E731
    queued = lambda: stats()["mqtt"]["queued"]  # noqa: E731
    rows = []
    for _ in range(args.windows):
        wait_until(lambda: queued() == 0, 600, "the previous run's queue to drain", poll_s=0.1)
        load = Load("127.0.0.1", info["mqtt_port"], tokens, level, qos, args.rate_hz, procs=args.procs)
        try:
            wait_until(lambda: load.n_connected() >= len(tokens), 300, "all devices to connect", poll_s=0.1)
            time.sleep(args.warmup_s)  # warm-up interval before measuring
            s0, c0, t0 = stats(), cpu_seconds(server.pid), time.monotonic()
            b0 = cpu_seconds(broker.pid) if broker is not None else 0.0
            time.sleep(args.window_s)  # the measured load interval
            s1, t1 = stats(), time.monotonic()
        finally:
            load.close()
        wait_until(lambda: queued() == 0, 600, "the platform to process what it received", poll_s=0.1)
        if broker is not None:  # the records of this window reach the broker (delivered) before its CPU is read
            wait_until(lambda: not any(n.get("in_flight") for n in stats()["engine"]["nodes"]), 120,
                       "the Kafka deliveries", poll_s=0.1)
        s2, c2 = stats(), cpu_seconds(server.pid)
        b2 = cpu_seconds(broker.pid) if broker is not None else 0.0
        processed = s2["engine"]["messages_in"] - s0["engine"]["messages_in"]
        rows.append({"msgs_per_cpu_s": processed / max(c2 - c0, 1e-9),
                     "msgs_per_s": (s1["mqtt"]["messages"] - s0["mqtt"]["messages"]) / (t1 - t0),
                     "cpu_util": (c2 - c0) / (time.monotonic() - t0),
                     # messages per engine batch: the per-batch costs are spread over this many
                     "per_batch": processed / max(s2["mqtt"]["batches"] - s0["mqtt"]["batches"], 1)})
        if broker is not None:  # Kafka broker CPU per forwarded record, same interval
            fwd_n = s2["engine"]["forwarded"] - s0["engine"]["forwarded"]
            rows[-1]["broker_us_per_record"] = (b2 - b0) / max(fwd_n, 1) * 1e6
    s = stats()
    med = summary(f"platform  MQTT {'5' if level == 5 else '3.1.1'} QoS {qos}", rows)
    med["forwarded_total"] = s["engine"]["forwarded"]
    med["failed_total"] = s["engine"]["failed"]
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=3000)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=8.0)
    ap.add_argument("--warmup-s", type=float, default=4.0)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--skip-mosquitto", action="store_true")
    ap.add_argument("--linger", type=int, default=0, help="Kafka node linger (ms); the tutorial chain uses 20")
    ap.add_argument("--batch-size", type=int, default=16384, help="Kafka node batchSize; the tutorial uses 65536")
    ap.add_argument("--compression", default=None, help="Kafka node otherProperties compression.type (e.g. lz4)")
    ap.add_argument("--broker-cpu", action="store_true",
                    help="also measure the Kafka broker's CPU per forwarded record (waits for deliveries)")
    args = ap.parse_args()
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    results: dict = {"devices": args.devices, "rate_hz": args.rate_hz}
    from tbspark.stack.kafka import ensure_topic, start_broker, stop_pid
    from tbspark.state import StateDir

    broker = start_broker(StateDir(work / "kafka"), port=0)
    plat = None
    try:
        topic = "weather-" + uuid.uuid4().hex[:6]
        ensure_topic(broker.bootstrap, topic, 1)
        plat = start_platform(work / "platform", timeout_s=60, log_name="platform.log", preexec_fn=raise_fd_limit)
        info = {"url": plat.url, "mqtt_port": plat.mqtt_port}
        server = psutil.Process(plat.pid)
        tb = rest(plat.url)
        t0 = time.monotonic()
        producer = {"linger": args.linger, "batchSize": args.batch_size,
                    "otherProperties": {"compression.type": args.compression} if args.compression else {}}
        tokens = provision(tb, args.devices, "WeatherStation", broker.bootstrap, topic, producer)
        print(f"provisioned {args.devices} devices in {time.monotonic() - t0:.1f} s", flush=True)
        # memory per idle connection first, on a process that has not yet carried load
        idle_tokens = provision(tb, args.idle, "IdleSensor") if args.idle else []
        if idle_tokens:
            time.sleep(1)
            rss0 = server.memory_info().rss
            load = Load("127.0.0.1", info["mqtt_port"], idle_tokens, 5, 0, 0, procs=args.procs, send_attrs=False)
            try:
                wait_until(lambda: load.n_connected() >= len(idle_tokens), 300, "idle devices to connect", poll_s=0.1)
                time.sleep(2)
                rss1 = server.memory_info().rss
            finally:
                load.close()
            per = (rss1 - rss0) / len(idle_tokens)
            results["platform_idle_bytes_per_conn"] = per
            print(f"platform  idle connections: {len(idle_tokens)}  RSS +{(rss1 - rss0) / 2**20:.1f} MiB  "
                  f"= {per / 1024:.1f} KiB per connection", flush=True)
        for qos in (0, 1):
            results[f"platform_qos{qos}"] = platform_load(info, server, tokens, 5, qos, args,
                                                          psutil.Process(broker.pid) if args.broker_cpu else None)
    finally:
        if plat is not None:
            plat.stop(timeout_s=30)
        stop_pid(broker.pid, 10)
    if not args.skip_mosquitto:
        started = start_mosquitto(work)
        if started is None:
            print("mosquitto: not installed (apt-get install -y mosquitto) — reference skipped")
        else:
            mproc, mport = started
            try:
                mserver = psutil.Process(mproc.pid)
                fake = [uuid.uuid4().hex for _ in range(args.devices)]
                for qos in (0, 1):
                    load = Load("127.0.0.1", mport, fake, 5, qos, args.rate_hz, procs=args.procs)
                    try:
                        wait_until(lambda: load.n_connected() >= len(fake), 120, "mosquitto clients", poll_s=0.1)
                        time.sleep(args.warmup_s)
                        rows = measure(mserver, load.n_sent, args.windows, args.window_s)
                    finally:
                        load.close()
                    results[f"mosquitto_qos{qos}"] = summary(f"mosquitto MQTT 5 QoS {qos} (plain broker)", rows)
                rss0 = mserver.memory_info().rss
                idle = [uuid.uuid4().hex for _ in range(args.idle)]
                load = Load("127.0.0.1", mport, idle, 5, 0, 0, procs=args.procs, send_attrs=False)
                try:
                    wait_until(lambda: load.n_connected() >= len(idle), 180, "mosquitto idle clients", poll_s=0.1)
                    time.sleep(2)
                    per = (mserver.memory_info().rss - rss0) / len(idle)
                finally:
                    load.close()
                results["mosquitto_idle_bytes_per_conn"] = per
                print(f"mosquitto idle connections: {len(idle)} = {per / 1024:.1f} KiB per connection")
            finally:
                stop(mproc)
    print(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
