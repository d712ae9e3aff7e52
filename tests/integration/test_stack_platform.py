"""The whole local stack through the CLI, as a user meets it after a crash: stale pid files are
recovered, `stack up --json` starts Kafka and the embedded platform and prints one JSON object,
`status` sees both answer, and `down` leaves no process and frees every port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import psutil
import pytest
import requests
from typer.testing import CliRunner

from tbspark.cli import app

pytestmark = pytest.mark.kafka
runner = CliRunner()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_up_json_status_down_from_a_crashed_state_dir(tmp_path):
    # What a crash leaves: pid files and a services.json naming processes that are gone.
    dead = _dead_pid()
    (tmp_path / "kafka").mkdir()
    (tmp_path / "platform").mkdir()
    (tmp_path / "kafka" / "kafka.pid").write_text(f"{dead}\n")
    (tmp_path / "platform" / "platform.pid").write_text(f"{dead}\n")
    (tmp_path / "platform" / "endpoint.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": dead}))
    (tmp_path / "services.json").write_text(json.dumps(
        {"kafka": {"bootstrap": "127.0.0.1:1", "port": 1, "controller_port": 2, "pid": dead,
                   "log": "x", "config": str(tmp_path / "kafka" / "server.properties")}}))
    stale = runner.invoke(app, ["stack", "status", "--state-dir", str(tmp_path), "--json"])
    assert json.loads(stale.stdout)["kafka"]["alive"] is False

    up = runner.invoke(app, ["stack", "up", "--state-dir", str(tmp_path), "--kafka-port", "0", "--http-port", "0",
                             "--mqtt-port", "0", "--partitions", "2", "--json"])
    assert up.exit_code == 0, up.output
    services = json.loads(up.stdout)
    k, p = services["kafka"], services["platform"]
    assert set(services) == {"kafka", "platform"}
    assert k["bootstrap"] == f"127.0.0.1:{k['port']}"
    assert k["topics"] == {"weather-stations-data": 2}
    assert k["log"] == str(tmp_path / "kafka" / "kafka.log")
    assert p["url"] == f"http://127.0.0.1:{p['http_port']}"
    assert p["ui_url"] == p["url"] + "/tbspark/ui"  # the live page (it asks for a login)
    assert p["log"] == str(tmp_path / "platform" / "platform.log")
    assert json.loads((tmp_path / "services.json").read_text()) == services

    assert requests.get(f"{p['url']}/tbspark/health", timeout=5).status_code == 200
    with socket.create_connection(("127.0.0.1", p["mqtt_port"]), timeout=5):
        pass
    status_run = runner.invoke(app, ["stack", "status", "--state-dir", str(tmp_path), "--json"])
    assert status_run.exit_code == 0  # every service it lists is up
    status = json.loads(status_run.stdout)
    assert status["up"] is True and status["kafka"]["up"] is True and status["platform"]["up"] is True
    assert status["kafka"]["pid"] == k["pid"] and status["platform"]["pid"] == p["pid"]
    assert status["kafka"]["alive"] is True and status["kafka"]["answers"] is True
    assert status["platform"]["alive"] is True
    # the platform's own counters (status logs in for them: /tbspark/stats takes a JWT)
    assert status["platform"]["stats"]["http"]["port"] == p["http_port"]
    assert status["platform"]["answers"] is True and status["platform"]["ui_url"] == p["ui_url"]
    shown = runner.invoke(app, ["stack", "status", "--state-dir", str(tmp_path)]).stdout
    assert p["ui_url"] in shown
    assert f"{k['bootstrap']} (controller :{k['controller_port']})" in shown
    assert f"http.port={p['http_port']}" in shown

    down = runner.invoke(app, ["stack", "down", "--state-dir", str(tmp_path)])
    assert down.exit_code == 0
    assert f"kafka     pid {k['pid']}: stopped" in down.stdout
    assert f"platform  pid {p['pid']}: stopped" in down.stdout
    for pid in (k["pid"], p["pid"]):
        assert not psutil.pid_exists(pid)
    for port in (k["port"], k["controller_port"], p["http_port"], p["mqtt_port"]):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # and a new stack could take the port
    again = runner.invoke(app, ["stack", "status", "--state-dir", str(tmp_path)])
    assert "No stack recorded" in again.stdout
