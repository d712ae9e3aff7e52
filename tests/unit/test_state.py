"""The records passed between stages (tbspark/state.py): what one stage saves the next loads unchanged,
files written by earlier versions load, and a missing, cut-short or damaged file is one line naming
the file and what to run — never a KeyError or a JSON traceback."""

from __future__ import annotations

import json
import stat

import pytest

from tbspark.errors import EXIT_USAGE, StateError
from tbspark.scenario import parse_scenario
from tbspark.simulate.groundtruth import GroundTruth
from tbspark.state import (
    DeviceRecord,
    GatewayRecord,
    GroundTruthRecord,
    ProvisionRecord,
    StackRecord,
    StateDir,
    WindowTruth,
)

# provision.json exactly as `tbspark provision` has written it (before the typed record)
OLD_PROVISION = {
    "scenario": "wind", "complete": True, "tb_url": "http://127.0.0.1:8080",
    "created_at_ms": 1_800_000_000_000,
    "devices": {"Turbine 1": {"id": "d-1", "token": "tok1", "type": "WeatherStation", "zone": "North",
                              "attrs": "0123456789abcdef"},
                "Turbine 2": {"id": "d-2", "token": "tok2", "type": "WeatherStation", "zone": "South",
                              "attrs": None}},
    "assets": {"North": {"id": "a-1"}, "South": {"id": "a-2"}},
    "rule_chain": {"id": "rc-1", "name": "tbspark wind → Kafka"},
    "device_profiles": {"WeatherStation": "p-1"},
    "gateway": {"name": "Analytics Gateway", "id": "g-1", "token": "gtok"},
}

# groundtruth.json exactly as `tbspark simulate` has written it
OLD_GROUNDTRUTH = {
    "scenario": "wind", "window_s": 10.0, "timestamps": "device", "value_key": "windSpeed",
    "started_ms": 1_800_000_000_100, "ended_ms": 1_800_000_019_900, "sent": 3, "acked": 3, "errors": 0,
    "devices": {"Turbine 1": {"zone": "North", "sent": 3, "acked": 3, "sum": 101, "acked_sum": 101}},
    "windows": {"North": {"1800000000000": {"count": 2, "sum": 70, "min": 30, "max": 40, "near_edge": 1},
                          "1800000010000": {"count": 1, "sum": 31.5, "min": 31.5, "max": 31.5,
                                            "near_edge": 0}}},
}

# services.json exactly as `tbspark stack up` has written it
OLD_SERVICES = {
    "kafka": {"bootstrap": "127.0.0.1:9092", "port": 9092, "pid": 4242, "config": "/s/kafka/server.properties",
              "brokers": [{"node_id": 1, "bootstrap": "127.0.0.1:9092", "port": 9092, "pid": 4242}],
              "replication_factor": 1, "topics": {"weather-stations-data": 1}},
    "platform": {"url": "http://127.0.0.1:8080", "ui_url": "http://127.0.0.1:8080/tbspark/ui",
                 "http_port": 8080, "mqtt_port": 1883, "pid": 4343, "log": "/s/platform/platform.log"},
}

SCENARIO = """
name: wind
devices:
  - {name: Turbine 1, type: WeatherStation, zone: North,
     telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}
  - {name: Turbine 2, type: WeatherStation, zone: South,
     telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}
"""


def _write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_provision_record_round_trip_is_owner_only(tmp_path):
    rec = ProvisionRecord("wind", {"T": DeviceRecord("d", "t", "WS", "Z", "ff")}, tb_url="http://x",
                          created_at_ms=5, assets={"Z": "a"}, rule_chain_id="rc", rule_chain_name="n",
                          device_profiles={"WS": "p"}, gateway=GatewayRecord("G", "g", "gt"))
    path = tmp_path / "provision.json"
    rec.save(path)
    assert ProvisionRecord.load(path) == rec
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds device tokens
    assert not list(tmp_path.glob(".provision.json.*"))  # no temp file left beside it


def test_old_provision_file_loads_and_is_written_back_the_same(tmp_path):
    rec = ProvisionRecord.load(_write(tmp_path / "provision.json", OLD_PROVISION))
    assert rec.devices["Turbine 1"] == DeviceRecord("d-1", "tok1", "WeatherStation", "North", "0123456789abcdef")
    assert rec.assets == {"North": "a-1", "South": "a-2"} and rec.rule_chain_id == "rc-1"
    assert rec.gateway == GatewayRecord("Analytics Gateway", "g-1", "gtok")
    assert rec.tokens() == {"Turbine 1": "tok1", "Turbine 2": "tok2"}
    assert rec.to_json() == OLD_PROVISION


def test_groundtruth_round_trip_and_old_file(tmp_path):
    rec = GroundTruthRecord.load(_write(tmp_path / "groundtruth.json", OLD_GROUNDTRUTH))
    assert rec.windows["North"][1_800_000_000_000] == WindowTruth(2, 70, 30, 40, 1)
    assert rec.to_json() == OLD_GROUNDTRUTH
    rec.save(tmp_path / "again.json")
    assert GroundTruthRecord.load(tmp_path / "again.json") == rec


