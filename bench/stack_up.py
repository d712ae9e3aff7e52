"""Benchmark: `tbspark stack up` until the broker answers, median of N runs, beside Kafka's own launch.

    .venv/bin/python bench/stack_up.py [--runs 5] [--write-docs]

Measures, each in a fresh temporary state dir on free ports:
  cold     `tbspark stack up --no-platform` on an empty state dir (includes formatting the storage)
  warm     the same on a state dir that was formatted before (the everyday restart)
  platform `tbspark stack up` with the embedded platform (when `tbspark platform serve` exists)
  ref      the reference: the bare broker as Kafka's kafka-server-start.sh runs it (its default
           -Xmx1G -Xms1G and G1 flags, same jars, same config, storage already formatted), timed to
           the first answered metadata request — the floor our wrapper adds to.
Times are wall clock from launching the command to its return (to readiness for the reference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tbspark.stack import jvm, kafka
from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent

TBSPARK = [sys.executable, "-m", "tbspark"]
KAFKA_SCRIPT_OPTS = ["-Xmx1G", "-Xms1G", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                     "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                     "-Djava.awt.headless=true"]


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds of `stack up --json`, and the CPU seconds spent to get there: the CLI (and the
    storage tool it may run, both reaped children of ours) plus the detached services it started,
    read the moment it returns. CPU time barely moves with the machine's load; wall time does."""
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    services = json.loads(done.stdout)
    cpu = _children_cpu_s() - cpu0 + sum(cpu_seconds(s["pid"]) for s in services.values())
    return elapsed, cpu


def _down(state: Path) -> None:
    subprocess.run([*TBSPARK, "stack", "down", "--state-dir", str(state)], check=True, stdout=subprocess.DEVNULL)


