"""Scenario parsing: the shipped scenarios are valid, and each kind of error names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tbspark.errors import ScenarioError
from tbspark.scenario import load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))

GOOD_DEVICE = """\
name: t
devices:
  - name: a
    zone: Z
    telemetry:
      windSpeed: {kind: uniform_int, min: 1, max: 2, rate_hz: 1}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "scenarios/x.yaml")
    return info.value.issues


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.device_count() == len(sc.expand_devices()) > 0
    assert sc.expected_rate_hz() > 0


def test_tutorial_scenario_is_the_tutorial() -> None:
    sc = load_scenario(REPO / "scenarios" / "wind-turbines.yaml")
    devices = {d.name: d for d in sc.expand_devices()}
    assert list(devices) == ["Wind Turbine 1", "Wind Turbine 2", "Wind Turbine 3"]
    assert [devices[n].zone for n in devices] == ["Zone A", "Zone A", "Zone B"]
    assert devices["Wind Turbine 1"].attributes == {"deviceType": "WeatherStation", "geoZone": "Zone A"}
    ranges = [(g.min, g.max) for g in (devices[n].telemetry["windSpeed"] for n in devices)]
    assert ranges == [(30, 35), (45, 50), (30, 60)]
    for d in devices.values():
        gen = d.telemetry["windSpeed"]
        assert (gen.kind, gen.rate_hz, gen.send_as) == ("uniform_int", 10, "string")
    assert sc.kafka.topic == "weather-stations-data"
    assert sc.aggregation.window_s == 10
    assert {z: e.mean for z, e in sc.expectations.zones.items()} == {"Zone A": 40.0, "Zone B": 45.0}
    assert sc.expected_rate_hz() == 30


def test_generated_group_names_and_zone_assignment() -> None:
    sc = parse_scenario(
        "name: f\ndevices:\n  - name: 'T {i:04d}'\n    count: 5\n    zones: {count: 2, name: 'Z{j}'}\n"
        "    telemetry:\n      windSpeed: {kind: constant, value: 3, rate_hz: 10}\n"
    )
    assert [(d.name, d.zone) for d in sc.expand_devices()] == [
        ("T 0001", "Z1"), ("T 0002", "Z2"), ("T 0003", "Z1"), ("T 0004", "Z2"), ("T 0005", "Z1"),
    ]
    assert sc.expected_rate_hz() == 50


def test_rate_must_be_positive_names_line_and_path() -> None:
    text = GOOD_DEVICE.replace("rate_hz: 1}", "rate_hz: 0}")
    assert errors_of(text) == ["scenarios/x.yaml:6 devices[0].telemetry.windSpeed.rate_hz: must be > 0"]


def test_unknown_key() -> None:
    text = GOOD_DEVICE.replace("    zone: Z\n", "    zone: Z\n    colour: red\n")
    assert errors_of(text) == ["scenarios/x.yaml:5 devices[0].colour: unknown key"]


def test_unknown_top_level_key() -> None:
    assert errors_of(GOOD_DEVICE + "spark: {}\n") == ["scenarios/x.yaml:7 spark: unknown key"]


def test_missing_required_key() -> None:
    text = GOOD_DEVICE.replace("name: t\n", "")
    assert errors_of(text) == ["scenarios/x.yaml:1 name: required key missing"]


def test_bad_choice() -> None:
    text = GOOD_DEVICE + "simulation: {qos: 2}\n"
    assert errors_of(text) == ["scenarios/x.yaml:7 simulation.qos: must be one of 0 or 1"]


def test_generator_fields_must_fit_kind() -> None:
    text = GOOD_DEVICE.replace("{kind: uniform_int, min: 1, max: 2, rate_hz: 1}", "{kind: normal, mean: 1, rate_hz: 1}")
    assert errors_of(text) == ["scenarios/x.yaml:6 devices[0].telemetry.windSpeed: a normal generator needs stddev"]


def test_min_above_max() -> None:
    text = GOOD_DEVICE.replace("min: 1, max: 2", "min: 5, max: 2")
    assert errors_of(text) == ["scenarios/x.yaml:6 devices[0].telemetry.windSpeed: min (5) must be <= max (2)"]


def test_several_errors_are_all_reported() -> None:
    text = GOOD_DEVICE.replace("rate_hz: 1}", "rate_hz: -1}") + "kafka: {partitions: 0}\n"
    assert errors_of(text) == [
        "scenarios/x.yaml:6 devices[0].telemetry.windSpeed.rate_hz: must be > 0",
        "scenarios/x.yaml:7 kafka.partitions: must be >= 1",
    ]


def test_duplicate_key() -> None:
    text = GOOD_DEVICE.replace("    zone: Z\n", "    zone: Z\n    zone: Y\n")
    assert errors_of(text) == ["scenarios/x.yaml:5 devices[0].zone: key appears twice"]


def test_yaml_syntax_error_names_the_line() -> None:
    assert errors_of(GOOD_DEVICE + "aggregation: {window_s: 10\n") == [
        "scenarios/x.yaml:8: while parsing a flow mapping: did not find expected ',' or '}' — "
        "fix the YAML syntax at that line"]


def test_duplicate_device_names_and_unknown_expected_zone() -> None:
    text = GOOD_DEVICE + "  - name: a\n    zone: Z\n    telemetry:\n      windSpeed: {kind: constant, value: 1, rate_hz: 1}\n"
    assert errors_of(text) == ["scenarios/x.yaml:1 (top level): device name 'a' appears twice"]
    text = GOOD_DEVICE + "expectations:\n  zones:\n    Nowhere: {mean: 1, tolerance: 1}\n"
    assert errors_of(text) == ["scenarios/x.yaml:1 (top level): expectations name zones no device is in: Nowhere"]


def test_group_with_count_needs_a_pattern() -> None:
    text = GOOD_DEVICE.replace("  - name: a\n", "  - name: a\n    count: 3\n")
    assert errors_of(text) == [
        "scenarios/x.yaml:3 devices[0]: a group with count > 1 needs {i} in its name, e.g. 'Turbine {i:04d}'"
    ]


def test_missing_file() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("/nonexistent/s.yaml")
    assert info.value.issues == ["/nonexistent/s.yaml: no such file"]


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "tbspark", "scenario", "check", str(REPO / "scenarios" / "wind-turbines.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "30.0 msg/s" in ok.stdout and "Zone A, Zone B" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_DEVICE.replace("rate_hz: 1}", "rate_hz: 0}"))
    res = subprocess.run([sys.executable, "-m", "tbspark", "scenario", "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == f"Error: {bad}:6 devices[0].telemetry.windSpeed.rate_hz: must be > 0"
