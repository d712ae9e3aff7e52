"""The single SQLite writer: a thread that runs queued write functions with group commit.

Everything queued while one transaction runs goes into the next one, so ingest is not bound by one
commit per message. A caller's future completes only after COMMIT (WAL, synchronous=NORMAL), so an
acknowledged write survives kill -9 of the process.

A small write submitted while the writer is idle (nothing queued or in flight) is committed right away
on the caller's thread instead: handing it to the thread and back costs more CPU than the commit
itself (~45 µs), and order is kept because nothing older is pending.

A transaction that cannot commit (disk full, database locked by another process) fails every future
in it: nothing of it is acknowledged. The first such failure is logged with its cause, the following
ones only counted, and the first commit that succeeds again logs the recovery: nothing needs a
restart once the cause is gone.
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


def storage_trouble(exc: BaseException) -> bool:
    """Whether a failed write failed for the storage's sake (disk full, I/O, locked, corrupt): then
    nothing of its batch may be acknowledged, and it will succeed once the cause is gone. A write
    that failed for its own values (an integer SQLite cannot hold, text it cannot encode) would fail
    again on every resend: it takes its node's Failure route, and the others' acknowledgements do
    not wait for it. Device payloads never get that far (values.py refuses such values at the door);
    only a rule chain's own transformations can."""
    return isinstance(exc, (sqlite3.OperationalError, sqlite3.InternalError)) or type(exc) is sqlite3.DatabaseError


class Writer:
    def __init__(self, path) -> None:
        self.path = path
        self._conn = schema.connect(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tbspark-store-writer", daemon=True)
        self.transactions = 0
        self.writes = 0
        self._closed = False
        self._commit_lock = threading.Lock()  # held by whoever runs a transaction on self._conn
        self._count_lock = threading.Lock()
        self._pending = 0  # queued or in-flight items of the writer thread
        self.inline = 0
        self.failed_transactions = 0  # writes or commits that failed for storage reasons (see failed)
        self._failing: str | None = None  # the cause while commits fail, None when healthy
        self.on_rollback: list[Any] = []  # called (under the commit lock) when a whole transaction failed
        self._thread.start()

    def submit(self, fn: WriteFn, small: bool = False) -> concurrent.futures.Future:
        """Queue ``fn(conn)``; the future holds its result once the transaction has committed.
        ``small``: may be committed at once on this thread when the writer is idle."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(RuntimeError("store is closed"))
            return fut
        if small and self._commit_lock.acquire(blocking=False):
            try:
                if self._pending == 0:
                    self.inline += 1
                    self._commit([(fn, fut)])
                    return fut
            finally:
                self._commit_lock.release()
        with self._count_lock:
            self._pending += 1
        self._queue.put((fn, fut))
        return fut

    def run(self, fn: WriteFn, small: bool = True) -> Any:
        """Blocking form of :meth:`submit`."""
        return self.submit(fn, small).result()

    def close(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        with self._commit_lock:  # an inline commit may still be running on another thread
            self._conn.close()

    def status(self) -> dict:
        return {"failing": self._failing, "failed_transactions": self.failed_transactions}

    def failed(self, exc: BaseException, always: bool = False) -> None:
        """A write failed. Storage trouble (storage_trouble: disk full, I/O, locked; or ``always``:
        the commit itself) is counted and logged once per outage, with its cause and no traceback
        (the same one would follow every write); a write's own error (a constraint, a bad value) is
        its caller's business."""
        if not (always or storage_trouble(exc)):
            return
        self.failed_transactions += 1
        if self._failing is None:
            self._failing = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, sqlite3.Error):
                log.error("store writes fail: %s — nothing is acknowledged until they succeed again "
                          "(free disk space, or stop what locks %s)", self._failing, self.path)
            else:
                log.error("store transaction failed", exc_info=exc)

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
                with self._commit_lock:
                    self._commit(batch)
                with self._count_lock:
                    self._pending -= len(batch)

    def _commit(self, batch: list) -> None:
        conn = self._conn
        results: list[tuple[concurrent.futures.Future, bool, Any]] = []
        failures = self.failed_transactions
        try:
            # Deferred BEGIN: this is the only writer (the state-dir lock keeps other processes out),
            # so there is no lock upgrade to race for, and it saves a lock round per transaction.
            conn.execute("BEGIN")
            if len(batch) == 1:  # alone in its transaction: no savepoint needed
                fn, fut = batch[0]
                try:
                    value = fn(conn)
                except Exception as exc:
                    self.failed(exc)
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite rolled back itself (it may, on a full disk): the cause is exc
                    for cb in self.on_rollback:
                        cb()
                    fut.set_exception(exc)
                    return
                results.append((fut, True, value))
            for fn, fut in (batch if len(batch) > 1 else ()):
                conn.execute("SAVEPOINT w")
                try:
                    value = fn(conn)
                except BaseException as exc:  # one bad write must not sink the batch
                    self.failed(exc)
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((fut, False, exc))
                else:
                    conn.execute("RELEASE w")
                    results.append((fut, True, value))
            conn.execute("COMMIT")
        except BaseException as exc:  # the commit itself failed: nobody is acknowledged
            self.failed(exc, always=True)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for cb in self.on_rollback:
                cb()
            for fn, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.transactions += 1
        self.writes += len(batch)
        if self._failing is not None and self.failed_transactions == failures:
            log.warning("store writes succeed again after %d failed transactions (%s)",
                        self.failed_transactions, self._failing)
            self._failing = None
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
