"""`tbspark platform serve`: readiness record, clean stop on SIGTERM, a clear error for a taken port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
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
    assert f"UI    {p.url}/tbspark/ui" in out and info["ui_url"] == p.url + "/tbspark/ui"


@pytest.mark.parametrize("flag", ["--http-port", "--mqtt-port"])
def test_port_in_use_is_one_clear_error(tmp_path, flag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--http-port": "0", "--mqtt-port": "0", flag: str(port)}
        r = subprocess.run([sys.executable, "-m", "tbspark", "platform", "serve", *sum(ports.items(), ()),
                            "--state-dir", str(tmp_path / "s")],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert r.stderr.strip() == (f"Error: port {port} on 127.0.0.1 is already in use — stop what holds it, "
                                f"or pass {flag} 0 to pick a free port")


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


def test_expired_access_token_then_refresh(tmp_path):
    # 2 s, not 1: `exp` has whole-second resolution, so a 1 s token issued late in a second can
    # already be expired by the very next request.
    p = start_platform(tmp_path / "state", extra_env={"JWT_TOKEN_EXPIRATION_TIME": "2"})
    try:
        pair = requests.post(p.url + "/api/auth/login",
                             json={"username": "tenant@thingsboard.org", "password": "tenant"}).json()
        headers = {"X-Authorization": "Bearer " + pair["token"]}
        assert requests.get(p.url + "/api/auth/user", headers=headers).status_code == 200
        deadline = time.monotonic() + 6
        while True:  # poll until the 2-second lifetime has run out
            r = requests.get(p.url + "/api/auth/user", headers=headers)
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 401 and (r.json()["message"], r.json()["errorCode"]) == ("Token has expired", 11)
        fresh = requests.post(p.url + "/api/auth/token", json={"refreshToken": pair["refreshToken"]}).json()
        ok = requests.get(p.url + "/api/auth/user", headers={"X-Authorization": "Bearer " + fresh["token"]})
        assert ok.status_code == 200 and ok.json()["email"] == "tenant@thingsboard.org"
    finally:
        p.stop()


def test_second_platform_on_the_same_state_dir_is_refused(platform):
    r = subprocess.run([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", "0",
                        "--mqtt-port", "0", "--state-dir", str(platform.state_dir)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert r.stderr.strip() == (f"Error: a platform is already running on {platform.state_dir} (pid {platform.pid}) "
                                f"— stop it (tbspark stack down, or kill that pid), or pass another --state-dir")
    assert requests.get(platform.url + "/tbspark/health").status_code == 200  # the first one is untouched
    assert (platform.state_dir / "platform" / "endpoint.json").exists()
