"""Stopping by PID: a process that ignores SIGTERM is killed after the timeout, none is left a zombie,
and a pid file whose number now belongs to an unrelated process is not mistaken for ours."""

from __future__ import annotations

import subprocess
import sys

import psutil

from tbspark.stack import procs

IGNORES_TERM = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")


def test_process_ignoring_sigterm_is_killed_after_the_timeout():
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # its handler is installed
    assert procs.terminate(proc.pid, timeout_s=0.5) == "killed"
    assert not psutil.pid_exists(proc.pid)  # reaped, not a zombie


def test_process_honouring_sigterm_is_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert procs.terminate(proc.pid, timeout_s=10) == "stopped"
    assert procs.terminate(proc.pid, timeout_s=1) == "not running"


def test_reused_pid_is_not_taken_for_ours(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        assert not procs.is_ours(other.pid, str(tmp_path / "kafka" / "server.properties"))
    finally:
        other.kill()
        other.wait()


PARENT = ("import subprocess, sys, time\n"
          "from tbspark.stack import procs\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
          "                         preexec_fn=procs.die_with_parent, start_new_session=True)\n"
          "print(child.pid, flush=True)\n"
          "time.sleep(60)\n")


def test_service_started_for_a_test_session_dies_with_it():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert procs.is_ours(child_pid, "import time; time.sleep(60)")
    parent.kill()  # as when a test session is killed: no teardown runs
    parent.wait()
    child = psutil.Process(child_pid)
    child.wait(timeout=10)  # returns once the kernel's SIGTERM has ended it
    assert not psutil.pid_exists(child_pid)
