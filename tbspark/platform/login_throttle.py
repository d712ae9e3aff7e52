"""Failed-login lockout for POST /api/auth/login, after ThingsBoard's security setting
``maxFailedLoginAttempts``: after that many consecutive failures a username is locked and every
attempt answers TB's 401 "User account is locked due to security policy". ThingsBoard disables the
account until an administrator enables it again; here the lock lasts ``lockout_s`` and doubles with
each further failure (up to ``max_lockout_s``), so nobody has to unlock the tenant of a local stack,
yet guessing stays exponentially slow. A successful login resets the count.

Unknown usernames are counted exactly like known ones: a lock never tells whether a user exists.
Counters live in memory (a restart forgets them) and are keyed by a digest of the username, at most
``max_tracked`` of them, so a flood of invented names cannot grow memory without bound.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from tbspark.platform import errors

LOCKED_MESSAGE = "User account is locked due to security policy"  # ThingsboardErrorResponseHandler


@dataclass(frozen=True)
class LoginPolicy:
    """``max_failed_attempts`` 0 turns the lockout off (ThingsBoard's unset setting)."""

    max_failed_attempts: int = 5
    lockout_s: float = 60.0
    max_lockout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_failed_attempts < 0 or self.lockout_s <= 0 or self.max_lockout_s < self.lockout_s:
            raise ValueError(f"invalid login policy {self}: need max_failed_attempts >= 0, "
                             "lockout_s > 0, max_lockout_s >= lockout_s")

    def lock_s(self, failures: int) -> float:
        """How long the ``failures``-th consecutive failure locks the name (0 below the limit)."""
        if not self.max_failed_attempts or failures < self.max_failed_attempts:
            return 0.0
        doublings = min(failures - self.max_failed_attempts, 32)  # 2**32 × anything > any cap
        return min(self.lockout_s * 2 ** doublings, self.max_lockout_s)


@dataclass
class _Entry:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Thread-safe (logins run on the executor's threads). An attempt is counted as a failure when
    it starts and forgiven when it succeeds, so a burst of parallel guesses cannot all slip in
    before the first one is counted."""

    def __init__(self, policy: LoginPolicy, clock: Callable[[], float] = time.monotonic,
                 max_tracked: int = 10_000) -> None:
        self.policy = policy
        self._clock = clock
        self._max_tracked = max_tracked
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(username: str) -> bytes:
        return hashlib.sha256(username.encode("utf-8", "surrogatepass")).digest()

    def attempt(self, username: str) -> None:
        """Count one attempt for ``username``; raise TB's locked 401 while the name is locked."""
        if not self.policy.max_failed_attempts:
            return
        key = self._key(username)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict()
            else:
                self._entries.move_to_end(key)
                if now < entry.locked_until:
                    raise errors.AuthFailed(LOCKED_MESSAGE)
                if now - entry.last_failure > self.policy.max_lockout_s:
                    entry.failures = 0  # an old streak of typos does not count against today
            entry.failures += 1
            entry.last_failure = now
            lock_s = self.policy.lock_s(entry.failures)
            if lock_s:
                entry.locked_until = now + lock_s

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._entries.pop(self._key(username), None)

    def locked(self, username: str) -> bool:
        with self._lock:
            entry = self._entries.get(self._key(username))
            return entry is not None and self._clock() < entry.locked_until

    def _evict(self) -> None:
        while len(self._entries) > self._max_tracked:
            self._entries.popitem(last=False)  # least recently tried first
