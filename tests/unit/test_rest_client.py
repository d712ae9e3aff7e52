"""TbRestClient against a scripted local HTTP server that answers like ThingsBoard does
(error bodies of contract §1.5/§2.3, old and new lookup paths, short-lived JWTs)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
import pytest

from tbspark.errors import TbApiError, TbAuthError, TbNotFoundError, TbUnavailableError
from tbspark.thingsboard.rest import TbRestClient

KEY = "k" * 64


class FakeTb:
    """Just enough ThingsBoard for the client's own logic: configurable per test."""

    def __init__(self, new_paths: bool = True, token_life_s: int = 9000):
        self.new_paths = new_paths
        self.token_life_s = token_life_s
        self.logins = 0
        self.refreshes = 0
        self.fail_next: list[int] = []  # statuses to answer before serving normally
        self.requests: list[str] = []
        self.devices = {f"dev{i}": {"id": {"entityType": "DEVICE", "id": f"id-{i}"},
                                    "name": f"dev{i}"} for i in range(5)}

    def token(self, kind: str) -> str:
        return jwt.encode({"sub": "tenant@thingsboard.org", "scopes": [kind],
                           "exp": int(time.time()) + self.token_life_s}, KEY, algorithm="HS512")


def make_handler(tb: FakeTb):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def _send(self, status: int, body, ctype: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _err(self, status: int, message: str, code: int) -> None:
            self._send(status, {"status": status, "message": message, "errorCode": code,
                                "timestamp": 0})

        def _authed(self) -> bool:
            auth = self.headers.get("X-Authorization", "")
            try:
                claims = jwt.decode(auth.removeprefix("Bearer "), KEY, algorithms=["HS512"])
            except jwt.ExpiredSignatureError:
                self._err(401, "Token has expired", 11)
                return False
            except jwt.PyJWTError:
                self._err(401, "Authentication failed", 10)
                return False
            return "TENANT_ADMIN" in claims["scopes"]

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            path = urlparse(self.path).path
            tb.requests.append(f"POST {path}")
            if path == "/api/auth/login":
                if body.get("password") != "tenant":
                    return self._err(401, "Invalid username or password", 10)
                tb.logins += 1
                return self._send(200, {"token": tb.token("TENANT_ADMIN"),
                                        "refreshToken": tb.token("REFRESH_TOKEN")})
            if path == "/api/auth/token":
                tb.refreshes += 1
                return self._send(200, {"token": tb.token("TENANT_ADMIN"),
                                        "refreshToken": tb.token("REFRESH_TOKEN")})
            if not self._authed():
                return
            if path == "/api/asset":
                return self._err(400, "Asset with such name already exists!", 31)
            self._send(200, body)

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            tb.requests.append(f"GET {url.path}")
            if tb.fail_next:
                status = tb.fail_next.pop(0)
                return self._send(status, b"busy", "text/plain")
            if not self._authed():
                return
            if url.path == "/api/tenant/device":
                if not tb.new_paths:  # Spring's own 404 for an unknown route: no errorCode
                    return self._send(404, {"status": 404, "error": "Not Found", "path": url.path})
            if url.path in ("/api/tenant/device", "/api/tenant/devices") and "deviceName" in q:
                dev = tb.devices.get(q["deviceName"])
                return self._send(200, dev) if dev else self._err(404, "Requested item wasn't found!", 32)
            if url.path == "/api/tenant/devices":
                names = sorted(tb.devices)
                size, page = int(q["pageSize"]), int(q["page"])
                chunk = names[page * size:(page + 1) * size]
                return self._send(200, {"data": [tb.devices[n] for n in chunk],
                                        "totalElements": len(names),
                                        "hasNext": (page + 1) * size < len(names)})
            if url.path.startswith("/api/plugins/telemetry/"):
                return self._send(400, b"Invalid JSON", "text/plain")
            self._err(404, f"Device with id [{url.path}] is not found", 32)

    return H


@pytest.fixture()
def fake_tb():
    tb = FakeTb()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(tb))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    tb.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield tb
    server.shutdown()
    server.server_close()


