"""Simulator throughput and scale (issue 5 figures), against tbspark.simulate.sink — a counting
MQTT endpoint in its own process, so only the simulator's own CPU is measured.

  1. QoS 0, 3,000 device connections: messages per simulator CPU-second, the asyncio engine with
     its C hot path (tbspark/simulate/_fastsend.c) and with its pure-Python path
     (TBSPARK_SIM_ENGINE=python) side by side with the paho engine and with a bare paho publish
     loop, at the tutorial's 10 Hz per device and at an offered load above what one core can send
     (saturation).
  3. (--only ratio) the C send() floor (below) and both asyncio hot paths at 3,000 x 10 Hz,
     alternated run by run, so that a busy machine weighs on all alike: each engine's figure as a
     fraction of the floor measured right next to it.
  2. 10,000 device connections held by one simulator process at 1 Hz each.
  0. (first, seconds) the asyncio engine's hot path alone, send() replaced by len: the Python part
     of the CPU per message, without the system call; then the send() floor: a bare loop of one
     send() per message over 3,000 loopback connections, TCP_NODELAY on and off (--only floor), and
     the same loop in C (bench/send_floor.c, compiled with the system's cc), paced like the engine
     and back to back: the least any sender that keeps one packet per message pays per message here.

Each measurement runs in a fresh child process; figures are medians of --runs runs. Besides the
figure (messages ÷ the simulator's whole CPU, user + sys, all threads, connecting and closing
included), each line shows the CPU per message once every device is connected, the CPU spent
connecting them, the user share of the CPU, and the load average before → after each run (on a
shared machine only CPU figures compare).

    .venv/bin/python bench/simulator.py [--runs 3] [--quick] [--only hotpath|floor|throughput|ratio|hold]
"""

from __future__ import annotations

