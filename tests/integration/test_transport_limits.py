"""Connection limits of the platform (issue 17): clients that trickle a byte now and then are closed
by the CONNECT deadline and never hold more than the half-open cap, while an established session
keeps being served; REST connections whose headers or body never finish are closed by their
deadlines. A platform of its own with short deadlines, so that all of it takes seconds."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

from tbspark.mqtt import codec as c
from tests.fixtures.platform import start_platform, tenant_session
from tests.fixtures.rawmqtt import RawMqtt

CONNECT_TIMEOUT_S = 2.0
MAX_HALF_OPEN = 20
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
TRICKLERS = 60
SWEEP_SLACK_S = 2.5  # the deadline is checked once a second, on a shared 2-core machine


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("limits-platform"), extra_env={
        "TBSPARK_MQTT_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        "TBSPARK_MQTT_MAX_HALF_OPEN": str(MAX_HALF_OPEN),
        "TBSPARK_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TBSPARK_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    try:
        yield p
    finally:
        p.stop()


def _token(p) -> str:
    http = tenant_session(p.url)
    dev = http.post(f"{p.url}/api/device", json={"name": f"harden-ingest-{uuid.uuid4().hex[:8]}"},
                    timeout=10).json()["id"]["id"]
    return http.get(f"{p.url}/api/device/{dev}/credentials", timeout=10).json()["credentialsId"]


class Trickler(threading.Thread):
    """Sends a CONNECT one byte every 0.3 s (it would take ~15 s); records when the server closed it."""

    def __init__(self, host: str, port: int, token: str):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.data = c.encode_connect("trickle", username=token, keep_alive=60)
        self.opened = time.monotonic()
        self.closed_after: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.3)
        for i in range(len(self.data)):
            if self.stop.is_set():
                break
            try:
                self.sock.send(self.data[i:i + 1])
                if self.sock.recv(16) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        else:
            return
        if not self.stop.is_set():
            self.closed_after = time.monotonic() - self.opened
        self.sock.close()


def test_trickling_clients_are_capped_and_closed_while_a_session_is_served(limited):
    token = _token(limited)
    device = RawMqtt(limited.mqtt_host, limited.mqtt_port, token)
    tricklers = [Trickler(limited.mqtt_host, limited.mqtt_port, token) for _ in range(TRICKLERS)]
    for t in tricklers:
        t.start()
    try:
        # While they trickle, the established session is served: every PUBACK within a second.
        started = time.monotonic()
        pid = 0
        while time.monotonic() - started < CONNECT_TIMEOUT_S + SWEEP_SLACK_S:
            pid += 1
            t0 = time.monotonic()
            device.publish("v1/devices/me/telemetry", b'{"alive": 1}', qos=1, packet_id=pid)
            ptype, _f, body = device.recv(timeout_s=5)
            assert (ptype, body[:2]) == (c.PUBACK, pid.to_bytes(2, "big"))
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.1)  # pacing of the healthy device, not a wait for a condition
        # ... and a new device still gets in (its socket pushes out the oldest half-open one).
        RawMqtt(limited.mqtt_host, limited.mqtt_port, token).close()
        for t in tricklers:
            t.join(timeout=CONNECT_TIMEOUT_S + SWEEP_SLACK_S)
        closed = [t.closed_after for t in tricklers if t.closed_after is not None]
        assert len(closed) == TRICKLERS, f"{TRICKLERS - len(closed)} trickling clients still open"
        # Beyond the cap, sockets were closed at once; none lived much past the CONNECT deadline.
        assert sum(1 for a in closed if a < 1.0) >= TRICKLERS - MAX_HALF_OPEN
        assert max(closed) < CONNECT_TIMEOUT_S + SWEEP_SLACK_S
    finally:
        for t in tricklers:
            t.stop.set()
        device.close()


def _closed_within(sock: socket.socket, timeout_s: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``timeout_s``, and what it sent before."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not data:
            return True, got
        got += data
    return False, got


def _http(p) -> tuple[socket.socket, bytes]:
    """A raw connection to the platform's HTTP port, and the Host header it answers to."""
    host, port = p.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10), f"Host: {host}:{port}\r\n".encode()


def test_rest_headers_that_never_end_are_closed(limited):
    sock, host = _http(limited)
    try:
        sock.sendall(b"GET /tbspark/health HTTP/1.1\r\n" + host)
        t0 = time.monotonic()
        for _ in range(int((HEADER_TIMEOUT_S + SWEEP_SLACK_S) / 0.25)):  # one header byte every 0.25 s
            try:
                sock.sendall(b"X")
            except OSError:
                break
            closed, _got = _closed_within(sock, 0.25)
            if closed:
                break
        else:
            pytest.fail("a request whose headers never end is still open")
        assert time.monotonic() - t0 < HEADER_TIMEOUT_S + SWEEP_SLACK_S
    finally:
        sock.close()
    assert tenant_session(limited.url).get(f"{limited.url}/tbspark/health", timeout=5).status_code == 200


def test_rest_body_that_never_comes_is_a_408_and_closed(limited):
    sock, host = _http(limited)
    try:
        sock.sendall(b"POST /api/auth/login HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"user")
        closed, got = _closed_within(sock, BODY_TIMEOUT_S + SWEEP_SLACK_S)
        assert closed, "a request whose body never comes is still open"
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
    finally:
        sock.close()