def client(tb: FakeTb, password: str = "tenant", **kw) -> TbRestClient:
    return TbRestClient(tb.url, "tenant@thingsboard.org", password, backoff_s=0.01, **kw)


def test_wrong_password_is_an_auth_error_with_the_servers_message(fake_tb):
    with pytest.raises(TbAuthError) as exc:
        client(fake_tb, password="nope").login()
    assert exc.value.status == 401 and exc.value.error_code == 10
    assert "Invalid username or password" in str(exc.value)
    assert "TB_USERNAME / TB_PASSWORD" in str(exc.value)


def test_lookup_by_name_uses_new_path_and_returns_none_when_absent(fake_tb):
    c = client(fake_tb)
    assert c.get_device_by_name("dev3")["id"]["id"] == "id-3"
    assert c.get_device_by_name("ghost") is None
    assert "GET /api/tenant/devices" not in fake_tb.requests


def test_lookup_by_name_falls_back_to_old_path_on_older_servers(fake_tb):
    fake_tb.new_paths = False
    c = client(fake_tb)
    assert c.get_device_by_name("dev1")["name"] == "dev1"
    assert c.get_device_by_name("ghost") is None
    # The old server is remembered: the second lookup goes straight to the old path.
    assert fake_tb.requests.count("GET /api/tenant/device") == 1


def test_paging_walks_every_page(fake_tb):
    names = [d["name"] for d in client(fake_tb).iter_tenant_devices(page_size=2)]
    assert names == ["dev0", "dev1", "dev2", "dev3", "dev4"]


def test_5xx_and_429_are_retried_then_succeed(fake_tb):
    fake_tb.fail_next = [503, 429]
    c = client(fake_tb)
    assert c.get_device_by_name("dev0") is not None


def test_persistent_5xx_becomes_unavailable_after_n_attempts(fake_tb):
    fake_tb.fail_next = [503] * 10
    with pytest.raises(TbUnavailableError) as exc:
        client(fake_tb, retries=3).get_device_by_name("dev0")
    assert f"cannot reach ThingsBoard at {fake_tb.url} after 3 attempts (HTTP 503)" in str(exc.value)


def test_unreachable_server_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = TbRestClient(f"http://127.0.0.1:{port}", "u", "p", retries=2, backoff_s=0.01)
    with pytest.raises(TbUnavailableError) as exc:
        c.login()
    assert str(exc.value).startswith(f"cannot reach ThingsBoard at http://127.0.0.1:{port} after 2 attempts")
    assert "TB_URL" in str(exc.value)


def test_token_is_refreshed_before_it_expires(fake_tb):
    fake_tb.token_life_s = 30  # inside the refresh margin: every call refreshes first
    c = client(fake_tb)
    c.get_device_by_name("dev0")
    c.get_device_by_name("dev1")
    assert fake_tb.logins == 1 and fake_tb.refreshes >= 1


def test_bare_string_error_bodies_and_404s_are_typed(fake_tb):
    c = client(fake_tb)
    with pytest.raises(TbApiError) as exc:
        c.get_latest("DEVICE", "x", ["a"])
    assert exc.value.status == 400 and exc.value.api_message == "Invalid JSON"
    with pytest.raises(TbNotFoundError) as nf:
        c.get_device_credentials("nope")
    assert nf.value.error_code == 32


def test_get_or_create_asset_takes_the_existing_one_after_a_name_race(fake_tb, monkeypatch):
    c = client(fake_tb)
    calls = iter([None, {"id": {"entityType": "ASSET", "id": "a1"}, "name": "Zone A"}])
    monkeypatch.setattr(c, "get_asset_by_name", lambda name: next(calls))
    assert c.get_or_create_asset("Zone A", "WeatherStation")["id"]["id"] == "a1"
