"""`tbspark platform serve`: readiness record, clean stop on SIGTERM, a clear error for a taken port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import requests

from tests.fixtures.platform import REPO, start_platform


def test_endpoint_record_and_clean_sigterm(tmp_path):
    p = start_platform(tmp_path / "state")
    endpoint = tmp_path / "state" / "platform" / "endpoint.json"
    info = json.loads(endpoint.read_text())
    assert info["pid"] == p.proc.pid and info["url"] == p.url
    assert info["url"].startswith("http://127.0.0.1:") and info["mqtt_port"] > 0
    assert requests.get(p.url + "/tbspark/health").json() == {"status": "UP"}
    assert p.stop() == 0
    assert not endpoint.exists()  # a stale record must never look like a running platform
    out = p.log.read_text()
    assert f"REST  {p.url}" in out and "Traceback" not in out


def test_port_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", str(port),
                            "--mqtt-port", "0", "--state-dir", str(tmp_path / "s")],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"Error: port {port} on 127.0.0.1 is already in use — stop what holds it, "
                                f"or pass --http-port 0 to pick a free port")


def test_tenant_login_from_environment(tmp_path):
    p = start_platform(tmp_path / "state", extra_env={"TBSPARK_TENANT_USERNAME": "ops@example.com",
                                                      "TBSPARK_TENANT_PASSWORD": "s3cret"})
    try:
        ok = requests.post(p.url + "/api/auth/login", json={"username": "ops@example.com", "password": "s3cret"})
        assert ok.status_code == 200 and ok.json()["token"].count(".") == 2
        old = requests.post(p.url + "/api/auth/login",
                            json={"username": "tenant@thingsboard.org", "password": "tenant"})
        assert old.status_code == 401
    finally:
        p.stop()