import argparse
import json
import os
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
mode, n, rate, dur, port, state_dir, gen = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
sc = parse_scenario(f"""
name: bench
devices:
  - name: "D {{i:05d}}"
    count: {n}
    zones: {{count: 10}}
    telemetry:
      windSpeed: {gen.replace("RATE", str(rate))}
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
    import os
    if mode in ("asyncio-c", "asyncio-python"):
        # The asyncio engine with its hot path forced (the C one must run: no silent fall-back).
        os.environ["TBSPARK_SIM_ENGINE"] = mode.split("-")[1]
        mode = "asyncio"
    from tbspark.simulate import simulate
    import psutil, threading
    peak = {"connected": 0, "rss": 0}
    def watch(stats):
        # About 4 times a second: the CPU spent until every device was connected, and the CPU
        # and messages from then on (the steady state, without connecting and closing).
        peak["connected"] = max(peak["connected"], stats.connected)
        cpu = time.process_time()
        if stats.connected >= n and "cpu_all" not in peak:
            peak["cpu_all"], peak["sent_all"], peak["t_all"] = cpu, stats.sent, time.monotonic()
        if "cpu_all" in peak and stats.connected >= n:
            peak["cpu_last"], peak["sent_last"], peak["t_last"] = cpu, stats.sent, time.monotonic()
    # A fixed measuring window (ramp + duration): an engine that cannot keep up stops there too,
    # instead of sending its whole quota late.
    stop = threading.Event()
    threading.Timer(n / 2000 + dur, stop.set).start()
    ru0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    r = simulate(sc, conn, state, duration_s=dur, engine=mode, progress=watch, stop=stop)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    rss = psutil.Process().memory_info().rss
    steady_n = peak.get("sent_last", 0) - peak.get("sent_all", 0)
    print(json.dumps({"hot_path": r.hot_path, "sent": r.sent, "cpu_s": r.cpu_s, "elapsed_s": r.elapsed_s, "expected": r.expected,
                      "errors": r.errors, "skipped": r.skipped, "connected": peak["connected"],
                      "rss_mb": rss / 2**20, "user_s": ru1.ru_utime - ru0.ru_utime,
                      "sys_s": ru1.ru_stime - ru0.ru_stime,
                      "connect_cpu_s": peak.get("cpu_all", cpu0) - cpu0,
                      "steady_us_per_msg": 1e6 * (peak.get("cpu_last", 0) - peak.get("cpu_all", 0)) / steady_n
                      if steady_n > 0 else None,
                      "steady_msg_per_s": steady_n / (peak["t_last"] - peak["t_all"])
                      if steady_n > 0 and peak["t_last"] > peak["t_all"] else None}))
'''


# The value generators a run can use: the tutorial's (integers as strings) and fleet-3000.yaml's
# (normal, one decimal, JSON numbers); RATE is replaced by the run's rate.
GENERATORS = {
    "tutorial": "{kind: uniform_int, min: 30, max: 60, rate_hz: RATE, send_as: string}",
    "fleet": "{kind: normal, mean: 42, stddev: 6, min: 0, max: 120, decimals: 1, rate_hz: RATE}",
}
GENERATOR = "tutorial"


def measure(mode: str, n: int, rate: float, dur: float) -> dict:
    load0 = os.getloadavg()[0]
    sink, port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([PY, "-c", CHILD, mode, str(n), str(rate), str(dur), str(port), tmp,
                                  GENERATORS[GENERATOR]],
                                 cwd=REPO, capture_output=True, text=True, timeout=dur * 10 + 300)
        if out.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        res_received = stop_sink(sink)
    res["received"] = res_received
    res["load"] = (load0, os.getloadavg()[0])
    res["msg_per_cpu_s"] = res["sent"] / res["cpu_s"] if res["cpu_s"] else 0.0
    res["msg_per_s"] = res["sent"] / res["elapsed_s"]
    return res


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def line(key: str, runs: list[dict]) -> dict:
    out = {"msg_per_cpu_s": median_of(runs, "msg_per_cpu_s"), "msg_per_s": median_of(runs, "msg_per_s"),
           "sent": median_of(runs, "sent"), "received": median_of(runs, "received"),
           "us_per_msg": 1e6 / median_of(runs, "msg_per_cpu_s"), "runs": len(runs),
           "load": [r["load"] for r in runs]}
    if all(r.get("steady_us_per_msg") for r in runs):
        out["steady_us_per_msg"] = median_of(runs, "steady_us_per_msg")
        out["connect_cpu_s"] = median_of(runs, "connect_cpu_s")
        out["user_share"] = median_of([{"u": r["user_s"] / (r["user_s"] + r["sys_s"])} for r in runs], "u")
    loads = ", ".join(f"{a:.1f}→{b:.1f}" for a, b in out["load"])
    extra = (f"  [after connecting: {out['steady_us_per_msg']:.1f} us/msg; connecting all: "
             f"{out['connect_cpu_s']:.2f} CPU-s; user {100 * out['user_share']:.0f} % of CPU]"
             if "steady_us_per_msg" in out else "")
    print(f"{key:<48} {out['msg_per_cpu_s']:>9,.0f} msg/CPU-s ({out['us_per_msg']:.1f} us/msg) "
          f"{out['msg_per_s']:>8,.0f} msg/s  sent {out['sent']:,.0f} received {out['received']:,.0f}"
          f"{extra}  load {loads}", flush=True)
    return out


HOTPATH = r'''
import os, time
os.environ["TBSPARK_SIM_ENGINE"] = "python"  # fake connections (send = len): the Python path only
from tbspark.scenario import parse_scenario
from tbspark.simulate.aio_engine import AioEngine
from tbspark.simulate.fleet import Fleet, RunConfig, Stats, build_devices
from tbspark.simulate.groundtruth import GroundTruth
sc = parse_scenario("""
name: bench
devices:
  - name: "D {i:05d}"
    count: 3000
    zones: {count: 10}
    telemetry:
      windSpeed: {kind: uniform_int, min: 30, max: 60, rate_hz: 10, send_as: string}
""")
specs = sc.expand_devices()
gt = GroundTruth("bench", 10, "device", "windSpeed")
for s in specs:
    gt.add_device(s.name, s.zone)
fleet = Fleet(build_devices(specs, {s.name: "t" for s in specs}, "windSpeed", 1),
              RunConfig("h", 1, 0, "device", 1000, None, 100.0), gt, Stats())
engine = AioEngine(fleet)
class Conn:  # a connection whose send() takes everything at no cost
    pending = b""
    send = staticmethod(len)
t0 = time.monotonic()
for d in fleet.devices:
    fleet.set_conn(d, Conn())
    fleet.start_device(d, t0)
now, c0 = t0, time.process_time()
while fleet.stats.sent < 300_000:
    now += 0.005  # the engine's wake-up floor
    engine._send_due(now)
print(1e6 * (time.process_time() - c0) / fleet.stats.sent)
'''


def hotpath() -> float:
    """CPU per message of the asyncio engine's hot path alone (schedule, values, packet, ground
    truth; send() replaced by len): 3,000 devices at 10 Hz, 300,000 messages, no sockets."""
    out = subprocess.run([PY, "-c", HOTPATH], cwd=REPO, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"hot path failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


FLOOR = r'''
import json, socket, sys, time, resource
from tbspark.mqtt import codec
port, n, rounds = int(sys.argv[1]), 3000, 20
pkt = codec.encode_publish("v1/devices/me/telemetry", b'{"ts":1700000000000,"values":{"windSpeed":"42"}}', 0)
fleets = {}
for nodelay in (1, 0):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
        s.setblocking(False)
        s.sendall(codec.encode_connect(client_id=f"f{nodelay}-{i}", username=f"t{i}", keep_alive=60))
        socks.append(s)
    fleets[nodelay] = socks
for socks in fleets.values():  # readiness: every session's CONNACK (4 bytes) is in
    for s in socks:
        s.settimeout(10)
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                raise SystemExit("the sink closed a connection")
            got += chunk
        s.setblocking(False)
res = {1: [], 0: []}
for rep in range(3):  # alternated, so both options see the same machine
    for nodelay, socks in fleets.items():
        sends = [s.send for s in socks]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(rounds):
            for send in sends:
                send(pkt)
            time.sleep(0.01)  # like the engine: a round of sends per wake-up
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        k = rounds * n
        res[nodelay].append(((r1.ru_utime - r0.ru_utime) * 1e6 / k, (r1.ru_stime - r0.ru_stime) * 1e6 / k))
for socks in fleets.values():
    for s in socks:
        s.close()
print(json.dumps({"nodelay_on": res[1], "nodelay_off": res[0]}))
'''


def floor() -> dict:
    """The floor the engine is bound by: a bare loop of one send() of the bench's packet per
    message, round robin over 3,000 loopback connections into the sink, with TCP_NODELAY on (what
    the engine sets) and off. Returns µs of (user, sys) CPU per send() for each, 3 alternated repetitions each."""
    sink, port = start_sink()
    try:
        out = subprocess.run([PY, "-c", FLOOR, str(port)], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    finally:
        stop_sink(sink)
    if out.returncode != 0:
        raise SystemExit(f"send() floor failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def c_floor(seconds: float = 10.0) -> dict | None:
    """The same floor without Python: bench/send_floor.c, compiled here with the system's C
    compiler (None when there is none), one send() per PUBLISH over 3,000 connections into the sink,
    paced like the engine (10 Hz per connection, 5 ms wake-ups) and back to back."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = build_floor(Path(tmp))
        if built is None:
            return None
        for mode in ("paced", "burst"):
            out[mode] = [run_floor(*built, mode, seconds) for _ in range(3)]
    return out


