"""Ground truth: windows by the timestamp sent, and engines whose record matches what an MQTT
endpoint really received — also when it drops connections or refuses tokens. The endpoint is
tbspark.simulate.sink, a counting MQTT server on loopback (no platform needed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tbspark.errors import MqttError
from tbspark.scenario import parse_scenario
from tbspark.settings import Connection
from tbspark.simulate import simulate
from tbspark.simulate.groundtruth import GroundTruth
from tbspark.simulate.sink import ThreadedSink
from tbspark.state import StateDir, write_json_atomic


def test_windows_are_epoch_aligned_and_count_near_edge_messages():
    gt = GroundTruth("s", 10, "server", "windSpeed")
    gt.add_device("d1", "Zone A")
    gt.add_device("d2", "Zone B")
    for ts, v in ((1_000_000_000, 30), (1_000_004_000, 35), (1_000_009_900, 31), (1_000_010_100, 40)):
        gt.record_sent("d1", ts, v)
    gt.record_sent("d2", 1_000_005_000, None)  # a message without the value key
    data = gt.to_json()
    assert data["sent"] == 5 and data["devices"]["d1"] == {
        "zone": "Zone A", "sent": 4, "acked": 0, "sum": 136, "acked_sum": 0}
    assert data["windows"]["Zone A"] == {
        "1000000000": {"count": 3, "sum": 96, "min": 30, "max": 35, "near_edge": 2},
        "1000010000": {"count": 1, "sum": 40, "min": 40, "max": 40, "near_edge": 1}}
    assert data["windows"]["Zone B"] == {}


def fleet(tmp_path: Path, n: int, rate_hz: float, qos: int = 1, timestamps: str = "device"):
    sc = parse_scenario(f"""
name: unit
devices:
  - name: "D {{i:03d}}"
    count: {n}
    zones: [Zone A, Zone B]
    telemetry:
      windSpeed: {{kind: uniform_int, min: 30, max: 60, rate_hz: {rate_hz}, send_as: string}}
      temperature: {{kind: normal, mean: 20, stddev: 2, decimals: 1, rate_hz: {rate_hz}}}
simulation: {{qos: {qos}, timestamps: {timestamps}, ramp_per_s: 1000}}
""")
    state = StateDir(tmp_path / "state").ensure()
    specs = sc.expand_devices()
    write_json_atomic(state.provision_file, {"scenario": "unit", "complete": True, "devices": {
        s.name: {"id": f"id{i}", "token": f"tok{i}", "type": s.type, "zone": s.zone}
        for i, s in enumerate(specs)}})
    return sc, state, {f"tok{i}" for i in range(n)}


@pytest.mark.parametrize("engine", ["asyncio", "paho"])
def test_engine_sends_each_device_its_quota_and_the_record_matches_the_receiver(tmp_path, engine):
    sc, state, tokens = fleet(tmp_path, 5, 50)
    with ThreadedSink(tokens=tokens, keep_payloads=True) as sink:
        report = simulate(sc, Connection(mqtt_host="127.0.0.1", mqtt_port=sink.port), state,
                          duration_s=2, seed=1, engine=engine)
    assert report.sent == report.acked == report.expected == 5 * 100 == sink.total
    assert report.errors == 0
    gt = json.loads(state.groundtruth_file.read_text())
    for i in range(5):
        payloads = [json.loads(p) for p in sink.payloads[f"tok{i}"]]
        dev = gt["devices"][f"D {i + 1:03d}"]
        assert dev["sent"] == dev["acked"] == len(payloads) == 100
        assert dev["sum"] == sum(int(p["values"]["windSpeed"]) for p in payloads)
        assert all(isinstance(p["values"]["temperature"], float) for p in payloads)
        stamps = [p["ts"] for p in payloads]
        assert stamps == sorted(set(stamps))
        # Lateness against the 50 Hz grid (20 ms) does not accumulate: the typical offset of
        # the last 30 messages is that of the 30 after start-up (jitter aside).
        offsets = [ts - k * 20 for k, ts in enumerate(stamps)]
        # (loose: a loaded CI machine delays single wake-ups; the exact property is tested below)
        assert abs(statistics.median(offsets[-30:]) - statistics.median(offsets[10:40])) <= 30


def test_schedule_is_absolute_so_late_wakeups_do_not_drift():
    from tbspark.simulate.fleet import Fleet, RunConfig, Stats, build_devices

    sc = parse_scenario("""
