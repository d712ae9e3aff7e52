"""`stack up` with the embedded platform: both services answer, status shows the platform's counters,
`down` stops both. Runs as soon as `tbspark platform serve` exists."""

from __future__ import annotations

import socket

import psutil
import pytest
import requests
from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.stack.services import stack_down, stack_status, stack_up


def _platform_serve_exists() -> bool:
    return CliRunner().invoke(app, ["platform", "serve", "--help"]).exit_code == 0


pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not _platform_serve_exists(), reason="`tbspark platform serve` does not exist yet"),
]


def test_up_starts_kafka_and_the_platform_and_down_stops_both(tmp_path):
    services = stack_up(tmp_path, kafka_port=0, http_port=0, mqtt_port=0)
    try:
        p = services["platform"]
        assert p["url"] == f"http://127.0.0.1:{p['http_port']}"
        assert requests.get(f"{p['url']}/tbspark/health", timeout=5).status_code == 200
        with socket.create_connection(("127.0.0.1", p["mqtt_port"]), timeout=5):
            pass
        status = stack_status(tmp_path)
        assert status["platform"]["alive"] is True and status["kafka"]["answers"] is True
    finally:
        result = stack_down(tmp_path)
    assert result["platform"]["pids"] == {p["pid"]: "stopped"}
    assert result["kafka"]["pids"] == {services["kafka"]["pid"]: "stopped"}
    for pid in (p["pid"], services["kafka"]["pid"]):
        assert not psutil.pid_exists(pid)
    for port in (p["http_port"], p["mqtt_port"], services["kafka"]["port"]):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
