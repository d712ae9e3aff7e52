"""The platform's controls and logins as an attacker meets them (docs/security.md): every control but
health needs a JWT; no web page can make a visitor's browser reset the platform or log in; failed
logins lock a username for a while; a failure costs the same whether the user exists or not;
logout ends the session, also across a restart; the secrets on disk are the owner's only; SIGTERM
stops a platform whose event loop is stuck."""

from __future__ import annotations

import json
import os
import signal
import statistics
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
import requests

from tests.fixtures.platform import REPO, TENANT, start_platform
from tests.integration.test_mqtt import wait_for

SYSADMIN = ("sysadmin@thingsboard.org", "sysadmin")
LOCKED = "User account is locked due to security policy"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A platform of our own (these tests reset it and lock names), locking after 3 failures for 1 s."""
    p = start_platform(tmp_path_factory.mktemp("security"), extra_env={
        "TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS": "3", "TBSPARK_LOGIN_LOCKOUT_S": "1"})
    try:
        yield p
    finally:
        p.stop()


def login(url: str, username: str, password: str) -> requests.Response:
    return requests.post(f"{url}/api/auth/login", json={"username": username, "password": password}, timeout=30)


def bearer(token: str) -> dict:
    return {"X-Authorization": "Bearer " + token}


def tb_error(r: requests.Response) -> tuple[int, str, int]:
    body = r.json()
    return r.status_code, body["message"], body["errorCode"]


# -- controls -----------------------------------------------------------------------------------------

def test_controls_need_a_tenant_or_sysadmin_token_except_health(guarded):
    u = guarded.url
    assert requests.get(f"{u}/tbspark/health", timeout=5).json() == {"status": "UP"}
    for method, path in (("GET", "/tbspark/stats"), ("POST", "/tbspark/reset"), ("GET", "/tbspark/anything")):
        for headers in ({}, bearer("not.a.jwt"), {"X-Authorization": "Basic dGVuYW50OnRlbmFudA=="}):
            r = requests.request(method, u + path, headers=headers, timeout=5)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["errorCode"] in (10, 11)
    for who in (TENANT, SYSADMIN):
        stats = requests.get(f"{u}/tbspark/stats", headers=bearer(login(u, *who).json()["token"]), timeout=5)
        assert stats.status_code == 200 and {"http", "store", "engine", "mqtt"} <= set(stats.json())


def test_cross_site_posts_cannot_reset_or_log_in(guarded):
    """What a web page can make a browser send to 127.0.0.1 without a CORS preflight: a POST with a
    text/plain, form or no content type, no custom header. None of it changes anything. Two locks:
    the browser's Origin header is refused on any write; without it (no browser sends a POST without
    one, but if) the token and the JSON content type are still required."""
    u = guarded.url
    tenant = requests.Session()
    tenant.headers.update(bearer(login(u, *TENANT).json()["token"]))
    name = f"survivor {uuid.uuid4().hex[:6]}"
    assert tenant.post(f"{u}/api/device", json={"name": name, "type": "t"}, timeout=5).status_code == 200
    creds = f'{{"username": "{TENANT[0]}", "password": "{TENANT[1]}"}}'
    for origin in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
        for ctype, body in (("text/plain", "{}"), ("application/x-www-form-urlencoded", "a=b"),
                            ("multipart/form-data; boundary=x", "--x--"), (None, b"")):
            headers = {**origin, **({"Content-Type": ctype} if ctype else {})}
            r = requests.post(f"{u}/tbspark/reset", data=body, headers=headers, timeout=5)
            assert r.status_code == (403 if origin else 401), (origin, ctype, r.status_code)
            assert "Access-Control-Allow-Origin" not in r.headers
            # the login answer would be unreadable cross-site anyway, but it is not even given
            r = requests.post(f"{u}/api/auth/login", data=creds, headers=headers, timeout=5)
            assert r.status_code == (403 if origin else 415) and "token" not in r.text, (origin, ctype)
    # the Origin check alone: even a well-formed login from another site's page is refused
    r = requests.post(f"{u}/api/auth/login", data=creds, timeout=5,
                      headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert tb_error(r)[0] == 403 and "token" not in r.text
    # the platform never grants a preflight, so the browser never sends the real request
    pre = requests.options(f"{u}/tbspark/reset", headers={"Origin": "http://evil.example",
                                                          "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "x-authorization"},
                           timeout=5)
    assert "Access-Control-Allow-Origin" not in pre.headers
    assert tenant.get(f"{u}/api/tenant/devices", params={"deviceName": name}, timeout=5).status_code == 200
    # the page's own origin may write (the live page logs in this way), and with the token the
    # control works
    own = {"Origin": u, "Content-Type": "application/json"}
    assert requests.post(f"{u}/api/auth/login", data=creds, headers=own, timeout=30).status_code == 200
    assert tenant.post(f"{u}/tbspark/reset", headers={"Origin": u}, timeout=5).json() == {"reset": True}
    assert tenant.get(f"{u}/api/tenant/devices", params={"deviceName": name}, timeout=5).status_code == 404


def test_dns_rebinding_host_is_refused(guarded):
    """A page at http://evil.example:PORT whose name now resolves to 127.0.0.1 is same-origin with
    itself, so its browser sends anything, but with Host: evil.example."""
    u = guarded.url
    port = u.rsplit(":", 1)[1]
    creds = {"username": TENANT[0], "password": TENANT[1]}
    r = requests.post(f"{u}/api/auth/login", json=creds, headers={"Host": f"evil.example:{port}"}, timeout=5)
    assert r.status_code == 403 and "token" not in r.text
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert requests.post(f"{u}/api/auth/login", json=creds, headers={"Host": host}, timeout=30).ok


# -- logins -------------------------------------------------------------------------------------------

def test_failed_logins_lock_the_name_for_a_while_then_success_resets(guarded):
    u = guarded.url
    for _ in range(3):
        assert tb_error(login(u, *TENANT[:1], "wrong")) == (401, "Invalid username or password", 10)
    # locked: even the right password is refused, with ThingsBoard's answer
    assert tb_error(login(u, *TENANT)) == (401, LOCKED, 10)
    # an unknown name locks the same way: the lock does not tell who exists
    ghost = f"ghost-{uuid.uuid4().hex[:6]}@example.com"
    for _ in range(3):
        assert tb_error(login(u, ghost, "wrong")) == (401, "Invalid username or password", 10)
    assert tb_error(login(u, ghost, "wrong")) == (401, LOCKED, 10)
    # other names are not affected
    assert login(u, *SYSADMIN).status_code == 200
    # the lock ends (1 s here); the right password then works and forgives the failures
    def unlocked() -> bool:
        r = login(u, *TENANT)
        assert r.status_code == 200 or tb_error(r) == (401, LOCKED, 10)
        return r.status_code == 200
    wait_for(unlocked, 15, "the lock to end")
    assert tb_error(login(u, TENANT[0], "wrong")) == (401, "Invalid username or password", 10)
    assert login(u, *TENANT).status_code == 200


def test_lockout_is_configured_the_thingsboard_way_and_survives_a_restart(tmp_path):
    state = tmp_path / "state"
    p = start_platform(state)
    try:
        admin = bearer(login(p.url, *SYSADMIN).json()["token"])
        settings = requests.get(f"{p.url}/api/admin/securitySettings", headers=admin, timeout=5).json()
        assert settings["maxFailedLoginAttempts"] == 5 and settings["passwordResetTokenTtl"] == 24  # defaults
        tenant = bearer(login(p.url, *TENANT).json()["token"])
        assert requests.post(f"{p.url}/api/admin/securitySettings", json=settings, headers=tenant,
                             timeout=5).status_code == 403  # system administrator only, as in ThingsBoard
        bad = requests.post(f"{p.url}/api/admin/securitySettings", headers=admin, timeout=5,
                            json={**settings, "passwordResetTokenTtl": 25})
        assert tb_error(bad) == (400, "Validation error: passwordResetTokenTtl must be less than or equal to 24", 31)
        r = requests.post(f"{p.url}/api/admin/securitySettings", json={**settings, "maxFailedLoginAttempts": 1},
                          headers=admin, timeout=5)
        assert r.status_code == 200 and r.json()["maxFailedLoginAttempts"] == 1
    finally:
        p.stop()
    p = start_platform(state)
    try:
        assert tb_error(login(p.url, TENANT[0], "wrong")) == (401, "Invalid username or password", 10)
        assert tb_error(login(p.url, *TENANT)) == (401, LOCKED, 10)  # one failure was enough
        assert stat.S_IMODE((state / "platform" / "security_settings.json").stat().st_mode) == 0o600
    finally:
        p.stop()


@pytest.mark.parametrize("env, line", [
    ({"TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS": "-1"},
     "Error: TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS='-1' is not a whole number, 0 (no lockout) or more — set "
     "TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS to a whole number, 0 (no lockout) or more, or unset it"),
    ({"TBSPARK_PLATFORM_STOP_GRACE_S": "never"},
     "Error: TBSPARK_PLATFORM_STOP_GRACE_S='never' is not a number of seconds in (0, 3600] — unset it "
     "(default 10 s) or set e.g. 10"),
])
def test_a_bad_lockout_or_grace_setting_is_one_clear_error(tmp_path, env, line):
    r = subprocess.run([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", "0", "--mqtt-port", "0",
                        "--state-dir", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert (r.returncode, r.stderr.strip()) == (2, line)


def test_a_failed_login_costs_the_same_for_known_and_unknown_names(tmp_path):
    """Today's medians were ~35 ms (scrypt) against ~1 ms: a 20x gap that tells which users exist.
    Lockout off here, so every attempt reaches the password check."""
    p = start_platform(tmp_path / "state", extra_env={"TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS": "0"})
    try:
        known, unknown = [], []
        for i in range(13):  # interleaved, so a busy moment of the machine hits both alike
            for name, out in ((TENANT[0], known), (f"nobody-{i}@example.com", unknown)):
                t0 = time.perf_counter()
                assert login(p.url, name, "wrong").status_code == 401
                out.append(time.perf_counter() - t0)
        k, n = statistics.median(known[1:]), statistics.median(unknown[1:])
        assert 1 / 3 < k / n < 3, f"median failure time: known {k * 1000:.1f} ms, unknown {n * 1000:.1f} ms"
    finally:
        p.stop()


def test_logout_ends_the_session_for_good_and_only_that_one(tmp_path):
    state = tmp_path / "state"
    (state / "platform").mkdir(parents=True)
    os.chmod(state / "platform", 0o755)  # as an older tbspark left it: the platform tightens it
    p = start_platform(state)
    try:
        a, b = login(p.url, *TENANT).json(), login(p.url, *TENANT).json()
        # a refreshed pair descends from the same login: logging out of it also ends the pair before it
        a2 = requests.post(f"{p.url}/api/auth/token", json={"refreshToken": a["refreshToken"]}, timeout=5).json()
        assert requests.post(f"{p.url}/api/auth/logout", headers=bearer(a2["token"]), timeout=5).status_code == 200
        for token in (a["token"], a2["token"]):
            assert tb_error(requests.get(f"{p.url}/api/auth/user", headers=bearer(token), timeout=5))[0] == 401
        for refresh in (a["refreshToken"], a2["refreshToken"]):
            r = requests.post(f"{p.url}/api/auth/token", json={"refreshToken": refresh}, timeout=5)
            assert tb_error(r) == (401, "Token has expired", 11)
        assert requests.get(f"{p.url}/api/auth/user", headers=bearer(b["token"]), timeout=5).status_code == 200
        assert_owner_only(state)
    finally:
        assert p.stop() == 0
    p = start_platform(state)  # a restart does not bring the session back
    try:
        r = requests.post(f"{p.url}/api/auth/token", json={"refreshToken": a["refreshToken"]}, timeout=5)
        assert tb_error(r) == (401, "Token has expired", 11)
        r = requests.post(f"{p.url}/api/auth/token", json={"refreshToken": b["refreshToken"]}, timeout=5)
        assert r.status_code == 200
    finally:
        p.stop()


def assert_owner_only(state) -> None:
    d = state / "platform"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    secrets = ["platform.db", "platform.db-wal", "platform.db-shm", "jwt_signing_key.json", "revoked_sessions.json"]
    modes = {name: oct(stat.S_IMODE((d / name).stat().st_mode)) for name in secrets}
    assert modes == {name: "0o600" for name in secrets}


def test_records_and_a_created_state_dir_are_owner_only(tmp_path):
    from tbspark.state import StateDir, write_json_atomic

    state = StateDir(tmp_path / "new-state").ensure()
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700
    write_json_atomic(state.provision_file, {"devices": [{"token": "secret"}]})
    assert stat.S_IMODE(state.provision_file.stat().st_mode) == 0o600


# -- SIGTERM ------------------------------------------------------------------------------------------

SPINNING_PLATFORM = textwrap.dedent("""
    import sys
    from aiohttp import web
    from tbspark.platform import app

    async def spin(request):  # what a looping rule chain did: the event loop never gets a turn again
        while True:
            pass

    build = app.Platform.build_app
    def with_spin(self):
        a = build(self)
        a.router.add_get("/test/spin", spin)
        return a
    app.Platform.build_app = with_spin
    app.serve(sys.argv[1], "127.0.0.1", 0, 0)
