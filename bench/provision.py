"""Provisioning N devices (default 10,000) with their client attributes on the embedded platform
(issue 5 figure; target <= 60 s), then the idempotent second run. Each run starts a fresh
platform process on free ports (readiness: endpoint file + health), and stops it by PID.

    .venv/bin/python bench/provision.py [--devices 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tbspark.provision import provision  # noqa: E402
from tbspark.scenario import parse_scenario  # noqa: E402
from tbspark.settings import Connection  # noqa: E402
from tbspark.state import StateDir  # noqa: E402


def start_platform(state: Path) -> tuple[subprocess.Popen, dict]:
    log = open(state / "platform.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", "0",
                             "--mqtt-port", "0", "--state-dir", str(state)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = state / "platform" / "endpoint.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"platform exited: {(state / 'platform.log').read_text()[-2000:]}")
        try:
            info = json.loads(endpoint.read_text())
            if requests.get(info["url"] + "/tbspark/health", timeout=2).status_code == 200:
                return proc, info
        except (OSError, ValueError, requests.RequestException):
            pass
        time.sleep(0.05)  # readiness poll interval
    proc.kill()
    raise SystemExit("platform not ready in 60 s")


def stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def one_run(n: int) -> dict:
    sc = parse_scenario(f"""
name: bench-provision
devices:
  - name: "Turbine {{i:05d}}"
    count: {n}
    zones: {{count: 20, name: "Zone {{j}}"}}
    attributes: {{model: "V90", ratedPowerKw: 2000}}
    telemetry:
      windSpeed: {{kind: uniform_int, min: 30, max: 60, rate_hz: 1}}
""")
    with tempfile.TemporaryDirectory() as tmp:
        pstate = Path(tmp) / "platform-state"
        pstate.mkdir()
        proc, info = start_platform(pstate)
        try:
            conn = Connection(tb_url=info["url"], mqtt_host="127.0.0.1", mqtt_port=info["mqtt_port"],
                              kafka_bootstrap="127.0.0.1:9092")
            state = StateDir(Path(tmp) / "state")
            stages: dict[str, list[float]] = {}

            def progress(stage: str, done: int, total: int) -> None:
                now = time.monotonic()
                stages.setdefault(stage, [now, now])[1] = now

            plat = psutil.Process(proc.pid)
            p0 = sum(plat.cpu_times()[:2])
            c0, t0 = time.process_time(), time.monotonic()
            first = provision(sc, conn, state, progress=progress)
            platform_cpu = sum(plat.cpu_times()[:2]) - p0
            if os.environ.get("BENCH_STAGES"):
                print({k: round(v[1] - v[0], 1) for k, v in stages.items()}, flush=True)
            first_s, first_cpu = time.monotonic() - t0, time.process_time() - c0
            t1 = time.monotonic()
            second = provision(sc, conn, state)
            second_s = time.monotonic() - t1
        finally:
            stop(proc)
            if os.environ.get("BENCH_KEEP_LOG"):
                os.system(f"cp {pstate / 'platform.log'} /tmp/bench-provision-platform.log")
    assert first.created["devices"] == n and first.created["attributes"] == n
    assert not second.changed
    return {"first_s": first_s, "first_cpu_s": first_cpu, "platform_cpu_s": platform_cpu,
            "second_s": second_s, "load_avg_1m": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.devices)
        runs.append(r)
        print(f"run {i + 1}: first {r['first_s']:.1f} s (client CPU {r['first_cpu_s']:.1f} s, "
              f"platform CPU {r['platform_cpu_s']:.1f} s), second {r['second_s']:.1f} s, "
              f"machine load {r['load_avg_1m']:.1f}", flush=True)
    print(json.dumps({k: statistics.median(r[k] for r in runs) for k in runs[0]} |
                     {"devices": args.devices, "runs": len(runs)}))


if __name__ == "__main__":
    main()
