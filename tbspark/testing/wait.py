"""Waiting on a condition, never on the clock alone."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time. An AssertionError: in a test it is a failure (what was
    expected did not happen), not a crash of the test itself."""


def wait_until(cond: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    """Call ``cond`` until it returns something truthy and return that value, or raise
    ``WaitTimeout`` naming ``what`` (e.g. "the job to write its first window") after ``timeout_s``.
    ``cond`` is checked once more at the deadline, so a slow condition still gets its last look;
    an exception from ``cond`` propagates (a process that died is not something to wait out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        # poll interval of a condition, not a wait for a service
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
