"""Simulator throughput and scale (issue 5 figures), against tbspark.simulate.sink — a counting
MQTT endpoint in its own process, so only the simulator's own CPU is measured.

  1. QoS 0, 3,000 device connections: messages per simulator CPU-second, the asyncio engine side by
     side with the paho engine and with a bare paho publish loop, at the tutorial's 10 Hz per device
     and at an offered load above what one core can send (saturation).
  2. 10,000 device connections held by one simulator process at 1 Hz each.

Each measurement runs in a fresh child process; figures are medians of --runs runs.

    .venv/bin/python bench/simulator.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def start_sink() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([PY, "-m", "tbspark.simulate.sink", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the sink prints its port once it listens (readiness)
    return proc, int(line.split()[1])


def stop_sink(proc: subprocess.Popen) -> int:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])["received"]


CHILD = r'''
import json, sys, time, resource
from pathlib import Path
from tbspark.scenario import parse_scenario
from tbspark.settings import Connection
from tbspark.state import StateDir, write_json_atomic
mode, n, rate, dur, port, state_dir = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sc = parse_scenario(f"""
name: bench
devices:
  - name: "D {{i:05d}}"
    count: {n}
    zones: {{count: 10}}
    telemetry:
      windSpeed: {{kind: uniform_int, min: 30, max: 60, rate_hz: {rate}, send_as: string}}
simulation: {{qos: 0, ramp_per_s: 2000, timestamps: device}}
""")
state = StateDir(Path(state_dir)).ensure()
specs = sc.expand_devices()
write_json_atomic(state.provision_file, {"scenario": "bench", "complete": True, "devices": {
    s.name: {"id": "x", "token": f"t{i}", "type": s.type, "zone": s.zone} for i, s in enumerate(specs)}})
conn = Connection(mqtt_host="127.0.0.1", mqtt_port=port)
if mode == "bare-paho":
    # The plain loop a paho user writes: connect every client, then publish round after round,
    # each publish written at once (no network thread), for the same duration.
    import paho.mqtt.client as paho, socket
    from paho.mqtt.enums import CallbackAPIVersion
    clients = []
    for i in range(n):
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"b{i}", protocol=paho.MQTTv311)
        c.username_pw_set(f"t{i}")
        c.connect("127.0.0.1", port, keepalive=60)
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(c)
    for c in clients:
        c.loop_read()
    import random
    rng = random.Random(1)
    c0, t0, sent = time.process_time(), time.monotonic(), 0
    period = 1.0 / rate
    nxt = t0
    while time.monotonic() - t0 < dur:
        for c in clients:
            if time.monotonic() - t0 >= dur:
                break
            ts = int(time.time() * 1000)
            c.publish("v1/devices/me/telemetry", json.dumps({"ts": ts, "values": {"windSpeed": str(rng.randint(30, 60))}}), qos=0)
            sent += 1
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    print(json.dumps({"sent": sent, "cpu_s": cpu, "elapsed_s": wall, "connected": n}))
else:
    from tbspark.simulate import simulate
    import psutil, threading
    peak = {"connected": 0, "rss": 0}
    def watch(stats):
        peak["connected"] = max(peak["connected"], stats.connected)
    # A fixed measuring window (ramp + duration): an engine that cannot keep up stops there too,
    # instead of sending its whole quota late.
    stop = threading.Event()
    threading.Timer(n / 2000 + dur, stop.set).start()
    r = simulate(sc, conn, state, duration_s=dur, engine=mode, progress=watch, stop=stop)
    rss = psutil.Process().memory_info().rss
    print(json.dumps({"sent": r.sent, "cpu_s": r.cpu_s, "elapsed_s": r.elapsed_s, "expected": r.expected,
                      "errors": r.errors, "skipped": r.skipped, "connected": peak["connected"],
                      "rss_mb": rss / 2**20}))
'''


def measure(mode: str, n: int, rate: float, dur: float) -> dict:
    sink, port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([PY, "-c", CHILD, mode, str(n), str(rate), str(dur), str(port), tmp],
                                 cwd=REPO, capture_output=True, text=True, timeout=dur * 10 + 300)
        if out.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        res_received = stop_sink(sink)
    res["received"] = res_received
    res["msg_per_cpu_s"] = res["sent"] / res["cpu_s"] if res["cpu_s"] else 0.0
    res["msg_per_s"] = res["sent"] / res["elapsed_s"]
    return res


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the bench)")
    args = ap.parse_args()
    dur = 5.0 if args.quick else 20.0
    results = {}
    for label, rate in (("10 Hz/device", 10.0), ("saturation (100 Hz/device offered)", 100.0)):
        for mode in ("asyncio", "paho", "bare-paho"):
            if mode == "bare-paho" and rate > 10:
                continue  # a bare loop has no schedule to saturate: measured at 10 Hz only
            runs = [measure(mode, 3000, rate, dur) for _ in range(args.runs)]
            key = f"{label} {mode}"
            results[key] = {"msg_per_cpu_s": median_of(runs, "msg_per_cpu_s"),
                            "msg_per_s": median_of(runs, "msg_per_s"),
                            "sent": median_of(runs, "sent"),
                            "received": median_of(runs, "received"),
                            "runs": len(runs)}
            print(f"{key:<55} {results[key]['msg_per_cpu_s']:>10,.0f} msg/CPU-s  "
                  f"{results[key]['msg_per_s']:>10,.0f} msg/s  sent {results[key]['sent']:,.0f} "
                  f"received {results[key]['received']:,.0f}", flush=True)
    hold = [measure("asyncio", 10000, 1.0, 15.0 if args.quick else 60.0) for _ in range(args.runs)]
    results["10k connections at 1 Hz (asyncio)"] = {
        "connected": median_of(hold, "connected"), "sent": median_of(hold, "sent"),
        "expected": median_of(hold, "expected"), "received": median_of(hold, "received"),
        "cpu_s": median_of(hold, "cpu_s"), "elapsed_s": median_of(hold, "elapsed_s"),
        "rss_mb": median_of(hold, "rss_mb"), "runs": len(hold)}
    print("10k connections at 1 Hz:", json.dumps(results["10k connections at 1 Hz (asyncio)"]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