def build_floor(tmp: Path) -> tuple[Path, Path] | None:
    """bench/send_floor.c compiled, and its packets file (None without a C compiler)."""
    import shutil
    import struct
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    from tbspark.mqtt import codec
    exe, packets = tmp / "send_floor", tmp / "packets.bin"
    subprocess.run([cc, "-O2", "-o", str(exe), str(REPO / "bench" / "send_floor.c")], check=True)
    pub = codec.encode_publish("v1/devices/me/telemetry",
                               b'{"ts":1700000000000,"values":{"windSpeed":"42"}}', 0)
    with packets.open("wb") as f:
        f.write(struct.pack("=II", 3000, len(pub)) + pub)
        for i in range(3000):
            con = codec.encode_connect(client_id=f"c{i}", username=f"t{i}", keep_alive=60)
            f.write(struct.pack("=I", len(con)) + con)
    return exe, packets


def run_floor(exe: Path, packets: Path, mode: str, seconds: float) -> dict:
    sink, port = start_sink()
    try:
        res = subprocess.run([str(exe), str(port), str(packets), mode, str(seconds)],
                             capture_output=True, text=True, timeout=300)
    finally:
        stop_sink(sink)
    if res.returncode != 0:
        raise SystemExit(f"send_floor failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["msg_per_cpu_s"] = 1e6 / (out["user_us_per_send"] + out["sys_us_per_send"])
    return out


def ratio(runs: int, dur: float) -> dict | None:
    """The C floor (paced) and the asyncio engine's two hot paths at 3,000 x 10 Hz, alternated:
    messages per CPU-second of each, and each engine's as a fraction of the floor's of the same
    round."""
    rows: dict[str, list] = {"C floor": [], "asyncio-c": [], "asyncio-python": [],
                             "asyncio-c steady": [], "asyncio-python steady": []}
    with tempfile.TemporaryDirectory() as tmp:
        built = build_floor(Path(tmp))
        if built is None:
            print("ratio: skipped (no C compiler)", flush=True)
            return None
        for k in range(runs):
            fl = run_floor(*built, "paced", dur)
            rows["C floor"].append(fl["msg_per_cpu_s"])
            figures = [f"C floor {fl['msg_per_cpu_s']:,.0f}"]
            for mode in ("asyncio-c", "asyncio-python"):
                r = measure(mode, 3000, 10.0, dur)
                rows[mode].append(r["msg_per_cpu_s"])
                # Once every device is connected (connecting 3,000 sessions is not per message).
                steady = 1e6 / r["steady_us_per_msg"] if r.get("steady_us_per_msg") else 0.0
                rows[mode + " steady"].append(steady)
                figures.append(f"{mode} {r['msg_per_cpu_s']:,.0f} "
                               f"({r['msg_per_cpu_s'] / fl['msg_per_cpu_s']:.2f} of the floor; "
                               f"all connected: {steady:,.0f} = "
                               f"{steady / fl['msg_per_cpu_s']:.2f} of the floor; "
                               f"sent {r['sent']:,} received {r['received']:,}; load "
                               f"{r['load'][0]:.1f}→{r['load'][1]:.1f})")
            print(f"round {k + 1}: msg/CPU-s " + "; ".join(figures), flush=True)
    out = {key: statistics.median(v) for key, v in rows.items()}
    for mode in ("asyncio-c", "asyncio-python", "asyncio-c steady", "asyncio-python steady"):
        fr = statistics.median(a / b for a, b in zip(rows[mode], rows["C floor"]))
        out[f"{mode} / C floor"] = fr
        print(f"{mode + ' / C floor (median of rounds)':<48} {fr:.2f}  ({out[mode]:,.0f} vs "
              f"{out['C floor']:,.0f} msg/CPU-s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the bench)")
    ap.add_argument("--only", choices=("throughput", "hold", "hotpath", "floor", "ratio"),
                    help="run one part")
    ap.add_argument("--generator", choices=sorted(GENERATORS), default="tutorial",
                    help="the fleet's windSpeed generator: the tutorial's integers as strings "
                         "(default) or fleet-3000.yaml's normal numbers with one decimal")
    ap.add_argument("--engines", default="asyncio-c,asyncio-python,paho,bare-paho",
                    help="comma-separated engines of the throughput part")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    global GENERATOR
    GENERATOR = args.generator
    dur = 5.0 if args.quick else 20.0
    results = {}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs); figures are medians of {args.runs} runs; msg/CPU-s counts the "
          f"simulator's whole CPU (user+sys, all threads, connecting and closing included)", flush=True)
    if args.only in (None, "hotpath"):
        runs = [hotpath() for _ in range(args.runs)]
        results["Python hot path alone (no system calls)"] = {"us_per_msg": statistics.median(runs)}
        print(f"{'Python hot path alone (send() = len, no sockets)':<48} {statistics.median(runs):.2f} us/msg "
              f"(runs: {', '.join(f'{r:.2f}' for r in runs)})", flush=True)
    if args.only in (None, "floor"):
        fl = floor()
        results["send() floor, us/send (user, sys)"] = fl
        for key, runs in fl.items():
            tot = [u + s for u, s in runs]
            print(f"{'bare send() loop, TCP_NODELAY ' + key.split('_')[1]:<48} {statistics.median(tot):.2f} "
                  f"us/send (runs: {', '.join(f'{u:.2f}+{s:.2f}' for u, s in runs)} user+sys)", flush=True)
        cfl = c_floor(5.0 if args.quick else 10.0)
        if cfl is None:
            print("C send() floor: skipped (no C compiler)", flush=True)
        else:
            results["C send() floor"] = cfl
            for mode, runs in cfl.items():
                tot = [r["user_us_per_send"] + r["sys_us_per_send"] for r in runs]
                med = statistics.median(tot)
                each = ", ".join("%.2f+%.2f" % (r["user_us_per_send"], r["sys_us_per_send"]) for r in runs)
                print(f"{'C send() loop, ' + mode + ' (no Python)':<48} {med:.2f} us/send = "
                      f"{1e6 / med:,.0f} sends per CPU-s (runs: {each} user+sys; short sends "
                      f"{sum(r['short_sends'] for r in runs)})", flush=True)
    if args.only in (None, "throughput"):
        for label, rate in (("10 Hz/device", 10.0), ("saturation (100 Hz/device offered)", 100.0)):
            for mode in engines:
                if mode == "bare-paho" and rate > 10:
                    continue  # a bare loop has no schedule to saturate: measured at 10 Hz only
                key = f"{label} {mode}"
                results[key] = line(key, [measure(mode, 3000, rate, dur) for _ in range(args.runs)])
    if args.only in (None, "ratio"):
        results["C engine vs C floor"] = ratio(args.runs, dur)
    if args.only in (None, "hold"):
        hold = [measure("asyncio", 10000, 1.0, 15.0 if args.quick else 60.0) for _ in range(args.runs)]
        results["10k connections at 1 Hz (asyncio)"] = {
            "connected": median_of(hold, "connected"), "sent": median_of(hold, "sent"),
            "expected": median_of(hold, "expected"), "received": median_of(hold, "received"),
            "cpu_s": median_of(hold, "cpu_s"), "elapsed_s": median_of(hold, "elapsed_s"),
            "rss_mb": median_of(hold, "rss_mb"), "runs": len(hold),
            "msg_per_s_all_connected": statistics.median(r["steady_msg_per_s"] or 0 for r in hold),
            "load": [r["load"] for r in hold]}
        print("10k connections at 1 Hz:", json.dumps(results["10k connections at 1 Hz (asyncio)"]))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
