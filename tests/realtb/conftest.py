"""Tests against a real ThingsBoard: they run when TB_URL names one (tools/real-thingsboard.sh up
prints it) and are skipped, with that reason, otherwise. Entities they create carry a unique
prefix, so a shared server is never cleaned up by them."""

from __future__ import annotations

import os

import pytest

REASON = ("needs a real ThingsBoard: set TB_URL (and TB_MQTT_HOST, TB_MQTT_PORT) — "
          "tools/real-thingsboard.sh up prints them (docs/thingsboard.md)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if os.environ.get("TB_URL"):
        return
    skip = pytest.mark.skip(reason=REASON)
    for item in items:
        if "realtb" in item.keywords:
            item.add_marker(skip)
