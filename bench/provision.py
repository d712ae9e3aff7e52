"""Provisioning N devices (default 10,000) with their client attributes on the embedded platform
(issue 5 figure; target <= 60 s), then the idempotent second run. Each run starts a fresh
platform process on free ports (readiness: endpoint file + health), and stops it by PID.

    .venv/bin/python bench/provision.py [--devices 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tbspark.provision import provision
from tbspark.scenario import parse_scenario
from tbspark.settings import Connection
from tbspark.state import StateDir
from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.platform import start_platform


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
        plat = start_platform(pstate, timeout_s=60, log_name="platform.log")
        try:
            conn = Connection(tb_url=plat.url, mqtt_host="127.0.0.1", mqtt_port=plat.mqtt_port,
                              kafka_bootstrap="127.0.0.1:9092")
            state = StateDir(Path(tmp) / "state")
            stages: dict[str, list[float]] = {}

            def progress(stage: str, done: int, total: int) -> None:
                now = time.monotonic()
                stages.setdefault(stage, [now, now])[1] = now

            p0 = cpu_seconds(plat.pid)
            c0, t0 = time.process_time(), time.monotonic()
            first = provision(sc, conn, state, progress=progress)
            platform_cpu = cpu_seconds(plat.pid) - p0
            if os.environ.get("BENCH_STAGES"):
                print({k: round(v[1] - v[0], 1) for k, v in stages.items()}, flush=True)
            first_s, first_cpu = time.monotonic() - t0, time.process_time() - c0
            t1 = time.monotonic()
            second = provision(sc, conn, state)
            second_s = time.monotonic() - t1
        finally:
            plat.stop(timeout_s=30)
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
