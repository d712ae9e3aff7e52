"""The single SQLite writer: a thread that runs queued write functions with group commit.

Everything queued while one transaction runs goes into the next one, so ingest is not bound by one
commit per message. A caller's future completes only after COMMIT (WAL, synchronous=NORMAL), so an
acknowledged write survives kill -9 of the process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
from typing import Any, Callable

from tbspark.platform.store import schema

log = logging.getLogger(__name__)

WriteFn = Callable[[sqlite3.Connection], Any]
_STOP = object()
_MAX_BATCH = 5000


class Writer:
    def __init__(self, path) -> None:
        self._conn = schema.connect(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tbspark-store-writer", daemon=True)
        self.transactions = 0
        self.writes = 0
        self._closed = False
        self._thread.start()

    def submit(self, fn: WriteFn) -> concurrent.futures.Future:
        """Queue ``fn(conn)``; the future holds its result once the transaction has committed."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(RuntimeError("store is closed"))
            return fut
        self._queue.put((fn, fut))
        return fut

    def run(self, fn: WriteFn) -> Any:
        """Blocking form of :meth:`submit`."""
        return self.submit(fn).result()

    def close(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stop = True
                batch = [b for b in batch if b is not _STOP]
                # Drain what raced in behind the stop marker too.
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        batch.append(item)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list) -> None:
        conn = self._conn
        results: list[tuple[concurrent.futures.Future, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                conn.execute("SAVEPOINT w")
                try:
                    value = fn(conn)
                except BaseException as exc:  # one bad write must not sink the batch
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((fut, False, exc))
                else:
                    conn.execute("RELEASE w")
                    results.append((fut, True, value))
            conn.execute("COMMIT")
        except BaseException as exc:  # the commit itself failed: nobody is acknowledged
            log.exception("store transaction failed")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for fn, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.transactions += 1
        self.writes += len(batch)
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