def test_what_the_simulator_writes_loads_as_it_counted(tmp_path):
    gt = GroundTruth("wind", 10, "device", "windSpeed")
    gt.add_device("T", "North")
    for ts, v in ((1_800_000_000_100, 30), (1_800_000_009_900, 40.5), (1_800_000_010_000, 7)):
        gt.record_sent("T", ts, v)
        gt.record_acked("T", v)
    gt.write(tmp_path / "groundtruth.json")
    rec = GroundTruthRecord.load(tmp_path / "groundtruth.json")
    assert rec.windows["North"] == {1_800_000_000_000: WindowTruth(2, 70.5, 30, 40.5, 2),
                                    1_800_000_010_000: WindowTruth(1, 7, 7, 7, 1)}
    assert (rec.sent, rec.acked, rec.devices["T"].sum) == (3, 3, 77.5)


def test_stack_record_round_trip_and_old_file(tmp_path):
    rec = StackRecord.load(_write(tmp_path / "services.json", OLD_SERVICES))
    assert rec.kafka["bootstrap"] == "127.0.0.1:9092" and rec.platform["mqtt_port"] == 1883
    assert rec.spark is None and rec.to_json() == OLD_SERVICES
    rec.save(tmp_path / "again.json")
    assert StackRecord.load(tmp_path / "again.json") == rec
    assert StackRecord.find(StateDir(tmp_path / "none")) is None  # no stack started there


BAD = [
    # (what is in the file, what the one line says)
    (None, "no {what} at {path}"),
    ("", "is damaged or cut short (not JSON"),
    ('{"scenario": "wind", "devices": {"T": {"id": "d", "tok', "is damaged or cut short (not JSON"),
    ("[1, 2]", "is damaged (not a JSON object)"),
]
RECORDS = [  # (record, its name in messages, a good file, a required field, the path to a typed field)
    (ProvisionRecord, "provision record", OLD_PROVISION, "devices", ["devices", "Turbine 1", "token"]),
    (GroundTruthRecord, "ground truth", OLD_GROUNDTRUTH, "started_ms",
     ["windows", "North", "1800000000000", "count"]),
    (StackRecord, "running stack record (services.json)", OLD_SERVICES, None, ["kafka", "bootstrap"]),
]


def _one_line_error(cls, path) -> StateError:
    with pytest.raises(StateError) as err:
        cls.load(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and err.value.hint  # one line: the file, what to do
    assert err.value.exit_code == EXIT_USAGE
    return err.value


@pytest.mark.parametrize("cls,what,good,_required,_typed", RECORDS)
@pytest.mark.parametrize("content,says", BAD)
def test_a_missing_or_damaged_file_is_one_line(tmp_path, cls, what, good, _required, _typed, content, says):
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content)
    err = _one_line_error(cls, path)
    assert says.format(what=what, path=path) in err.message


@pytest.mark.parametrize("cls,what,good,required,typed", RECORDS)
def test_a_partial_record_names_the_field(tmp_path, cls, what, good, required, typed):
    if required:
        partial = {k: v for k, v in good.items() if k != required}
        err = _one_line_error(cls, _write(tmp_path / "partial.json", partial))
        assert f"the {what} at" in err.message and f"is incomplete: it has no {required}" in err.message
    damaged = json.loads(json.dumps(good))
    node = damaged
    for k in typed[:-1]:
        node = node[k]
    node[typed[-1]] = ["not", "a", "value"]
    err = _one_line_error(cls, _write(tmp_path / "damaged.json", damaged))
    assert f"incomplete or damaged: {'.'.join(typed)} is not" in err.message


def test_the_provision_record_must_be_the_scenarios(tmp_path):
    sc = parse_scenario(SCENARIO, tmp_path / "wind.yaml")
    state = StateDir(tmp_path).ensure()
    with pytest.raises(StateError) as err:
        ProvisionRecord.for_scenario(state, sc)
    assert err.value.message == f"no provision record at {state.provision_file}"
    assert err.value.hint == f"run: tbspark provision {tmp_path / 'wind.yaml'}"
    _write(state.provision_file, {**OLD_PROVISION, "scenario": "other"})
    with pytest.raises(StateError, match="is for scenario 'other', not 'wind'"):
        ProvisionRecord.for_scenario(state, sc)
    assert ProvisionRecord.previous(state, "wind") is None  # provision starts afresh
    _write(state.provision_file, {**OLD_PROVISION, "devices": {"Turbine 1": OLD_PROVISION["devices"]["Turbine 1"]}})
    rec = ProvisionRecord.for_scenario(state, sc)
    with pytest.raises(StateError, match="1 devices of the scenario are not provisioned \\(e.g. 'Turbine 2'\\)"):
        rec.require_devices(sc)
    assert rec.require_gateway(sc).token == "gtok"
    no_gw = ProvisionRecord("wind", {})
    with pytest.raises(StateError, match="no gateway device") as err:
        no_gw.require_gateway(sc)
    assert "aggregation.sink: gateway" in err.value.hint


def test_provision_reuses_nothing_from_a_damaged_record(tmp_path):
    state = StateDir(tmp_path).ensure()
    _write(state.provision_file, '{"scenario": "wind", "devi')
    assert ProvisionRecord.previous(state, "wind") is None
    _write(state.provision_file, OLD_PROVISION)
    assert ProvisionRecord.previous(state, "wind").devices["Turbine 2"].token == "tok2"
