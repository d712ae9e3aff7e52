"""Acknowledged means stored, without a full disk: the MQTT server's batch acknowledges only when
no store write of the batch failed, and the store's writer reports an outage once and its end once.
(tests/drills/test_disk_full.py is the same on a real full disk, as root.)"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from tbspark.platform.store.writer import Writer
from tbspark.platform.transport.server import MqttServer


class _Session:
    def __init__(self):
        self.written: list[bytes] = []
        self.closed_with: list = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, reason_code=None) -> None:
        self.closed_with.append(reason_code)


class _Store:
    write_failures = 0


class _Engine:
    def __init__(self, store, fail: bool):
        self.store, self.fail = store, fail

    async def process(self, msgs) -> None:
        if self.fail:  # what a save node's failed write leaves behind
            self.store.write_failures += 1


def test_a_batch_is_acknowledged_only_when_its_writes_succeeded():
    store = _Store()
    engine = _Engine(store, fail=True)
    server = MqttServer(store, engine, "127.0.0.1", 0)
    a, b = _Session(), _Session()
    server._queue = [(a, ["m1"], b"\x40\x02\x00\x01"), (b, ["m2", "m3"], b"\x40\x02\x00\x07")]
    server._queued = 3
    asyncio.run(server._drain())
    assert (a.written, b.written) == ([], [])
    assert (a.closed_with, b.closed_with) == ([0x83], [0x83])  # ThingsBoard's IMPLEMENTATION_SPECIFIC_ERROR
    assert server.unstored_batches == 1
    # The store writes again (the disk has room): the next batch is acknowledged.
    engine.fail = False
    c = _Session()
    server._queue, server._queued = [(c, ["m4"], b"\x40\x02\x00\x02")], 1
    asyncio.run(server._drain())
    assert (c.written, c.closed_with) == ([b"\x40\x02\x00\x02"], [])


def test_the_writer_logs_an_outage_once_and_its_end(tmp_path, caplog):
    writer = Writer(tmp_path / "w.db")
    writer.run(lambda conn: conn.execute("CREATE TABLE t(v)"))
    full = sqlite3.OperationalError("database or disk is full")

    def failing(conn):
        raise full

    caplog.set_level(logging.INFO, logger="tbspark.platform.store.writer")
    try:
        for _ in range(5):
            with pytest.raises(sqlite3.OperationalError):
                writer.run(failing)
        with pytest.raises(sqlite3.IntegrityError):  # a write's own error is not an outage
            writer.run(lambda conn: (_ for _ in ()).throw(sqlite3.IntegrityError("UNIQUE")))
        assert writer.status() == {"failing": "OperationalError: database or disk is full", "failed_transactions": 5}
        writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        assert writer.status()["failing"] is None
    finally:
        writer.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store writes fail: OperationalError: database or disk is full" in m for m in messages) == 1
    assert sum("store writes succeed again after 5 failed transactions" in m for m in messages) == 1
    assert all(r.exc_info is None for r in caplog.records)  # the cause, no traceback


def test_a_value_the_store_cannot_hold_fails_its_own_write_only(tmp_path):
    """Text with a lone surrogate (which a rule chain's script could make) cannot be encoded for
    SQLite: that device's write fails, the others' are stored, and the batch's acknowledgements do
    not wait for it (a resend would fail again: holding them back would stall every device)."""
    from tbspark.platform.store import Store

    store = Store(tmp_path / "platform.db")
    try:
        async def run():
            return await store.save_timeseries_many([
                ("DEVICE", "good-1", [(1000, "v", "LONG", 1)]),
                ("DEVICE", "poison", [(1000, "v", "STRING", "a\udfffb")]),
                ("DEVICE", "good-2", [(1000, "v", "LONG", 2)])])

        results = asyncio.run(run())
        assert [r is None for r in results] == [True, False, True]
        assert isinstance(results[1], UnicodeEncodeError)
        assert store.write_failures == 0
        assert store.latest("good-1") == {"v": (1000, "LONG", 1)}
        assert store.latest("good-2") == {"v": (1000, "LONG", 2)}
        assert store.latest("poison") == {}
    finally:
        store.close()