def cold(platform: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as d:
        extra = ["--http-port", "0", "--mqtt-port", "0"] if platform else ["--no-platform"]
        try:
            return _run([*TBSPARK, "stack", "up", "--state-dir", d, "--kafka-port", "0", *extra])
        finally:
            _down(Path(d))


def warm(state: Path) -> tuple[float, float]:
    try:
        return _run([*TBSPARK, "stack", "up", "--state-dir", str(state), "--kafka-port", "0", "--no-platform"])
    finally:
        _down(state)


def reference(state: Path) -> tuple[float, float]:
    """Kafka's own launch of the same broker config, timed to the first answered metadata request."""
    from confluent_kafka.admin import AdminClient

    port = kafka.free_port()
    ref_config = state / "kafka" / "reference.properties"
    # The same config tbspark writes (static quorum: other ports need no reformat).
    ref_config.write_text(kafka.server_properties(state / "kafka" / "data", "127.0.0.1", port, kafka.free_port()))
    cmd = [str(jvm.find_java()), *KAFKA_SCRIPT_OPTS, f"-Dlog4j2.configurationFile={state / 'kafka' / 'log4j2.properties'}",
           "-cp", jvm.kafka_classpath(), "kafka.Kafka", str(ref_config)]
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "logger": kafka.quiet_logger()})
    t0 = time.perf_counter()
    log = open(state / "kafka" / "reference.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    def answers() -> bool:
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return True
        except Exception:  # noqa: BLE001 — not up yet
            pass
        if proc.poll() is not None:
            tail = (state / "kafka" / "reference.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"reference broker exited:\n{tail}")
        return False

    try:
        wait_until(answers, 300, "the reference broker to answer a metadata request")
        return time.perf_counter() - t0, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def platform_exists() -> bool:
    done = subprocess.run([*TBSPARK, "platform", "serve", "--help"], capture_output=True)
    return done.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    results: dict[str, list[float]] = {"cold": [], "warm": [], "ref": []}
    cpu: dict[str, list[float]] = {"cold": [], "warm": [], "ref": []}
    with_platform = platform_exists()
    if with_platform:
        results["platform"] = []
        cpu["platform"] = []
    base = Path(tempfile.mkdtemp(prefix="bench-stack-warm-"))
    try:
        # One formatted state dir for the warm runs and the reference.
        subprocess.run([*TBSPARK, "stack", "up", "--state-dir", str(base), "--kafka-port", "0", "--no-platform"],
                       check=True, stdout=subprocess.DEVNULL)
        _down(base)
        for i in range(args.runs):
            measured = {"cold": cold(platform=False), "warm": warm(base), "ref": reference(base)}
            if with_platform:
                measured["platform"] = cold(platform=True)
            for key, (wall_s, cpu_s) in measured.items():
                results[key].append(wall_s)
                cpu[key].append(cpu_s)
            print(f"run {i + 1}: " + "  ".join(f"{k} {w:.2f}s (cpu {c:.2f}s)" for k, (w, c) in measured.items()),
                  flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = (load_before, os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in results.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    print(json.dumps({"runs": args.runs, "load_avg_1min": load, "median_s": {k: round(v, 2) for k, v in med.items()},
                      "median_cpu_s": {k: round(v, 2) for k, v in med_cpu.items()},
                      "all_s": {k: [round(x, 2) for x in v] for k, v in results.items()}}, indent=2))
    if args.write_docs:
        write_docs(args.runs, results, med, med_cpu, with_platform, load)


# Measured by hand before the team's suites loaded the machine; kept verbatim when the table is rewritten.
IDLE_NOTE = """On an idle machine (load average about 1, 13:37 UTC on 2026-11-28, single runs of the first code,
before the class archive and the storage template existed): `start_broker` on an empty state dir 5.8 s
(storage format included), 4.5 s on a formatted one; `tbspark stack up --no-platform --kafka-port 0`
5.9 s to its return. So the 15 s target holds on an idle 2-core machine; under the contention above
the bare reference broker is just as slow. The class archive's effect, measured under contention (load
14-16) back to back on one formatted state dir: 26.4 / 25.9 / 28.5 s without it, 17.4 / 13.5 / 12.9 s
with it."""


def write_docs(runs: int, results: dict, med: dict, med_cpu: dict, with_platform: bool, load: tuple) -> None:
    def row(name: str, key: str) -> str:
        v = results[key]
        return f"| {name} | {med[key]:.1f} s | {min(v):.1f}–{max(v):.1f} s | {med_cpu[key]:.1f} s |"

    lines = [
        "## Stack start (`bench/stack_up.py`)", "",
        f"Method: `.venv/bin/python bench/stack_up.py --runs {runs} --write-docs`; each run in a fresh",
        "temporary state dir on free ports, wall clock from launching the command until it returns (the",
        "broker answers a metadata request, the topic exists; the platform answers /tbspark/health).",
        f"Median of {runs} runs, measured {time.strftime('%Y-%m-%d %H:%M')} UTC on this machine (2 cores). The",
        f"machine was shared: 1-minute load average {load[0]:.1f} before and {load[1]:.1f} after the runs",
        "(other engineers' test suites, brokers and Spark jobs), so these are figures under contention.", "",
        "| what | median wall | range | median CPU to ready |", "|---|---|---|---|",
        row("`tbspark stack up --no-platform`, cold (formats storage)", "cold"),
        row("`tbspark stack up --no-platform`, warm (formatted state dir)", "warm"),
    ]
    if with_platform:
        lines.append(row("`tbspark stack up` with the embedded platform, cold", "platform"))
    else:
        lines.append("| `tbspark stack up` with the embedded platform | not measured: `tbspark platform serve` did not exist yet | | |")
    lines += [
        row("reference: bare `kafka.Kafka` as kafka-server-start.sh launches it, formatted, to first metadata answer", "ref"),
        "", f"Target: <= 15 s to a broker that answers — met under this load: cold median {med['cold']:.1f} s."
        if med["cold"] <= 15 else
        f"Target: <= 15 s to a broker that answers — not met under this load: cold median {med['cold']:.1f} s.",
        "Cold and warm differ little because a cold state dir is formatted by copying the output of Kafka's",
        "StorageTool kept beside the jars (only the first state dir of a jar cache runs the tool). Between",
        "warm and the reference: the Python CLI's start-up and topic creation, minus the class-data-sharing",
        "archive tbspark's broker maps (the reference runs without it).", "",
        "CPU to ready = user+sys seconds of every process involved (the CLI, the storage tool if run, the",
        "broker and platform up to the moment `stack up` returns): the work itself, which the machine's load",
        "hardly changes (waiting is not counted). On an idle 2-core machine wall time cannot be below CPU / 2.", "",
        IDLE_NOTE,
    ]
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    start, end = "<!-- section: stack -->", "<!-- end: stack -->"
    i, j = text.index(start) + len(start), text.index(end)
    doc.write_text(text[:i] + "\n" + "\n".join(lines) + "\n" + text[j:])
    print(f"wrote {doc}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
