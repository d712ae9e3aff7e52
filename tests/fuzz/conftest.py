"""Fixtures of the fuzz tests: a platform process of their own (fuzzing creates and deletes entities
at random, which must not disturb the session platform other tests share)."""

from __future__ import annotations

import pytest

from tests.fixtures.platform import start_platform


@pytest.fixture(scope="module")
def own_platform(tmp_path_factory: pytest.TempPathFactory):
    p = start_platform(tmp_path_factory.mktemp("fuzz-platform"))
    try:
        yield p
    finally:
        p.stop()