name: s
devices:
  - {name: d, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 10}}}
""")
    specs = sc.expand_devices()
    gt = GroundTruth("s", 10, "device", "windSpeed")
    gt.add_device("d", "Z")
    fleet = Fleet(build_devices(specs, {"d": "t"}, "windSpeed", 1),
                  RunConfig("h", 1, 0, "device", 1000, None, 100.0), gt, Stats())
    fleet.start_device(fleet.devices[0], 1000.0)
    first = fleet.next_due()
    dues = []
    lateness = [0.0, 0.09, 0.03, 0.07, 0.001]  # every wake-up comes late, by varying amounts
    while not fleet.done:
        due = fleet.next_due()
        dues.append(due)
        assert len(fleet.pop_due(due + lateness[len(dues) % 5])) == 1
    assert len(dues) == 1000  # 10 Hz × 100 s
    # Each message is due at first + k·period: lateness never shifts what comes after.
    assert max(abs(d - (first + k * 0.1)) for k, d in enumerate(dues)) < 1e-6


def test_same_seed_same_values(tmp_path):
    sums = []
    for run in range(2):
        sc, state, tokens = fleet(tmp_path / str(run), 2, 100, qos=0, timestamps="server")
        with ThreadedSink(tokens=tokens, keep_payloads=True) as sink:
            simulate(sc, Connection(mqtt_host="127.0.0.1", mqtt_port=sink.port), state,
                     messages=20, seed=9)
        payload = json.loads(sink.payloads["tok0"][0])
        assert set(payload) == {"windSpeed", "temperature"}  # server timestamps: a flat object
        sums.append(json.loads(state.groundtruth_file.read_text())["devices"]["D 001"]["sum"])
    assert sums[0] == sums[1]


@pytest.mark.parametrize("engine", ["asyncio", "paho"])
def test_summary_stays_true_when_the_server_drops_connections(tmp_path, engine):
    sc, state, tokens = fleet(tmp_path, 3, 20)
    with ThreadedSink(tokens=tokens, drop_after=15) as sink:
        report = simulate(sc, Connection(mqtt_host="127.0.0.1", mqtt_port=sink.port), state,
                          duration_s=2, engine=engine)
        received = sink.total
    assert report.reconnects >= 3 and report.errors >= 3
    assert "connection lost" in report.last_error
    assert report.acked <= received <= report.sent  # acknowledged ones certainly arrived
    assert report.sent + report.skipped == report.expected
    gt = json.loads(state.groundtruth_file.read_text())
    assert (gt["sent"], gt["acked"], gt["errors"]) == (report.sent, report.acked, report.errors)


@pytest.mark.parametrize("engine", ["asyncio", "paho"])
def test_refused_tokens_are_an_error_and_no_ground_truth(tmp_path, engine):
    sc, state, _ = fleet(tmp_path, 2, 10)
    with ThreadedSink(tokens={"someone-else"}) as sink:
        with pytest.raises(MqttError) as exc:
            simulate(sc, Connection(mqtt_host="127.0.0.1", mqtt_port=sink.port), state,
                     messages=3, engine=engine)
    assert str(exc.value).startswith("the server refused the tokens of 2 devices")
    assert not state.groundtruth_file.exists()


def test_nothing_listening_is_an_error(tmp_path, monkeypatch):
    import socket

    from tbspark.simulate import aio_engine
    monkeypatch.setattr(aio_engine, "CONNECT_GIVE_UP_S", 0.3)
    sc, state, _ = fleet(tmp_path, 2, 10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MqttError) as exc:
        simulate(sc, Connection(mqtt_host="127.0.0.1", mqtt_port=port), state, messages=3)
    assert str(exc.value).startswith(f"no device could connect to 127.0.0.1:{port}")
    assert "Connection refused" in str(exc.value)
