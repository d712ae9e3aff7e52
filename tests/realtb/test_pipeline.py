"""The whole pipeline on a real ThingsBoard, as a user runs it: the shipped real-ThingsBoard scenario,
unedited, through `tbspark provision` → `simulate` → `aggregate --once` → `verify`, with tbspark's own
Kafka broker on this machine (`tbspark stack up --no-platform`) and ThingsBoard's Kafka node
producing into it. Runs when TB_URL names a real ThingsBoard (tools/real-thingsboard.sh up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.realtb, pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "scenarios" / "wind-turbines-thingsboard.yaml"


def tbspark(*args: str, env: dict, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tbspark", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def kafka_stack(tmp_path_factory):
    """tbspark's Kafka broker alone, on a free port, for ThingsBoard's Kafka node to produce into."""
    state = tmp_path_factory.mktemp("realtb-stack")
    env = {**os.environ}
    up = tbspark("stack", "up", "--no-platform", "--kafka-port", "0", "--state-dir", str(state),
                 "--json", env=env, timeout_s=180)
    assert up.returncode == 0, up.stderr
    record = json.loads(up.stdout)
    try:
        yield record["kafka"]["bootstrap"]
    finally:
        down = tbspark("stack", "down", "--state-dir", str(state), env=env, timeout_s=120)
        assert down.returncode == 0, down.stderr


def _env(bootstrap: str, state: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TBSPARK_STATE_DIR"}
    env["KAFKA_BOOTSTRAP"] = bootstrap
    env["TBSPARK_STATE_DIR"] = str(state)
    return env


def _variant(tmp_path: Path, base: Path, **changes) -> Path:
    """The scenario ``base`` under a unique name (its own chain, devices and zone assets on the
    shared server), with top-level sections updated from ``changes``."""
    doc = yaml.safe_load(base.read_text())
    tag = uuid.uuid4().hex[:6]
    doc["name"] = f"{doc['name']}-{tag}"
    for dev in doc["devices"]:
        dev["name"] = f"{dev['name']} {tag}"
        if "zone" in dev:
            dev["zone"] = f"{dev['zone']} {tag}"
    if "expectations" in doc and doc["expectations"].get("zones"):
        doc["expectations"]["zones"] = {f"{z} {tag}": v for z, v in doc["expectations"]["zones"].items()}
    for section, values in changes.items():
        doc[section] = {**doc.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run_pipeline(scenario: Path, env: dict, duration: str | None = None) -> dict:
    prov = tbspark("provision", str(scenario), "--json", env=env)
    assert prov.returncode == 0, prov.stdout + prov.stderr
    report = json.loads(prov.stdout)
    assert report["delivery"]["ok"] is True, report["delivery"]
    args = ["simulate", str(scenario), "--json"] + (["--duration", duration] if duration else [])
    sim = tbspark(*args, env=env)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    simr = json.loads(sim.stdout)
    assert simr["sent"] > 0 and simr["errors"] == 0, simr
    assert simr["delivery"]["ok"] is True, simr["delivery"]
    agg = tbspark("aggregate", str(scenario), "--once", "--json", env=env)
    assert agg.returncode == 0, agg.stdout[-2000:] + agg.stderr[-3000:]
    ver = tbspark("verify", str(scenario), "--json", env=env)
    verdict = json.loads(ver.stdout)
    assert ver.returncode == 0 and verdict["holds"], ver.stdout[-3000:] + ver.stderr[-2000:]
    return {"provision": report, "simulate": simr, "verify": verdict}


def test_shipped_tutorial_holds_on_real_thingsboard(kafka_stack, tmp_path):
    """The shipped scenario file, not a copy: its chain reaches Kafka without edits."""
    env = _env(kafka_stack, tmp_path / "state")
    out = _run_pipeline(TUTORIAL, env)
    assert out["simulate"]["acked"] == out["simulate"]["sent"] == 900
    assert out["verify"]["windows_verified"] >= 3
    # Idempotent: a second provision changes nothing and the probe still gets through.
    again = tbspark("provision", str(TUTORIAL), "--json", env=env)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["changed"] is False, second
    assert second["delivery"]["ok"] is True


def test_gateway_sink_holds_on_real_thingsboard(kafka_stack, tmp_path):
    scenario = _variant(tmp_path, TUTORIAL, aggregation={"sink": "gateway"})
    out = _run_pipeline(scenario, _env(kafka_stack, tmp_path / "state"), duration="30s")
    assert out["verify"]["windows_verified"] >= 3


def test_fleet_of_300_devices_holds_on_real_thingsboard(kafka_stack, tmp_path):
    doc = {
        "name": f"realtb-fleet-{uuid.uuid4().hex[:6]}",
        "platform": {"kind": "thingsboard"},
        "kafka": {"topic": "weather-stations-data"},
        "devices": [{"name": "RT Station {i:03d}", "count": 300, "type": "WeatherStation",
                     "zones": {"count": 6, "name": "RT Zone {j}"},
                     "telemetry": {"windSpeed": {"kind": "uniform_int", "min": 10, "max": 60,
                                                 "rate_hz": 2}}}],
        "simulation": {"duration_s": 30, "qos": 0, "timestamps": "device"},
        "aggregation": {"window_s": 10, "watermark_s": 5},
        "expectations": {"exact": True},
    }
    doc["devices"][0]["name"] = f"{doc['name']} {{i:03d}}"
    doc["devices"][0]["zones"]["name"] = f"{doc['name']} zone {{j}}"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = _run_pipeline(path, _env(kafka_stack, tmp_path / "state"))
    assert out["simulate"]["sent"] >= 300 * 2 * 25
    assert out["verify"]["windows_verified"] >= 6 * 3


def test_provision_says_when_the_chain_cannot_reach_kafka(kafka_stack, tmp_path):
    """The loss the shipped scenario used to cause: a Kafka address the server cannot resolve.
    provision must say so in one line and exit non-zero, instead of a silent loss."""
    scenario = _variant(tmp_path, TUTORIAL, kafka={"bootstrap_for_platform": "kafka.invalid:19092"})
    env = _env(kafka_stack, tmp_path / "state")
    prov = tbspark("provision", str(scenario), env=env)
    assert prov.returncode != 0
    err = prov.stderr.strip().splitlines()
    assert len(err) == 1 and "does not deliver to Kafka" in err[0], prov.stderr
    assert "kafka.invalid:19092" in err[0]
    assert "Traceback" not in prov.stderr
