"""The failed-login lockout (tbspark/platform/login_throttle.py) on a fake clock: when a name locks,
for how long, how the lock grows and when it is forgiven; and the Host check against DNS rebinding."""

from __future__ import annotations

import pytest

from tbspark.platform.errors import AuthFailed
from tbspark.platform.login_throttle import LOCKED_MESSAGE, LoginPolicy, LoginThrottle
from tbspark.platform.web.security import host_allowed, is_loopback, origin_allowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(t: LoginThrottle, name: str) -> None:
    t.attempt(name)  # counted at the start; a wrong password is simply not forgiven


def is_locked_out(t: LoginThrottle, name: str) -> bool:
    try:
        t.attempt(name)
    except AuthFailed as exc:
        assert (exc.status, exc.message, exc.error_code) == (401, LOCKED_MESSAGE, 10)
        return True
    t.succeeded(name)  # that probe was a correct password: it must not count against the name
    return False


def test_locks_after_n_failures_for_known_and_unknown_names_alike():
    clock = Clock()
    t = LoginThrottle(LoginPolicy(max_failed_attempts=3, lockout_s=60), clock)
    for name in ("tenant@thingsboard.org", "nobody@example.com"):
        for _ in range(3):
            fail(t, name)
        assert t.locked(name) and is_locked_out(t, name)
    assert not t.locked("someone-else@example.com")


def test_lock_expires_then_doubles_up_to_the_cap_and_success_forgives():
    clock = Clock()
    t = LoginThrottle(LoginPolicy(max_failed_attempts=2, lockout_s=10, max_lockout_s=35), clock)
    fail(t, "u"), fail(t, "u")
    clock.now += 9.9
    assert t.locked("u")
    clock.now += 0.2
    assert not t.locked("u")
    locks = []
    for _ in range(4):  # each further failure after a lock ends locks for twice as long, capped
        fail(t, "u")
        start = clock.now
        while t.locked("u"):
            clock.now += 0.5
        locks.append(round(clock.now - start, 1))
    assert locks == [20.0, 35.0, 35.0, 35.0]
    t.attempt("u")
    t.succeeded("u")  # the right password: the count starts again from zero
    fail(t, "u")
    assert not t.locked("u")


def test_parallel_guesses_are_counted_before_any_of_them_is_checked():
    t = LoginThrottle(LoginPolicy(max_failed_attempts=3), Clock())
    started = 0
    with pytest.raises(AuthFailed):
        for _ in range(10):  # none has finished (no succeeded/failed yet): the 4th is refused
            t.attempt("u")
            started += 1
    assert started == 3


def test_an_old_streak_of_typos_is_forgotten():
    clock = Clock()
    t = LoginThrottle(LoginPolicy(max_failed_attempts=3, lockout_s=1, max_lockout_s=60), clock)
    fail(t, "u"), fail(t, "u")
    clock.now += 61
    fail(t, "u")
    assert not t.locked("u")


def test_zero_attempts_means_never_locked_and_memory_is_bounded():
    off = LoginThrottle(LoginPolicy(max_failed_attempts=0), Clock())
    for _ in range(100):
        off.attempt("u")
    assert not off.locked("u")
    t = LoginThrottle(LoginPolicy(max_failed_attempts=1), Clock(), max_tracked=100)
    for i in range(1000):
        fail(t, f"invented-{i}@example.com")
    assert len(t._entries) == 100 and t.locked("invented-999@example.com")


def test_policy_refuses_nonsense():
    for bad in ({"max_failed_attempts": -1}, {"lockout_s": 0}, {"lockout_s": 10, "max_lockout_s": 5}):
        with pytest.raises(ValueError):
            LoginPolicy(**bad)


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("[::1]:8080", True), ("127.0.0.1", True),
    ("app.localhost:80", True), ("10.0.0.5:8080", True), (None, True),
    ("evil.example:8080", False), ("evil.example", False), ("127.0.0.1.nip.io:8080", False),
    ("localhost.evil.example", False),
])
def test_host_header_check(host, allowed):
    assert host_allowed(host) is allowed


def test_loopback_binding():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


@pytest.mark.parametrize("origin, host, allowed", [
    (None, "127.0.0.1:8080", True),                      # devices, SDKs, curl: no Origin
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),   # the live page itself
    ("http://LOCALHOST:8080", "localhost:8080", True),
    ("http://evil.example", "127.0.0.1:8080", False),
    ("http://127.0.0.1:9999", "127.0.0.1:8080", False),  # another local server's page
    ("null", "127.0.0.1:8080", False),                   # sandboxed frame, file: page
    ("http://127.0.0.1:8080", None, False),
])
def test_origin_check(origin, host, allowed):
    assert origin_allowed(origin, host) is allowed
