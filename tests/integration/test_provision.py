"""`tbspark provision` against the real embedded platform over REST and MQTT. Each test uses its
own names (the tutorial's scenario with a unique suffix), so the session platform can be shared."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.scenario import load_scenario, packaged_scenario
from tbspark.thingsboard.rest import TbRestClient

TUTORIAL = packaged_scenario("wind-turbines")


def unique_tutorial(tmp_path: Path, device_type: str | None = None,
                    timestamps: str = "device") -> tuple[Path, str]:
    """The tutorial's scenario with every name (scenario, devices, zones, type, topic) made
    unique, so tests sharing the session platform and broker never see each other's data."""
    tag = uuid.uuid4().hex[:6]
    text = TUTORIAL.read_text()
    text = text.replace("topic: weather-stations-data", f"topic: fleet-{tag}")
    text = text.replace("timestamps: device", f"timestamps: {timestamps}")
    text = text.replace("name: wind-turbines", f"name: wind-turbines-{tag}")
    text = text.replace("Wind Turbine ", f"Wind Turbine {tag} ").replace("Zone ", f"Zone {tag} ")
    text = text.replace("type: WeatherStation", f"type: {device_type or 'WeatherStation-' + tag}")
    path = tmp_path / f"wind-{tag}.yaml"
    path.write_text(text)
    return path, tag


@pytest.fixture()
def stack(platform, kafka):
    """The session platform, forwarding to the session's real Kafka broker."""
    return SimpleNamespace(url=platform.url, mqtt_host=platform.mqtt_host,
                           mqtt_port=platform.mqtt_port, kafka_bootstrap=kafka.bootstrap)


def run(args: list[str], stack, state: Path, **env) -> object:
    return CliRunner().invoke(app, [*args, "--state-dir", str(state)], env={
        "TB_URL": stack.url, "TB_MQTT_HOST": stack.mqtt_host,
        "TB_MQTT_PORT": str(stack.mqtt_port), "KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TB_USERNAME": "tenant@thingsboard.org", "TB_PASSWORD": "tenant", **env})


def tb(stack) -> TbRestClient:
    return TbRestClient(stack.url, "tenant@thingsboard.org", "tenant")


