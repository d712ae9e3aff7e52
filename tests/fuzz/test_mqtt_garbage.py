"""Garbage on the platform's MQTT port: random bytes, truncated and lying packets from hundreds of
connections, while healthy devices beside them keep publishing at QoS 1. The server stays up, no
healthy session is dropped, every message it acknowledged is in its store, and no handler crashed."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import requests

from tbspark.testing.wait import wait_until

pytestmark = [pytest.mark.slow]

GARBAGE_CONNECTIONS = int(os.environ.get("TBSPARK_FUZZ_GARBAGE", "600"))
HEALTHY = 4
SEED = int(os.environ.get("TBSPARK_FUZZ_SEED", str(random.randrange(1 << 32))))
CRASH_MARKERS = ("Traceback (most recent call last)", "Fatal error: protocol", "Unhandled exception")


# -- hand-made MQTT 3.1.1 packets (independent of tbspark's codec, which is what is under test) ------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def _connect(token: bytes, client_id: bytes = b"fuzz") -> bytes:
    body = _str(b"MQTT") + bytes([4, 0x82]) + struct.pack(">H", 60) + _str(client_id) + _str(token)
    return bytes([0x10]) + _varint(len(body)) + body


def _publish(topic: bytes, payload: bytes, qos: int = 1, pid: int = 1) -> bytes:
    body = _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


KINDS = 12


def _garbage(rng: random.Random, token: bytes, kind: int | None = None) -> list[bytes]:
    """One connection's worth of abuse: a list of writes."""
    good = _connect(token, b"g%d" % rng.randrange(10**6))
    kind = rng.randrange(KINDS) if kind is None else kind
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 2000))]
    if kind == 1:  # a CONNECT cut anywhere
        return [good[:rng.randrange(1, len(good))]]
    if kind == 2:  # a remaining length of 256 MB announced, then little or nothing
        return [b"\x10\xff\xff\xff\x7f" + rng.randbytes(rng.randrange(0, 50))]
    if kind == 3:  # a varint that never ends
        return [b"\x30" + b"\xff" * rng.randrange(4, 40)]
    if kind == 4:  # connected, then random bytes
        return [good, rng.randbytes(rng.randrange(1, 500))]
    if kind == 5:  # connected, then a PUBLISH cut short
        pub = _publish(b"v1/devices/me/telemetry", b'{"x":1}')
        return [good, pub[:rng.randrange(1, len(pub))]]
    if kind == 6:  # connected, a topic that is not UTF-8
        return [good, _publish(b"v1/devices/me/\xff\xfe", b"{}")]
    if kind == 7:  # connected, payloads that are not JSON / not UTF-8 / deep nesting
        payload = rng.choice([rng.randbytes(64), b"\xff\xfe{", b"[" * 5000, b'{"a":' * 3000, b"",
                              b'{"ts": "x", "values": 5}', b"1e999999", b'{"k": NaN}'])
        return [good, _publish(b"v1/devices/me/telemetry", payload),
                _publish(b"v1/devices/me/attributes", payload, pid=2)]
    if kind == 8:  # a CONNECT with a wrong protocol name/level, or a bad token
        bad = bytearray(good)
        bad[rng.randrange(2, len(bad))] = rng.randrange(256)
        return [bytes(bad)]
    if kind == 9:  # the same packet byte by byte, then garbage
        return [bytes([b]) for b in good] + [rng.randbytes(20)]
    if kind == 10:  # connected, QoS 3 (reserved) and a packet type 0/15
        return [good, bytes([0x36, 0x02, 0, 1]), bytes([0xF0, 0x00]), bytes([0x00, 0x00])]
    return [good, _publish(b"v1/devices/me/rpc/response/abc", rng.randbytes(100)),  # junk RPC ids
            _publish(b"v1/devices/me/rpc/request/-1", b"{", pid=3), b"\xc0\x00" * 3]


async def _abuse(host: str, port: int, writes: list[bytes]) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, asyncio.TimeoutError):
        return
    try:
        for w in writes:
            writer.write(w)
            await writer.drain()
        # read whatever the server answers (or its close) for a moment, then hang up
        try:
            await asyncio.wait_for(reader.read(4096), 0.3)
        except asyncio.TimeoutError:
            pass
    except (OSError, ConnectionError):
        pass
    finally:
        writer.close()


async def _abuse_all(host: str, port: int, token: bytes, rng: random.Random, n: int) -> None:
    sem = asyncio.Semaphore(100)  # up to 100 garbage connections open at once

    async def one() -> None:
        async with sem:
            await _abuse(host, port, _garbage(rng, token))

    await asyncio.gather(*(one() for _ in range(n)))


