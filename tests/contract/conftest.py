"""Where the contract tests point: the embedded platform (default), or a real ThingsBoard when TB_URL
is set (with TB_USERNAME / TB_PASSWORD; tests marked ``embedded_only`` are skipped there)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from tb_rest_client.rest_client import RestClient


@dataclass(frozen=True)
class Target:
    url: str
    username: str
    password: str
    embedded: bool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only: checks of the embedded platform only (skipped with TB_URL)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if os.environ.get("TB_URL"):
        skip = pytest.mark.skip(reason="embedded platform only (TB_URL points at a real ThingsBoard)")
        for item in items:
            if "embedded_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    url = os.environ.get("TB_URL")
    if url:
        return Target(url.rstrip("/"), os.environ.get("TB_USERNAME", "tenant@thingsboard.org"),
                      os.environ.get("TB_PASSWORD", "tenant"), embedded=False)
    p = request.getfixturevalue("platform")
    return Target(p.url, "tenant@thingsboard.org", "tenant", embedded=True)


@pytest.fixture()
def client(target: Target) -> RestClient:
    c = RestClient(target.url)
    c.login(target.username, target.password)
    return c


@pytest.fixture()
def http(target: Target):
    from tests.fixtures.platform import tenant_session

    return tenant_session(target.url, target.username, target.password)


@pytest.fixture()
def unique() -> str:
    return uuid.uuid4().hex[:8]