def wait_for(check, timeout_s: float = 10.0):
    """Poll a read-back (storage is batched behind the PUBACK) until it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_tutorial_provisions_exactly_its_entities_and_a_second_run_changes_nothing(stack, tmp_path):
    path, tag = unique_tutorial(tmp_path)
    sc = load_scenario(path)
    state = tmp_path / "state"
    first = run(["provision", str(path)], stack, state)
    assert first.exit_code == 0, first.output
    assert "provisioned" in first.output

    record = json.loads((state / "provision.json").read_text())
    assert record["complete"] is True and record["scenario"] == sc.name
    assert sorted(record["devices"]) == [f"Wind Turbine {tag} {i}" for i in (1, 2, 3)]
    client = tb(stack)
    for spec in sc.expand_devices():
        dev = client.get_device_by_name(spec.name)
        assert dev["type"] == spec.type
        assert dev["id"]["id"] == record["devices"][spec.name]["id"]
        token = client.get_device_credentials(dev["id"]["id"])["credentialsId"]
        assert token == record["devices"][spec.name]["token"]
        attrs = wait_for(lambda: client.get_attributes("DEVICE", dev["id"]["id"], "CLIENT_SCOPE")
                         if len(client.get_attributes("DEVICE", dev["id"]["id"], "CLIENT_SCOPE")) == 2
                         else None)
        assert attrs == {"deviceType": spec.type, "geoZone": spec.zone}
    for zone in (f"Zone {tag} A", f"Zone {tag} B"):
        asset = client.get_asset_by_name(zone)
        assert asset["type"] == sc.aggregation.asset_type
        assert record["assets"][zone]["id"] == asset["id"]["id"]
    chain = client.get_rule_chain_by_name(record["rule_chain"]["name"])
    assert chain["id"]["id"] == record["rule_chain"]["id"]
    meta = client.get_rule_chain_metadata(chain["id"]["id"])
    types = [n["type"].rsplit(".", 1)[-1] for n in meta["nodes"]]
    assert len(types) == 9 and "TbSendRPCRequestNode" in types  # RPC goes through the chain, as on ThingsBoard
    kafka = meta["nodes"][types.index("TbKafkaNode")]
    assert kafka["configuration"]["bootstrapServers"] == stack.kafka_bootstrap
    profile = client.get_device_profile_by_name(f"WeatherStation-{tag}")
    assert profile["defaultRuleChainId"]["id"] == chain["id"]["id"]
    client.close()

    second = run(["provision", str(path), "--json"], stack, state)
    assert second.exit_code == 0, second.output
    report = json.loads(second.output)
    assert report["changed"] is False
    assert all(n == 0 for n in report["created"].values())
    assert report["existing"]["devices"] == 3 and report["existing"]["attributes"] == 3
    third = run(["provision", str(path)], stack, state)
    assert "nothing changed" in third.output
    # Without the record, tokens and attributes are read back from the server: still no change.
    (state / "provision.json").unlink()
    fourth = run(["provision", str(path), "--json"], stack, state)
    assert json.loads(fourth.output)["changed"] is False
    assert json.loads((state / "provision.json").read_text())["devices"] == record["devices"]


def test_dry_run_prints_the_plan_and_changes_nothing(stack, tmp_path):
    path, tag = unique_tutorial(tmp_path)
    res = run(["provision", str(path), "--dry-run"], stack, tmp_path / "state")
    assert res.exit_code == 0, res.output
    assert "create 3 devices" in res.output and f"create asset 'Zone {tag} A'" in res.output
    assert not (tmp_path / "state" / "provision.json").exists()
    client = tb(stack)
    assert client.get_device_by_name(f"Wind Turbine {tag} 1") is None
    client.close()


def test_wrong_password_is_one_line_and_leaves_no_record(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path)
    res = run(["provision", str(path)], stack, tmp_path / "state", TB_PASSWORD="wrong")
    assert res.exit_code == 3
    assert res.output.strip().splitlines() == [
        "Error: POST /api/auth/login → 401: Invalid username or password — check TB_USERNAME / "
        "TB_PASSWORD (or the scenario's platform.username/password)"]
    assert not (tmp_path / "state" / "provision.json").exists()


def test_unreachable_server_is_one_line(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = run(["provision", str(path), "--tb-url", f"http://127.0.0.1:{port}"], stack,
              tmp_path / "state")
    assert res.exit_code == 3
    lines = res.output.strip().splitlines()
    assert lines == [f"Error: nothing answers at http://127.0.0.1:{port} (from --tb-url) — start ThingsBoard, "
                     f"or fix the address"]
    assert time.monotonic() - t0 < 4  # said at once, not after the REST client's retries


def test_a_device_type_the_server_refuses_is_one_line_and_no_record(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path, device_type='"   "')
    res = run(["provision", str(path)], stack, tmp_path / "state")
    assert res.exit_code == 3
    assert res.output.strip().splitlines() == [
        "Error: POST /api/deviceProfile → 400: the server refused device type '   ': Device profile "
        "name should be specified! — use another device type in the scenario"]
    assert not (tmp_path / "state" / "provision.json").exists()


@pytest.mark.slow
def test_a_generated_fleet_of_1000_devices_provisions_and_publishes(stack, tmp_path):
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "fleet.yaml"
    path.write_text(f"""
name: fleet-{tag}
devices:
  - name: "T{tag} {{i:04d}}"
    count: 1000
    type: Turbine-{tag}
    zones: {{count: 4, name: "Z{tag} {{j}}"}}
    telemetry:
      windSpeed: {{kind: uniform_int, min: 0, max: 100, rate_hz: 1}}
simulation: {{qos: 1, ramp_per_s: 2000}}
""")
    state = tmp_path / "state"
    res = run(["provision", str(path), "--json"], stack, state)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["created"]["devices"] == 1000 and report["created"]["attributes"] == 1000
    assert report["created"]["assets"] == 4
    sim = run(["simulate", str(path), "--messages", "2", "--json"], stack, state)
    assert sim.exit_code == 0, sim.output
    summary = json.loads(sim.output)
    assert summary["sent"] == 2000 and summary["acked"] == 2000 and summary["errors"] == 0
    gt = json.loads((state / "groundtruth.json").read_text())
    client = tb(stack)
    record = json.loads((state / "provision.json").read_text())
    for name in (f"T{tag} 0001", f"T{tag} 0500", f"T{tag} 1000"):
        dev_id = record["devices"][name]["id"]
        series = wait_for(lambda: client.get_timeseries(
            "DEVICE", dev_id, ["windSpeed"], gt["started_ms"] - 1000, gt["ended_ms"] + 1000)
            .get("windSpeed") if len(client.get_timeseries(
                "DEVICE", dev_id, ["windSpeed"], gt["started_ms"] - 1000, gt["ended_ms"] + 1000)
                .get("windSpeed", [])) == 2 else None)
        assert len(series) == 2
        assert sum(p["value"] for p in series) == gt["devices"][name]["sum"]
    client.close()


def test_unreachable_mqtt_is_one_line_and_no_record(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run(["provision", str(path), "--mqtt-port", str(port)], stack, tmp_path / "state")
    assert res.exit_code == 3
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: could not publish client attributes to 127.0.0.1:{port}")
    assert lines[0].endswith("is the platform running? check TB_MQTT_HOST / TB_MQTT_PORT")
    assert not (tmp_path / "state" / "provision.json").exists()
