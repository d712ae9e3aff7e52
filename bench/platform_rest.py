"""Benchmark of the embedded platform's REST side (issue 3 figures):

1. telemetry POST requests/s from one keep-alive client (target >= 2,000 on one core), beside the same
   client's ceiling on the cheapest route (GET /tbspark/health);
2. latency of a history query with AVG over 10-second intervals across 1M stored points of one key
   (target <= 200 ms).

The platform runs as `python -m tbspark platform serve` pinned to CPU 0 (taskset), the client on CPU 1.
Every figure is the median of --runs runs. Usage: .venv/bin/python bench/platform_rest.py [--runs 5] [--rt]

--rt (root only): during the measured sections only (not while loading the 1M points), the client and
every thread of the platform run SCHED_FIFO, so other work on a shared machine does not preempt them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil

from tbspark.testing.cpu import cpu_seconds
from tbspark.testing.platform import PlatformProcess, start_platform

T0 = 1_600_000_000_000


def start(state: Path) -> PlatformProcess:
    """The platform pinned to CPU 0 (when there are two or more)."""
    pin = ("taskset", "-c", "0") if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else ()
    return start_platform(state, timeout_s=60, log_name="platform.log", prefix=pin)


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: the cheapest Python client, so the server is
    measured; tbspark's TbRestClient, with its retries and token checks, would weigh on the client side)."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers: dict[str, str] = {}

    def call(self, method: str, path: str, body: str | None = None, ctype: str = "application/json") -> tuple[int, bytes]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def login(self) -> None:
        status, body = self.call("POST", "/api/auth/login",
                                 json.dumps({"username": "tenant@thingsboard.org", "password": "tenant"}))
        assert status == 200, body
        self.headers["X-Authorization"] = "Bearer " + json.loads(body)["token"]


def realtime(on: bool, server_pid: int) -> None:
    """SCHED_FIFO (priority 10) for this process and all platform threads, or back to SCHED_OTHER."""
    policy, param = (os.SCHED_FIFO, os.sched_param(10)) if on else (os.SCHED_OTHER, os.sched_param(0))
    tids = [t.id for t in psutil.Process(server_pid).threads()] + [t.id for t in psutil.Process().threads()]
    for tid in tids:
        try:
            os.sched_setscheduler(tid, policy, param)
        except (PermissionError, ProcessLookupError):
            pass


def rate(fn, n: int, server: "psutil.Process") -> tuple[float, float]:
    """(wall-clock req/s, req/s per core of server CPU). The second is what one dedicated core would
    sustain: it holds up when other work shares the machine, the first does not."""
    cpu0 = cpu_seconds(server.pid)
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    wall = time.perf_counter() - t
    cpu = cpu_seconds(server.pid) - cpu0
    return n / wall, n / cpu if cpu > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--points", type=int, default=1_000_000, help="0 skips the history figure")
    ap.add_argument("--rt", action="store_true", help="SCHED_FIFO during measured sections (root)")
    args = ap.parse_args()
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    load0 = os.getloadavg()
    state = Path(tempfile.mkdtemp(prefix="tbspark-bench-"))
    plat = start(state)
    info = {"url": plat.url, "pid": plat.pid}
    try:
        c = Client(info["url"])
        c.login()
        status, body = c.call("POST", "/api/device", json.dumps({"name": "bench", "type": "bench"}))
        dev = json.loads(body)["id"]["id"]
        ts_path = f"/api/plugins/telemetry/DEVICE/{dev}/timeseries/ANY"

        def post(i: int) -> None:
            s, b = c.call("POST", ts_path, '{"windSpeed": %d.5, "rpm": %d}' % (i % 40, i), "text/plain")
            assert s == 200, b

        def health(i: int) -> None:
            s, _ = c.call("GET", "/tbspark/health")
            assert s == 200

        server = psutil.Process(info["pid"])
        rate(post, 300, server)  # warm-up
        if args.rt:
            realtime(True, info["pid"])
        posts = [rate(post, args.requests, server) for _ in range(args.runs)]
        ceiling = [rate(health, args.requests, server) for _ in range(args.runs)]
        med = statistics.median
        print(f"load average before: {load0}; SCHED_FIFO during measurements: {args.rt}")
        print(f"telemetry POST, 1 keep-alive client: median {med(r for r, _ in posts):,.0f} req/s wall "
              f"(runs: {', '.join(f'{r:,.0f}' for r, _ in posts)}); per server core: "
              f"median {med(c for _, c in posts):,.0f} req/s; target >= 2,000")
        print(f"  same client on GET /tbspark/health (ceiling): median {med(r for r, _ in ceiling):,.0f} req/s wall, "
              f"{med(c for _, c in ceiling):,.0f} req/s per server core")

        if args.rt:
            realtime(False, info["pid"])
        if args.points <= 0:
            return
        # 1M points of one key at 10 Hz (100,000 s), written as arrays of 10,000 points per request.
        status, body = c.call("POST", "/api/device", json.dumps({"name": "bench-history", "type": "bench"}))
        hdev = json.loads(body)["id"]["id"]
        hpath = f"/api/plugins/telemetry/DEVICE/{hdev}/timeseries/ANY"
        t = time.perf_counter()
        batch = 10_000
        for start_i in range(0, args.points, batch):
            pts = [{"ts": T0 + i * 100, "values": {"windSpeed": (i % 400) / 10}} for i in range(start_i, start_i + batch)]
            s, b = c.call("POST", hpath, json.dumps(pts), "text/plain")
            assert s == 200, b
        load_s = time.perf_counter() - t
        print(f"loaded {args.points:,} points in {load_s:.1f} s ({args.points / load_s:,.0f} points/s over REST arrays)")
        end = T0 + args.points * 100
        q = (f"/api/plugins/telemetry/DEVICE/{hdev}/values/timeseries/history?keys=windSpeed&startTs={T0}"
             f"&endTs={end}&interval=10000&agg=AVG&orderBy=ASC")
        lat, cpu = [], []
        if args.rt:
            realtime(True, info["pid"])
        for _ in range(args.runs + 1):
            c0 = cpu_seconds(server.pid)
            t = time.perf_counter()
            s, b = c.call("GET", q)
            lat.append((time.perf_counter() - t) * 1000)
            cpu.append((cpu_seconds(server.pid) - c0) * 1000)
            assert s == 200
        if args.rt:
            realtime(False, info["pid"])
        buckets = len(json.loads(b)["windSpeed"])
        lat, cpu = lat[1:], cpu[1:]  # the first run warms SQLite's page cache
        print(f"history AVG over 10 s intervals, {args.points:,} points -> {buckets:,} buckets: median "
              f"{statistics.median(lat):.0f} ms wall (runs: {', '.join(f'{x:.0f}' for x in lat)}), "
              f"{statistics.median(cpu):.0f} ms server CPU; target <= 200 ms")
        print(f"load average after: {os.getloadavg()}")
        db = state / "platform" / "platform.db"
        print(f"database size: {db.stat().st_size / 1e6:.0f} MB")
    finally:
        plat.stop(timeout_s=60)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
