"""The embedded platform as a child process: ``tbspark platform serve`` on free ports in a given
state directory, ready once ``<state>/platform/endpoint.json`` exists and GET /tbspark/health
answers 200, stopped by PID. Tests (tests/fixtures/platform.py) and benchmarks start it here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import requests

from tbspark import settings
from tbspark.state import StateDir
from tbspark.testing.wait import WaitTimeout, wait_until

# The checkout (tests and benchmarks run from it); the child's working directory.
REPO = Path(__file__).resolve().parents[2]
TENANT = ("tenant@thingsboard.org", "tenant")


@dataclass
class PlatformProcess:
    url: str
    mqtt_host: str
    mqtt_port: int
    state_dir: Path
    pid: int
    proc: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        """Signal the process by PID and wait for it (SIGKILL after ``timeout_s``); its exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.proc.wait(timeout=timeout_s)

    def session(self, username: str = TENANT[0], password: str = TENANT[1]) -> requests.Session:
        return tenant_session(self.url, username, password)


def tenant_session(url: str, username: str = TENANT[0], password: str = TENANT[1]) -> requests.Session:
    """A requests session carrying a tenant JWT in X-Authorization (for direct/old-path calls)."""
    s = requests.Session()
    r = s.post(f"{url}/api/auth/login", json={"username": username, "password": password}, timeout=10)
    r.raise_for_status()
    s.headers["X-Authorization"] = "Bearer " + r.json()["token"]
    return s


def start_platform(state_dir: Path, timeout_s: float = 30, extra_env: dict | None = None, *,
                   http_port: int = 0, mqtt_port: int = 0, log_name: str = "platform-test.log",
                   prefix: Sequence[str] = (), preexec_fn: Callable[[], None] | None = None) -> PlatformProcess:
    """Start the platform in ``state_dir`` and wait until it answers. Ports 0 pick free ones; fixed
    ports bring a stopped platform back at the same address. ``prefix``: a command the process runs
    under (e.g. ``taskset -c 0``, which execs it: same PID); ``preexec_fn`` runs in the child before
    it starts (e.g. to raise its file limit). Raises RuntimeError with the log's tail when it exits
    or is not ready within ``timeout_s``."""
    endpoint = StateDir(state_dir).endpoint_file
    endpoint.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / log_name
    env = settings.child_environ({"PYTHONUNBUFFERED": "1", **(extra_env or {})})
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", str(http_port), "--mqtt-port", str(mqtt_port),
             "--state-dir", str(state_dir)],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)

    def ready() -> dict | None:
        if proc.poll() is not None:
            raise RuntimeError(f"platform exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            info = json.loads(endpoint.read_text())
            if requests.get(info["url"] + "/tbspark/health", timeout=2).status_code == 200:
                return info
        except (OSError, ValueError, KeyError, requests.RequestException):
            pass
        return None

    try:
        info = wait_until(ready, timeout_s, f"the platform in {state_dir} to answer /tbspark/health")
    except WaitTimeout:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"platform not ready in {timeout_s}s:\n{log.read_text()[-3000:]}") from None
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return PlatformProcess(url=info["url"], mqtt_host="127.0.0.1", mqtt_port=info["mqtt_port"],
                           state_dir=state_dir, pid=info["pid"], proc=proc, log=log)
