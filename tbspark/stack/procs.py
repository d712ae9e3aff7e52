"""Processes the stack started: recognise them by PID and command line, stop them by PID."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_ours(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process with ``marker`` as one of its arguments:
    a pid file can outlive its process, and the pid can be reused by something unrelated."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return marker in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def find_by_arg(marker: str) -> list[int]:
    """Live processes with ``marker`` as one of their arguments (finds ours after a lost pid file)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
            continue
        if marker in info["cmdline"]:
            found.append(info["pid"])
    return found


def terminate(pid: int, timeout_s: float, popen: subprocess.Popen | None = None) -> str:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Reaps the process when it is our child, so it
    leaves no zombie. Returns "stopped", "killed" or "not running"."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(proc, popen)
            return "not running"
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return "not running"
    try:
        _wait(proc, popen, timeout_s)
        return "stopped"
    except (psutil.TimeoutExpired, subprocess.TimeoutExpired):
        pass
    try:
        proc.kill()
        _wait(proc, popen, 10.0)
    except psutil.NoSuchProcess:
        pass
    return "killed"


def _wait(proc: psutil.Process, popen: subprocess.Popen | None, timeout_s: float) -> None:
    if popen is not None:
        popen.wait(timeout=timeout_s)
    else:
        proc.wait(timeout=timeout_s)  # psutil reaps it with waitpid when it is our child


def _reap(proc: psutil.Process, popen: subprocess.Popen | None) -> None:
    try:
        _wait(proc, popen, 1.0)
    except (psutil.TimeoutExpired, subprocess.TimeoutExpired, psutil.NoSuchProcess):
        pass


def die_with_parent() -> None:
    """preexec_fn for Popen: the child gets SIGTERM when the process that started it dies (Linux
    PR_SET_PDEATHSIG). Test sessions use it so a killed pytest leaves no broker behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the session's teardown still stops it by PID


def terminate_all(pids: list[int], timeout_s: float) -> dict[int, str]:
    """``terminate`` for several processes at once: SIGTERM to all, one shared wait, then SIGKILL to
    the rest (a cluster's nodes wait on each other while they shut down)."""
    live: dict[int, psutil.Process] = {}
    results: dict[int, str] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(proc, None)
                results[pid] = "not running"
                continue
            proc.send_signal(signal.SIGTERM)
            live[pid] = proc
        except psutil.NoSuchProcess:
            results[pid] = "not running"
    gone, alive = psutil.wait_procs(list(live.values()), timeout=timeout_s)
    for proc in gone:
        results[proc.pid] = "stopped"
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
        results[proc.pid] = "killed"
    psutil.wait_procs(alive, timeout=10.0)
    return results

