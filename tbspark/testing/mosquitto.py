"""A plain Mosquitto broker (no persistence, no subscribers), the reference benchmarks set the
platform's MQTT figures beside. None when mosquitto is not installed."""

from __future__ import annotations

import resource
import shutil
import socket
import subprocess
from pathlib import Path

from tbspark.testing.wait import wait_until


def raise_fd_limit() -> None:
    """The soft open-files limit up to the hard one: thousands of connections need descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_mosquitto(state: Path) -> tuple[subprocess.Popen, int] | None:
    """Mosquitto on a free loopback port, configured in ``state``; ready once it accepts a TCP
    connection. Returns (process, port), or None without a mosquitto binary."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        return None
    from tbspark.stack.kafka import free_port

    port = free_port()
    conf = state / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                    "persistence false\nlog_dest none\nmax_inflight_messages 100\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=raise_fd_limit)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, 10, "mosquitto to accept connections")
    except BaseException:
        stop(proc)
        raise
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
