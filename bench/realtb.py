"""Side by side on this machine: the same fleet through real ThingsBoard CE and through the embedded
platform — tutorial chain → Kafka, QoS 0, exact verification of every window.

    .venv/bin/python bench/realtb.py [--target thingsboard|embedded|both] [--devices 1000]
        [--rate-hz 5] [--duration 60] [--runs 3] [--search] [--zones 10]

Real ThingsBoard: TB_URL / TB_MQTT_HOST / TB_MQTT_PORT name it (`tools/real-thingsboard.sh up`
prints them; its process ids come from TB_STATE_DIR, default .tbspark/real-thingsboard). tbspark's
own Kafka broker (`stack up --no-platform`) receives what ThingsBoard's Kafka node produces. The
embedded target runs the local stack (Kafka + platform) as `make demo` does.

Per run it measures:
  sent, in_kafka        messages the simulator sent; records the chain put into the topic
  sent_msg_per_s        sent / simulation seconds
  verified              `tbspark verify` held exactly (every window) within the settle time
  kept_up               the last window was final within one window + two triggers of the end
  sustained_msg_per_s   sent_msg_per_s when verified and kept up, else 0
  platform_cpu_s        user+system CPU of the platform's processes during the run (ThingsBoard's
                        JVM + every PostgreSQL process; the embedded platform's process)
  us_per_msg            platform_cpu_s / sent, in microseconds
  platform_rss_mb       the platform's resident memory at the end of the run (JVM + PostgreSQL)
and once per target: provision_s (creating the fleet's devices, attributes, assets, the chain).
--search bisects the per-device rate for the highest that still verifies and keeps up.
The last line printed is one JSON object with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from tbspark.testing.cpu import CpuMeter
from tbspark.testing.pipeline import Pipeline, keep_up_limit_s

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 180


def fleet_yaml(path: Path, target: str, devices: int, zones: int, rate_hz: float, duration_s: float,
               tag: str) -> Path:
    doc = {
        "name": f"bench-realtb-{target}-{tag}",
        "platform": {"kind": "thingsboard" if target == "thingsboard" else "embedded"},
        "kafka": {"topic": f"bench-realtb-{tag}", "partitions": 2},
        "devices": [{"name": f"RTB {tag} {{i:05d}}", "count": devices, "type": "WeatherStation",
                     "zones": {"count": zones, "name": f"RTB {tag} zone {{j}}"},
                     "telemetry": {"windSpeed": {"kind": "uniform_int", "min": 10, "max": 60,
                                                 "rate_hz": rate_hz}}}],
        "simulation": {"duration_s": duration_s, "qos": 0, "timestamps": "device"},
        "aggregation": {"window_s": 10, "watermark_s": 5, "trigger_s": 3},
        "expectations": {"exact": True},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def with_rate(src: Path, rate_hz: float, duration_s: float) -> Path:
    doc = yaml.safe_load(src.read_text())
    doc["devices"][0]["telemetry"]["windSpeed"]["rate_hz"] = rate_hz
    doc["simulation"]["duration_s"] = duration_s
    out = src.with_name(f"{src.stem}-{rate_hz:g}hz.yaml")
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def thingsboard_pids() -> list[int]:
    """ThingsBoard's JVM and PostgreSQL's postmaster, from tools/real-thingsboard.sh's state."""
    state = Path(os.environ.get("TB_STATE_DIR", REPO / ".tbspark" / "real-thingsboard"))
    pids = []
    for name in ("thingsboard", "postgres"):
        f = state / f"{name}.pid"
        if f.exists():
            pids.append(int(f.read_text().split()[0]))
    if len(pids) < 2:
        raise SystemExit(f"ThingsBoard's PIDs are not in {state}: set TB_STATE_DIR to the state "
                         "directory of tools/real-thingsboard.sh")
    return pids


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def one_run(p: Pipeline, scenario: Path, pids: list[int], duration_s: float) -> dict:
    from tbspark.delivery import end_offsets

    sc_doc = yaml.safe_load(scenario.read_text())
    window_s = sc_doc["aggregation"]["window_s"]
    bootstrap = p.services["kafka"]["bootstrap"]
    topic = sc_doc["kafka"]["topic"]
    before = end_offsets(bootstrap, topic) or {}
    meters = [CpuMeter(pid) for pid in pids]
    for m in meters:
        m.start()
    since_ms = int(time.time() * 1000)
    sim = p.spawn("simulate", "simulate", str(scenario), "--state-dir", str(p.state.root),
                  "--duration", f"{duration_s:g}s", "--seed", "7", "--json")
    t0 = time.monotonic()
    while sim.alive():
        for m in meters:
            m.sample()
        time.sleep(1.0)  # CPU sampling interval while the simulation runs
    sim_end = time.time()
    report = sim.json_output()
    sent, elapsed = report["sent"], report["elapsed_s"]
    verdict, held_at = p.wait_verified(SETTLE_S, since_ms=since_ms)
    cpu = sum(m.total() for m in meters)
    after = end_offsets(bootstrap, topic) or {}
    in_kafka = sum(v - before.get(k, 0) for k, v in after.items())
    kept_up = held_at is not None and held_at - sim_end <= keep_up_limit_s(window_s, 3.0)
    rate = sent / elapsed if elapsed else 0.0
    return {"sent": sent, "in_kafka": in_kafka, "sim_elapsed_s": round(elapsed, 1),
            "sent_msg_per_s": round(rate), "verified": bool(verdict.holds),
            "windows": verdict.windows_verified,
            "final_after_s": round(held_at - sim_end, 1) if held_at else None,
            "kept_up": kept_up, "sustained_msg_per_s": round(rate) if kept_up else 0,
            "platform_cpu_s": round(cpu, 1), "us_per_msg": round(cpu / sent * 1e6, 1) if sent else None,
            "platform_rss_mb": round(rss_mb(pids)), "wall_s": round(time.monotonic() - t0, 1)}


