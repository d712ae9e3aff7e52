"""Disk-full drill (issue 17): the platform's state directory on a small tmpfs, filled up while a
device publishes QoS 1 points. Every point the platform acknowledged is in its store; the ones it
did not acknowledge are reported (the device would resend them); the outage is logged once with its
cause, and once space is freed the platform stores and acknowledges again without a restart.
Needs root (to mount the tmpfs): skipped with the reason otherwise."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tbspark.mqtt import codec as c
from tests.fixtures.platform import start_platform, tenant_session
from tests.fixtures.rawmqtt import RawMqtt

pytestmark = [pytest.mark.drill, pytest.mark.slow]

TMPFS_SIZE = "8m"
FULL_POINTS = 400     # published while the disk is full (2 KB each: far more than any slack SQLite has)
AFTER_POINTS = 50     # published once space is back
VALUE = "x" * 2000


@pytest.fixture()
def tmpfs_state(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the disk-full drill mounts a tmpfs: run as root")
    state = tmp_path / "state"
    mnt = state / "platform"  # the platform's database and its WAL; the test log stays outside
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path) -> None:
    """Take every free byte of the file system holding ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # big writes first, then the last few bytes
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def _publish(p, token: str, first: int, count: int) -> tuple[list[int], list[int]]:
    """Publish points ts = first..first+count-1 one by one at QoS 1; (acknowledged, not acknowledged).
    A session the platform closes is reopened for the next point, as a device would."""
    acked, unacked = [], []
    m = None
    for ts in range(first, first + count):
        if m is None:
            m = RawMqtt(p.mqtt_host, p.mqtt_port, token)
        m.publish("v1/devices/me/telemetry", f'{{"ts": {ts}, "values": {{"v": "{VALUE}"}}}}', qos=1,
                  packet_id=ts % 60000 + 1)
        got = m.recv(timeout_s=10)
        if got is not None and got[0] == c.PUBACK and got[2][:2] == (ts % 60000 + 1).to_bytes(2, "big"):
            acked.append(ts)
        else:
            assert got is None, f"unexpected answer {got!r}"
            unacked.append(ts)
            m.close()
            m = None
    if m is not None:
        m.close()
    return acked, unacked


def _stored(http, url: str, dev: str) -> set[int]:
    r = http.get(f"{url}/api/plugins/telemetry/DEVICE/{dev}/values/timeseries/history?keys=v&startTs=0"
                 f"&endTs=100000000&limit=100000&orderBy=ASC", timeout=30)
    r.raise_for_status()
    return {pt["ts"] for pt in r.json().get("v", [])}


def test_disk_full_nothing_acknowledged_is_lost_and_the_platform_recovers(tmpfs_state):
    p = start_platform(tmpfs_state)
    try:
        http = tenant_session(p.url)
        dev = http.post(f"{p.url}/api/device", json={"name": f"harden-ingest-full-{uuid.uuid4().hex[:6]}"},
                        timeout=10).json()["id"]["id"]
        token = http.get(f"{p.url}/api/device/{dev}/credentials", timeout=10).json()["credentialsId"]
        filler = tmpfs_state / "platform" / "filler"
        _fill(filler)

        acked, unacked = _publish(p, token, 1_000_000, FULL_POINTS)
        r = http.post(f"{p.url}/api/plugins/telemetry/DEVICE/{dev}/timeseries/ANY",
                      json={"ts": 3_000_000, "values": {"v": VALUE}}, timeout=30)
        rest_answer = (r.status_code, r.json().get("message"))
        print(f"disk full: {len(acked)} acknowledged, {len(unacked)} not acknowledged "
              f"(first not acknowledged: {unacked[:5]})")

        filler.unlink()  # the cause goes away: no restart
        acked_after, unacked_after = _publish(p, token, 2_000_000, AFTER_POINTS)

        stored = _stored(http, p.url, dev)
        lost = sorted(set(acked) - stored)
        assert lost == [], f"{len(lost)} acknowledged points are not stored: {lost[:10]}"
        assert unacked, "the drill never hit the full disk: nothing to prove"
        assert rest_answer == (500, "Failed to save: database or disk is full")
        assert 3_000_000 not in stored
        assert unacked_after == [], f"still refused after space was freed: {unacked_after[:5]}"
        assert set(acked_after) <= stored
        log = p.log.read_text(errors="replace")
        assert log.count("store writes fail:") == 1, "the outage is logged once"
        assert "database or disk is full" in log
        assert "store writes succeed again" in log
        assert "Traceback" not in log
    finally:
        p.stop()
