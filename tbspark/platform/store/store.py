"""The platform's store: one SQLite file (WAL) with one writer thread, in-memory entity caches.

Durability: a write's awaitable completes after COMMIT; with WAL and synchronous=NORMAL a committed
transaction survives kill -9 of the platform process (only an OS crash or power loss can lose the
last commits). The durability window against process death is therefore zero for acknowledged writes.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from tbspark.platform.store import schema
from tbspark.platform.store.devices import DeviceStore
from tbspark.platform.store.entities import EntityStore
from tbspark.platform.store.rulechains import RuleChainStore
from tbspark.platform.store.telemetry import TelemetryStore
from tbspark.platform.store.writer import Writer


class Store(EntityStore, DeviceStore, RuleChainStore, TelemetryStore):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = schema.connect(self.path)
        try:
            schema.create(conn)
            self._load_rule_chains(conn)  # first: it creates the chain-listener list others notify
            self._load_entities(conn)
            self._init_telemetry(conn)
        finally:
            conn.close()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = Writer(self.path)
        self._writer.on_rollback.append(self._forget_sids)

    def _read(self) -> sqlite3.Connection:
        """This thread's read connection (WAL lets readers run beside the writer)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def flush(self) -> None:
        """Block until everything queued so far has committed."""
        self._writer.run(lambda conn: None)

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._readers.clear()

    def stats(self) -> dict:
        return {
            "devices": len(self._devices),
            "assets": len(self._assets),
            "rule_chains": len(self._rule_chains),
            "transactions": self._writer.transactions,
            "writes": self._writer.writes,
            "inline_commits": self._writer.inline,
            "ts_points_written": self.ts_points_written,
            "attr_values_written": self.attr_values_written,
            "write_failures": self.write_failures,
            **self._writer.status(),
            "db_bytes": self.path.stat().st_size if self.path.exists() else 0,
        }

    def reset(self) -> None:
        """Drop every device, asset, custom chain and all telemetry (tests); keeps tenants, users,
        the default profiles and the root chain."""
        keep_chains = {rc.id for rc in self._rule_chains.values() if rc.root}
        keep_profiles = {p.id for p in self._device_profiles.values() if p.is_default}
        keep_aprofiles = {p.id for p in self._asset_profiles.values() if p.is_default}
        keep = keep_chains | keep_profiles | keep_aprofiles

        def fn(conn: sqlite3.Connection) -> None:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM entity WHERE kind IN ('device','asset','rule_chain','device_profile','asset_profile')")]
            conn.executemany("DELETE FROM entity WHERE id=?", [(i,) for i in ids if i not in keep])
            for table in ("credentials", "ts_kv", "ts_latest", "ts_series", "attr", "ts_expiry"):
                conn.execute(f"DELETE FROM {table}")
            self._sids.clear()
            self._ttl_sids.clear()
        self._writer.run(fn)
        for d in list(self._devices):
            self._uncache_device(d)
        self._assets.clear()
        self._assets_by_name.clear()
        self._rule_chains = {k: v for k, v in self._rule_chains.items() if k in keep_chains}
        self._device_profiles = {k: v for k, v in self._device_profiles.items() if k in keep_profiles}
        self._asset_profiles = {k: v for k, v in self._asset_profiles.items() if k in keep_aprofiles}
        self._notify_chains(None)
        self._notify_attr_change(None, None, None)  # every attribute is gone