def run_target(target: str, args: argparse.Namespace, root: Path) -> dict:
    tag = f"{int(time.time()) % 100000}"
    base = fleet_yaml(root / f"{target}.yaml", target, args.devices, args.zones, args.rate_hz,
                      args.duration, tag)
    p = Pipeline(base, root / f"state-{target}")
    p.up(platform=(target == "embedded"))
    saved_env = dict(os.environ)
    try:
        if target == "thingsboard":
            pids = thingsboard_pids()
            # ThingsBoard is reached through TB_URL; Kafka is this run's broker (provision runs
            # in this process, the job and the simulator are spawned with its environment).
            os.environ["KAFKA_BOOTSTRAP"] = p.services["kafka"]["bootstrap"]
        else:
            pids = [p.services["platform"]["pid"]]
            for name in ("KAFKA_BOOTSTRAP", "TB_URL", "TB_MQTT_HOST", "TB_MQTT_PORT"):
                os.environ.pop(name, None)  # the local stack's record names both
        t0 = time.monotonic()
        p.provision()
        provision_s = time.monotonic() - t0
        job = p.aggregator(nice=10)
        p.wait_job_running(job)
        runs = []

        def run_at(rate: float, i: int) -> dict:
            sc = with_rate(base, rate, args.duration)
            r = {"rate_hz": rate, **one_run(p, sc, pids, args.duration)}
            print(f"[{target}] run {i} at {rate:g} Hz: {json.dumps(r)}", flush=True)
            runs.append(r)
            return r

        if args.search:
            lo, hi = 0.0, args.rate_hz
            for i in range(args.search_steps):
                mid = (lo + hi) / 2 if i else hi
                r = run_at(round(mid, 2), i)
                if r["sustained_msg_per_s"]:
                    lo = mid
                    hi = hi * 2 if mid == hi else hi
                else:
                    hi = mid
        else:
            for i in range(args.runs):
                run_at(args.rate_hz, i)
        good = [r for r in runs if r["sustained_msg_per_s"]] or runs
        med = sorted(good, key=lambda r: r["sustained_msg_per_s"])[len(good) // 2]
        return {"target": target, "devices": args.devices, "provision_s": round(provision_s, 1),
                "median": med, "runs": runs,
                "median_us_per_msg": statistics.median(r["us_per_msg"] for r in runs if r["us_per_msg"])}
    finally:
        p.down()
        os.environ.clear()
        os.environ.update(saved_env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=("thingsboard", "embedded", "both"), default="both")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--zones", type=int, default=10)
    ap.add_argument("--rate-hz", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--search-steps", type=int, default=4)
    args = ap.parse_args(argv)
    targets = ["thingsboard", "embedded"] if args.target == "both" else [args.target]
    if "thingsboard" in targets and not os.environ.get("TB_URL"):
        raise SystemExit("set TB_URL (tools/real-thingsboard.sh up prints it) for the thingsboard target")
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-realtb-") as tmp:
        for target in targets:
            out.append(run_target(target, args, Path(tmp)))
    print(json.dumps({"bench": "realtb", "args": vars(args), "targets": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