""")


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_sigterm_stops_a_platform_whose_loop_is_stuck(tmp_path, event_loop):
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    state = tmp_path / "state"
    endpoint = state / "platform" / "endpoint.json"
    log = tmp_path / "platform.log"
    env = {**os.environ, "TBSPARK_EVENT_LOOP": event_loop, "TBSPARK_PLATFORM_STOP_GRACE_S": "2"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", SPINNING_PLATFORM, str(state)], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        # readiness: the platform writes endpoint.json when it listens
        wait_for(lambda: endpoint.exists() or proc.poll() is not None, 60, "the platform to listen")
        assert proc.poll() is None, log.read_text()[-2000:]
        url = json.loads(endpoint.read_text())["url"]
        assert requests.get(f"{url}/tbspark/health", timeout=5).status_code == 200
        threading.Thread(target=lambda: _ignore(lambda: requests.get(f"{url}/test/spin", timeout=30)),
                         daemon=True).start()
        wait_for(lambda: not _answers(f"{url}/tbspark/health"), 20, "the spinning handler to block the loop")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop a platform whose event loop is stuck")
        took = time.monotonic() - t0
        assert took < 8, f"took {took:.1f} s"
        assert code != 0  # not a clean stop: the watchdog ended it
        out = log.read_text()
        assert "in spin" in out  # the stack of what was stuck is in the log
        assert not endpoint.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def _ignore(fn) -> None:
    try:
        fn()
    except requests.RequestException:
        pass
