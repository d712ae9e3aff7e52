"""`tbspark verify` against the real embedded platform: zone aggregates written over REST exactly as
the Spark sink writes them (ts = window start), then removed, duplicated or altered — verify must
say so, naming the window, and exit 1; and exit 0 when they are right."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.stack.services import start_platform, stop_platform
from tbspark.state import StateDir, write_json_atomic
from tbspark.thingsboard.rest import TbRestClient


W = 10_000
T0 = 1_800_000_000_000
SENT = {  # raw values per zone per window, from which the ground truth and the aggregates follow
    "A": {T0: [30, 47, 33, 50], T0 + W: [31, 46, 35, 49], T0 + 2 * W: [34, 48]},
    "B": {T0: [30, 60, 44], T0 + W: [45, 41], T0 + 2 * W: [59, 40]},
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state = StateDir(tmp_path_factory.mktemp("verify-platform")).ensure()
    endpoint = start_platform(state, http_port=0, mqtt_port=0)
    try:
        yield endpoint
    finally:
        stop_platform(state)


def _scenario(path: Path, name: str, zones: dict[str, str]) -> Path:
    a, b = zones["A"], zones["B"]
    path.write_text(f"""
name: {name}
platform: {{kind: embedded}}
devices:
  - {{name: "{name} T1", type: WeatherStation, zone: "{a}",
      telemetry: {{windSpeed: {{kind: uniform_int, min: 30, max: 50, rate_hz: 10}}}}}}
  - {{name: "{name} T2", type: WeatherStation, zone: "{b}",
      telemetry: {{windSpeed: {{kind: uniform_int, min: 30, max: 60, rate_hz: 10}}}}}}
expectations:
  zones:
    "{a}": {{mean: 40.0, tolerance: 2.0}}
    "{b}": {{mean: 45.0, tolerance: 5.0}}
  exact: true
