"""Database-locked drill (issue 17): another program holds the platform's database write lock while a
device publishes. The store's write fails ("database is locked": its deferred transaction cannot take
the lock, at once or after the 30 s busy timeout), so the point is not acknowledged (the session is
closed: the device resends), the outage is logged once with its cause, and once the lock is released
the platform stores and acknowledges again without a restart. Runs without root."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from tbspark.mqtt import codec as c
from tests.fixtures.platform import start_platform, tenant_session
from tests.fixtures.rawmqtt import RawMqtt

pytestmark = [pytest.mark.drill, pytest.mark.slow]

BUSY_TIMEOUT_S = 30  # tbspark/platform/store/schema.py: PRAGMA busy_timeout, the longest a write can wait


def test_database_locked_nothing_is_acknowledged_and_the_platform_recovers(tmp_path):
    p = start_platform(tmp_path / "state")
    try:
        http = tenant_session(p.url)
        dev = http.post(f"{p.url}/api/device", json={"name": f"harden-ingest-lock-{uuid.uuid4().hex[:6]}"},
                        timeout=10).json()["id"]["id"]
        token = http.get(f"{p.url}/api/device/{dev}/credentials", timeout=10).json()["credentialsId"]
        m = RawMqtt(p.mqtt_host, p.mqtt_port, token)

        lock = sqlite3.connect(p.state_dir / "platform" / "platform.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the write lock, as another program holding the file would
        try:
            m.publish("v1/devices/me/telemetry", '{"ts": 1000, "values": {"v": 1}}', qos=1, packet_id=1)
            assert m.recv(timeout_s=BUSY_TIMEOUT_S + 30) is None, "a point that was not stored was acknowledged"
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        m = RawMqtt(p.mqtt_host, p.mqtt_port, token)  # the device reconnects and resends
        m.publish("v1/devices/me/telemetry", '{"ts": 1000, "values": {"v": 1}}', qos=1, packet_id=2)
        ptype, _f, body = m.recv(timeout_s=30)
        assert (ptype, body[:2]) == (c.PUBACK, b"\x00\x02")
        m.close()
        r = http.get(f"{p.url}/api/plugins/telemetry/DEVICE/{dev}/values/timeseries/history?keys=v&startTs=0"
                     "&endTs=10000", timeout=10)
        assert r.json() == {"v": [{"ts": 1000, "value": "1"}]}
        log = p.log.read_text(errors="replace")
        assert log.count("store writes fail:") == 1
        assert "database is locked" in log
        assert "store writes succeed again" in log
        assert "Traceback" not in log
    finally:
        p.stop()
