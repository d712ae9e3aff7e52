"""The differential suite's targets: the embedded platform always (the shared ``platform`` fixture),
and a real ThingsBoard when ``TB_URL`` names one (with TB_MQTT_HOST / TB_MQTT_PORT, TB_USERNAME /
TB_PASSWORD)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

from tests.differential.harness import Target


def live_target() -> Target | None:
    url = os.environ.get("TB_URL")
    if not url:
        return None
    return Target("thingsboard", url.rstrip("/"), os.environ.get("TB_MQTT_HOST") or urlparse(url).hostname,
                  int(os.environ.get("TB_MQTT_PORT", "1883")),
                  os.environ.get("TB_USERNAME", "tenant@thingsboard.org"), os.environ.get("TB_PASSWORD", "tenant"))


@pytest.fixture(scope="session")
def embedded(platform) -> Target:
    return Target("embedded", platform.url, platform.mqtt_host, platform.mqtt_port)


@pytest.fixture(scope="session")
def live() -> Target | None:
    t = live_target()
    yield t
    if t is not None:  # leave the shared server as we found it: only the suite's own tbdiff-* entities
        from tests.differential.exchanges.helpers import sweep

        sweep(t)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realtb: needs a real ThingsBoard (TB_URL); skipped with a reason otherwise")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from tests.differential.test_differential import RESULTS

    if not RESULTS:
        return
    terminalreporter.section("differential suite")
    for name, r in sorted(RESULTS.items()):
        verdict = "passed" if not r["differences"] and not r["stale"] else "FAILED"
        terminalreporter.write_line(f"{name:28s} {verdict:7s} against {r['against']}: {r['differences']} "
                                    f"undocumented, {r['known']} known, {r['stale']} stale"
                                    + (f" (first: {r['first']})" if r["first"] else ""))