class Healthy:
    """A well-behaved device publishing QoS 1 telemetry with distinct timestamps, counting PUBACKs."""

    def __init__(self, host: str, port: int, token: str, t0_ms: int):
        self.t0_ms = t0_ms
        self.sent = self.acked = self.disconnects = 0
        self.connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"healthy-{uuid.uuid4().hex[:6]}")
        self.c.username_pw_set(token)
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_disconnect = self._lost
        self.c.on_publish = self._acked
        self.c.max_inflight_messages_set(100)
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()

    def _lost(self, *args) -> None:
        self.disconnects += 1

    def _acked(self, *args) -> None:
        self.acked += 1

    def publish(self) -> None:
        ts = self.t0_ms + self.sent
        self.c.publish("v1/devices/me/telemetry", f'{{"ts":{ts},"values":{{"n":{self.sent}}}}}', qos=1)
        self.sent += 1

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait(cond, timeout_s: float, what: str) -> None:
    wait_until(cond, timeout_s, what)  # a condition set by another thread


def test_garbage_from_hundreds_of_connections_leaves_healthy_sessions_untouched(own_platform):
    p = own_platform
    http = p.session()
    devices = []
    for i in range(HEALTHY + 1):  # the last device's token is used by the garbage connections
        token = uuid.uuid4().hex[:20]
        r = http.post(f"{p.url}/api/device?accessToken={token}",
                      json={"name": f"mqtt fuzz {i} {uuid.uuid4().hex[:6]}", "type": "fuzz"}, timeout=10)
        r.raise_for_status()
        devices.append((r.json()["id"]["id"], token))
    t0_ms = int(time.time() * 1000) - 3_600_000
    healthy = [Healthy(p.mqtt_host, p.mqtt_port, tok, t0_ms) for _, tok in devices[:HEALTHY]]
    for h in healthy:
        assert h.connected.wait(10), "a healthy device did not connect"

    stop = threading.Event()

    def keep_publishing() -> None:
        while not stop.is_set():
            for h in healthy:
                h.publish()
            time.sleep(0.01)  # ~100 messages/s per device: a steady rate beside the garbage

    pub = threading.Thread(target=keep_publishing, daemon=True)
    pub.start()
    try:
        before = [h.sent for h in healthy]
        asyncio.run(_abuse_all(p.mqtt_host, p.mqtt_port, devices[-1][1].encode(), random.Random(SEED),
                               GARBAGE_CONNECTIONS))
        during = [h.sent - b for h, b in zip(healthy, before)]
        # However fast the garbage went, every healthy device ends with a run of at least 60 points.
        _wait(lambda: all(h.sent >= 60 for h in healthy), 30, "the healthy devices stopped publishing")
    finally:
        stop.set()
        pub.join()
    # the healthy devices were publishing while the garbage arrived, not only before or after it
    assert all(d > 0 for d in during), during
    _wait(lambda: all(h.acked == h.sent for h in healthy), 30,
          f"not every QoS 1 message of the healthy devices was acknowledged (seed {SEED}): "
          f"{[(h.sent, h.acked, h.disconnects) for h in healthy]}; platform: "
          f"{p.session().get(f'{p.url}/tbspark/stats', timeout=5).json().get('mqtt')}")
    for h in healthy:
        h.stop()

    # the server is up and takes a new, ordinary connection
    assert p.proc.poll() is None, f"the platform died (seed {SEED})"
    assert requests.get(f"{p.url}/tbspark/health", timeout=5).status_code == 200
    late = Healthy(p.mqtt_host, p.mqtt_port, devices[0][1], t0_ms)
    assert late.connected.wait(10)
    late.stop()
    # no healthy session was dropped, and everything acknowledged is stored, point for point
    assert [h.disconnects for h in healthy] == [1] * HEALTHY  # only their own final disconnect
    for (dev_id, _), h in zip(devices, healthy):
        got = http.get(f"{p.url}/api/plugins/telemetry/DEVICE/{dev_id}/values/timeseries",
                       params={"keys": "n", "startTs": t0_ms, "endTs": t0_ms + h.sent, "limit": 100000},
                       timeout=30).json()
        values = sorted(int(x["value"]) for x in got.get("n", []))
        assert values == list(range(h.sent)), f"stored {len(values)} of {h.acked} acknowledged messages"
    log = p.log.read_text(errors="replace")
    crashes = [m for m in CRASH_MARKERS if m in log]
    assert not crashes, f"the platform log shows a crash (seed {SEED}):\n{log[-3000:]}"
