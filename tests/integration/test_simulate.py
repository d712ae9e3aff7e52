"""`tbspark simulate` against the real embedded platform: rates, and what the platform stored
compared with the simulator's ground truth, message for message."""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer

from tests.integration.test_provision import run, stack, tb, unique_tutorial, wait_for  # noqa: F401


def stored(client, dev_id: str, gt: dict, expect: int) -> list:
    """The device's stored windSpeed points of the run, once all `expect` of them are readable."""
    def read():
        pts = client.get_timeseries("DEVICE", dev_id, ["windSpeed"], gt["started_ms"] - 1000,
                                    gt["ended_ms"] + 1000).get("windSpeed", [])
        return pts if len(pts) >= expect else None
    return wait_for(read) or client.get_timeseries(
        "DEVICE", dev_id, ["windSpeed"], gt["started_ms"] - 1000, gt["ended_ms"] + 1000
    ).get("windSpeed", [])


def test_five_seconds_of_the_tutorial_match_the_ground_truth_exactly(stack, tmp_path):
    path, tag = unique_tutorial(tmp_path)
    state = tmp_path / "state"
    assert run(["provision", str(path)], stack, state).exit_code == 0
    res = run(["simulate", str(path), "--duration", "5s", "--seed", "42", "--json"], stack, state)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["errors"] == 0 and summary["acked"] == summary["sent"]
    gt = json.loads((state / "groundtruth.json").read_text())
    record = json.loads((state / "provision.json").read_text())
    assert gt["timestamps"] == "device" and gt["window_s"] == 10
    client = tb(stack)
    for name, dev in gt["devices"].items():
        assert abs(dev["sent"] - 10 * 5) <= 1  # 10 Hz × 5 s, ±2 %
        points = stored(client, record["devices"][name]["id"], gt, dev["sent"])
        assert len(points) == dev["sent"] == dev["acked"]
        assert sum(p["value"] for p in points) == dev["sum"]
    # Per zone, the windows add up to the devices of that zone.
    for zone, windows in gt["windows"].items():
        devs = [d for d in gt["devices"].values() if d["zone"] == zone]
        assert sum(w["count"] for w in windows.values()) == sum(d["sent"] for d in devs)
        assert sum(w["sum"] for w in windows.values()) == sum(d["sum"] for d in devs)
    assert set(gt["windows"]) == {f"Zone {tag} A", f"Zone {tag} B"}
    client.close()
    # What the chain forwarded: one record per message, keyed by device, carrying ts as a string.
    records = consume(stack.kafka_bootstrap, f"fleet-{tag}", summary["sent"])
    assert len(records) == summary["sent"]
    key, value = records[0]
    assert set(value) == {"windSpeed", "geoZone", "ts"} and isinstance(value["windSpeed"], int)
    assert isinstance(value["ts"], str) and value["geoZone"] == gt["devices"][key]["zone"]
    per_device: dict[str, int] = {}
    for k, v in records:
        per_device[k] = per_device.get(k, 0) + v["windSpeed"]
    assert per_device == {n: d["sum"] for n, d in gt["devices"].items()}


def consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 20.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append((msg.key().decode(), json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def test_paho_engine_qos0_with_server_timestamps_is_stored_in_full(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path, timestamps="server")
    state = tmp_path / "state"
    assert run(["provision", str(path)], stack, state).exit_code == 0
    res = run(["simulate", str(path), "--messages", "20", "--engine", "paho", "--qos", "0",
               "--json"], stack, state)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["engine"] == "paho" and summary["sent"] == 60 and summary["acked"] == 0
    gt = json.loads((state / "groundtruth.json").read_text())
    record = json.loads((state / "provision.json").read_text())
    client = tb(stack)
    for name, dev in gt["devices"].items():
        points = stored(client, record["devices"][name]["id"], gt, 20)
        assert len(points) == 20 and sum(p["value"] for p in points) == dev["sum"]
    client.close()


def test_unknown_tokens_are_one_clear_line(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path)
    state = tmp_path / "state"
    assert run(["provision", str(path)], stack, state).exit_code == 0
    record = json.loads((state / "provision.json").read_text())
    for dev in record["devices"].values():
        dev["token"] = "not-a-token"
    (state / "provision.json").write_text(json.dumps(record))
    res = run(["simulate", str(path), "--messages", "5"], stack, state)
    assert res.exit_code == 3
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error: the server refused the tokens of 3 devices")
    assert "CONNACK 5" in lines[-1] and "tbspark provision" in lines[-1]
    assert not (state / "groundtruth.json").exists()


def test_simulate_before_provision_says_what_to_run(stack, tmp_path):
    path, _ = unique_tutorial(tmp_path)
    res = run(["simulate", str(path), "--messages", "1"], stack, tmp_path / "empty")
    assert res.exit_code == 2
    assert res.output.strip() == (f"Error: no provision record at {tmp_path / 'empty' / 'provision.json'}"
                                  f" — run: tbspark provision {path}")


def test_c_and_python_hot_paths_both_match_what_the_platform_stored(stack, tmp_path):
    # QoS 0 with device timestamps: the C hot path when it is built (TBSPARK_SIM_HOT_PATH=c makes
    # the run fail rather than fall back), and the pure-Python path, each against the platform;
    # the C path also with the fleet scenario's generator (normal, one decimal: JSON numbers).
    import math
    import re
    from tbspark.simulate import native
    cases = ["c", "python", "c-normal"] if native.available() else ["python"]
    for case in cases:
        hot = case.split("-")[0]
        (tmp_path / case).mkdir()
        path, _ = unique_tutorial(tmp_path / case)
        if case == "c-normal":
            path.write_text(re.sub(r"windSpeed: \{kind: uniform_int[^}]*\}",
                                   "windSpeed: {kind: normal, mean: 42, stddev: 6, decimals: 1, rate_hz: 10}",
                                   path.read_text()))
        state = tmp_path / case / "state"
        assert run(["provision", str(path)], stack, state).exit_code == 0
        res = run(["simulate", str(path), "--messages", "30", "--qos", "0", "--seed", "7",
                   "--json"], stack, state, TBSPARK_SIM_HOT_PATH=hot)
        assert res.exit_code == 0, (hot, res.output)
        summary = json.loads(res.output)
        assert summary["sent"] == 90 and summary["errors"] == 0 and summary["skipped"] == 0
        assert summary["hot_path"] == "c" if hot == "c" else summary["hot_path"].startswith("python")
        gt = json.loads((state / "groundtruth.json").read_text())
        record = json.loads((state / "provision.json").read_text())
        client = tb(stack)
        for name, dev in gt["devices"].items():
            points = stored(client, record["devices"][name]["id"], gt, 30)
            assert dev["sent"] == len(points) == 30, case
            if case == "c-normal":  # doubles of one-decimal numbers: sums agree to rounding
                assert all(isinstance(p["value"], float) for p in points)
                assert math.isclose(math.fsum(p["value"] for p in points), dev["sum"], rel_tol=1e-12)
            else:
                assert sum(p["value"] for p in points) == dev["sum"], case
            # Per window of the device's own timestamps, what the platform stored is what the
            # ground truth filed (summed over the devices of the zone below).
            dev["windows"] = {}
            for p in points:
                start = p["ts"] - p["ts"] % 10_000
                dev["windows"].setdefault(str(start), []).append(p["value"])
        client.close()
        for zone, windows in gt["windows"].items():
            expect: dict = {}
            for dev in gt["devices"].values():
                if dev["zone"] == zone:
                    for start, vals in dev["windows"].items():
                        expect.setdefault(start, []).extend(vals)
            assert {s: (w["count"], w["min"], w["max"]) for s, w in windows.items()} == \
                {s: (len(v), min(v), max(v)) for s, v in expect.items()}, case
            for s, v in expect.items():
                assert math.isclose(windows[s]["sum"], math.fsum(v), rel_tol=1e-12), case