""")
    return path


@pytest.fixture
def world(platform, tmp_path):
    """A scenario with two zones of its own, its assets on the platform, the provision record and the
    ground truth in a fresh state dir; ``write(tamper)`` stores the aggregates, tampered or not."""
    name = f"verify-{uuid.uuid4().hex[:8]}"
    zones = {"A": f"{name} Zone A", "B": f"{name} Zone B"}
    scenario = _scenario(tmp_path / f"{name}.yaml", name, zones)
    state = StateDir(tmp_path / "state").ensure()
    write_json_atomic(state.services_file, {"platform": platform})
    tb = TbRestClient(platform["url"], "tenant@thingsboard.org", "tenant")
    assets = {k: tb.get_or_create_asset(z, "WeatherStation")["id"]["id"] for k, z in zones.items()}
    write_json_atomic(state.provision_file, {
        "scenario": name, "complete": True, "tb_url": platform["url"], "created_at_ms": T0 - W,
        "devices": {}, "assets": {zones[k]: {"id": i} for k, i in assets.items()},
        "rule_chain": None, "device_profiles": {}, "gateway": None})
    write_json_atomic(state.groundtruth_file, {
        "scenario": name, "window_s": 10, "timestamps": "device", "value_key": "windSpeed",
        "started_ms": T0, "ended_ms": T0 + 3 * W - 1, "sent": 17, "acked": 17, "errors": 0,
        "devices": {},
        "windows": {zones[k]: {str(ws): {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v),
                                         "near_edge": 0} for ws, v in wins.items()}
                    for k, wins in SENT.items()}})

    def write(tamper=None):
        for k, wins in SENT.items():
            points = [{"ts": ws, "values": {"windSpeed": sum(v) / len(v), "windSpeedCount": len(v),
                                            "windSpeedMin": min(v), "windSpeedMax": max(v)}}
                      for ws, v in sorted(wins.items())]
            if tamper:
                points = tamper(k, points)
            tb.save_telemetry("ASSET", assets[k], points)

    yield {"scenario": scenario, "state": state, "zones": zones, "write": write}
    tb.close()


def run_verify(world, *extra):
    result = CliRunner().invoke(app, ["verify", str(world["scenario"]), "--state-dir",
                                      str(world["state"].root), *extra])
    return result.exit_code, result.output


def test_correct_aggregates_hold(world):
    world["write"]()
    code, out = run_verify(world)
    assert code == 0, out
    assert "HOLDS" in out and "6 window(s) verified" in out
    assert world["zones"]["A"] in out and world["zones"]["B"] in out


def test_removed_window_fails_and_is_named(world):
    world["write"](lambda k, pts: [p for p in pts if not (k == "B" and p["ts"] == T0 + W)])
    code, out = run_verify(world)
    assert code == 1, out
    assert f"{world['zones']['B']} window 08:00:10.000: missing" in out
    assert "DOES NOT HOLD" in out


def test_duplicated_window_fails_and_is_named(world):
    def dup(k, pts):
        if k == "A":
            extra = dict(pts[1], ts=T0 + W + 5000)  # a second point inside the same window
            return pts + [extra]
        return pts
    world["write"](dup)
    code, out = run_verify(world)
    assert code == 1, out
    assert f"{world['zones']['A']} window 08:00:10.000: duplicated" in out


def test_altered_window_fails_and_is_named(world):
    def alter(k, pts):
        if k == "A":
            pts[2] = {"ts": pts[2]["ts"], "values": dict(pts[2]["values"], windSpeed=41.5)}
        return pts
    world["write"](alter)
    code, out = run_verify(world)
    assert code == 1, out
    assert f"{world['zones']['A']} window 08:00:20.000: avg expected 41" in out and "found 41.5" in out


def test_json_shape(world):
    world["write"](lambda k, pts: pts[1:] if k == "A" else pts)
    code, out = run_verify(world, "--json")
    assert code == 1
    d = json.loads(out)
    assert d["holds"] is False and d["exact"] is True and d["windows_verified"] == 5
    assert [m["problem"] for m in d["mismatches"]] == ["missing"]
    assert d["mismatches"][0]["zone"] == world["zones"]["A"] and d["mismatches"][0]["window_start_ms"] == T0
    zone_a = next(z for z in d["zones"] if z["zone"] == world["zones"]["A"])
    assert (zone_a["windows_expected"], zone_a["windows_found"], zone_a["windows_matching"]) == (3, 2, 2)
    assert zone_a["messages_found"] == 6 and zone_a["mean"] == pytest.approx((31 + 46 + 35 + 49 + 34 + 48) / 6)


def test_bad_scenario_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndevices: []\nbogus: 1\n")
    result = CliRunner().invoke(app, ["verify", str(bad), "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output


def test_missing_provision_record_says_what_to_run(world, tmp_path):
    empty = tmp_path / "empty-state"
    empty.mkdir()
    result = CliRunner().invoke(app, ["verify", str(world["scenario"]), "--state-dir", str(empty)])
    assert result.exit_code == 2
    assert "Error: no provision record" in result.output and "tbspark provision" in result.output


def test_demo_and_verify_read_a_gateway_sinks_zone_devices(platform, tmp_path):
    """With ``aggregation.sink: gateway`` the job writes each zone to a device of the zone's name, not
    to an asset: the demo's wait for the last window (verify's own zone lookup and run range) must
    find them there instead of waiting out its timeout, and verify must judge them."""
    from tbspark.demo import _wait_final_window
    from tbspark.scenario import load_scenario
    from tbspark.settings import scenario_connection
    from tbspark.state import GroundTruthRecord, ProvisionRecord

    name = f"verify-gw-{uuid.uuid4().hex[:8]}"
    zones = {"A": f"{name} Zone A", "B": f"{name} Zone B"}
    path = _scenario(tmp_path / f"{name}.yaml", name, zones)
    path.write_text(path.read_text() + "aggregation: {sink: gateway}\n")
    scenario = load_scenario(path)
    state = StateDir(tmp_path / "state").ensure()
    write_json_atomic(state.services_file, {"platform": platform})
    ProvisionRecord(name, {}, tb_url=platform["url"], created_at_ms=T0 - W).save(state.provision_file)
    GroundTruthRecord.from_json({
        "scenario": name, "window_s": 10, "timestamps": "device", "value_key": "windSpeed",
        "started_ms": T0, "ended_ms": T0 + 3 * W - 1,
        "windows": {zones[k]: {str(ws): {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v)}
                               for ws, v in wins.items()} for k, wins in SENT.items()}},
    ).save(state.groundtruth_file)
    tb = TbRestClient(platform["url"], "tenant@thingsboard.org", "tenant")
    for k, wins in SENT.items():
        dev = tb.save_device({"name": zones[k], "type": "WeatherStation"})
        tb.save_telemetry("DEVICE", dev["id"]["id"], [
            {"ts": ws, "values": {"windSpeed": sum(v) / len(v), "windSpeedCount": len(v),
                                  "windSpeedMin": min(v), "windSpeedMax": max(v)}}
            for ws, v in sorted(wins.items())])
    tb.close()

    class Job:  # the Spark job's part the wait asks about: alive, and its last status
        status = None

        def check(self) -> None:
            pass

    conn = scenario_connection(scenario, state)
    assert _wait_final_window(scenario, conn, state, Job(), timeout_s=5.0) is not None
    result = CliRunner().invoke(app, ["verify", str(path), "--state-dir", str(state.root)])
    assert result.exit_code == 0, result.output
    assert "6 window(s) verified" in result.output
