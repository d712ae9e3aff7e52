"""CPU time of processes by PID (user + system seconds, all threads), for benchmarks' figures."""

from __future__ import annotations

import os

import psutil


def cpu_seconds(pid: int | None = None, children: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (default: this one), plus those of its live
    descendants when ``children`` (e.g. the Spark driver and its JVM). NaN when the process is
    gone, so a figure from a dead process cannot pass for a measurement."""
    try:
        root = psutil.Process(os.getpid() if pid is None else pid)
        procs = [root, *root.children(recursive=True)] if children else [root]
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                if p is root:
                    raise
                continue  # a child that exited between listing and reading
            total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return float("nan")


class CpuMeter:
    """CPU seconds of one or more processes and their descendants between ``start()`` and
    ``total()`` (several roots: a component that is several processes, e.g. a Kafka cluster's
    brokers, or a Spark driver with the standalone cluster's master and workers, whose children
    are the executors). Call ``sample()`` now and then while it runs: a descendant that exits
    between samples keeps the CPU it was last seen with (a process's time cannot be read after it
    is reaped)."""

    def __init__(self, *pids: int):
        self.pids = pids
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        out = {}
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        out[p.pid] = t.user + t.system
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                pass
        return out

    def start(self) -> None:
        self.base = self._sample()

    def sample(self) -> None:
        self.seen.update(self._sample())

    def total(self) -> float:
        self.sample()
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())
