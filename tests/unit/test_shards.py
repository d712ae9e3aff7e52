"""`tbspark simulate --shard I/N`: N processes together send exactly what one process sends (the same
devices, the same values), each shard writes its own ground truth, and verify's loader merges them —
or names the shard that is missing."""

from __future__ import annotations

import json
import os

import pytest

from tbspark.errors import StateError, UsageError
from tbspark.settings import Connection
from tbspark.simulate import simulate
from tbspark.simulate.groundtruth import load, merge, parse_shard, shard_file, shard_of
from tbspark.simulate.sink import ThreadedSink
from tbspark.state import GroundTruthRecord, StateDir, WindowTruth
from tests.unit.test_groundtruth import fleet


def test_shards_are_disjoint_balanced_and_cover_the_fleet():
    specs = list(range(10))
    parts = [shard_of(specs, i, 3) for i in (1, 2, 3)]
    assert sorted(x for p in parts for x in p) == specs
    assert [len(p) for p in parts] == [4, 3, 3]
    assert shard_of(specs, 2, 3) == shard_of(list(range(10)), 2, 3)  # the same every time


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", ""])
def test_a_shard_that_does_not_exist_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)
    assert parse_shard(" 2/3 ") == (2, 3)


def test_three_shards_send_what_one_process_sends_and_verify_merges_them(tmp_path):
    sc, whole, tokens = fleet(tmp_path / "one", 7, 20)
    _, sharded, _ = fleet(tmp_path / "three", 7, 20)
    with ThreadedSink(tokens=tokens) as sink:
        conn = Connection(mqtt_host="127.0.0.1", mqtt_port=sink.port)
        simulate(sc, conn, whole, messages=15, seed=4)
        reports = [simulate(sc, conn, sharded, messages=15, seed=4, shard=(i, 3)) for i in (1, 2, 3)]
    assert [r.devices for r in reports] == [3, 2, 2]
    assert not sharded.groundtruth_file.exists()
    assert sorted(p.name for p in sharded.root.glob("groundtruth.shard-*")) == [
        f"groundtruth.shard-{i}-of-3.json" for i in (1, 2, 3)]
    one = GroundTruthRecord.load(whole.groundtruth_file)
    merged = load(sharded.root, "tbspark simulate x")
    assert merged.shards == 3 and one.shards is None
    # the same devices with the same values (each device's generator is seeded by its name)
    assert merged.devices == one.devices and merged.sent == one.sent == 7 * 15
    # every value in exactly one window, in the merged record as in the single one
    for key in ("count", "sum"):
        assert sum(getattr(w, key) for ws in merged.windows.values() for w in ws.values()) == \
            pytest.approx(sum(getattr(w, key) for ws in one.windows.values() for w in ws.values()))


def _gt(devices: dict, windows: dict, started: int = 0) -> dict:
    return {"scenario": "s", "window_s": 10, "timestamps": "device", "value_key": "v", "started_ms": started,
            "ended_ms": started + 5, "sent": sum(d["sent"] for d in devices.values()),
            "acked": 0, "errors": 0, "devices": devices, "windows": windows}


def test_merge_adds_windows_up_and_takes_the_extremes():
    a = _gt({"d1": {"zone": "A", "sent": 2}}, {"A": {"0": {"count": 2, "sum": 3.5, "min": 1.5, "max": 2,
                                                           "near_edge": 1}}}, started=10)
    b = _gt({"d2": {"zone": "A", "sent": 1}}, {"A": {"0": {"count": 1, "sum": 7, "min": 7, "max": 7,
                                                           "near_edge": 0},
                                                     "10000": {"count": 1, "sum": 1, "min": 1, "max": 1,
                                                               "near_edge": 0}}}, started=5)
    m = merge([GroundTruthRecord.from_json(a), GroundTruthRecord.from_json(b)])
    assert m.windows["A"][0] == WindowTruth(count=3, sum=10.5, min=1.5, max=7, near_edge=1)
    assert list(m.windows["A"]) == [0, 10000]
    assert (m.sent, m.started_ms, m.ended_ms, sorted(m.devices)) == (3, 5, 15, ["d1", "d2"])
    # written as groundtruth.json is
    assert m.to_json()["windows"]["A"]["0"] == {"count": 3, "sum": 10.5, "min": 1.5, "max": 7,
                                                "near_edge": 1}


def test_verify_names_the_missing_shard_and_prefers_the_newer_of_whole_and_shards(tmp_path):
    root = tmp_path
    for i in (1, 3):
        shard_file(root, i, 3).write_text(json.dumps(_gt({f"d{i}": {"zone": "A", "sent": 1}}, {})))
    with pytest.raises(StateError, match="shard\\(s\\) 2/3 is missing") as err:
        load(root, "tbspark simulate sc.yaml")
    assert "--shard 2/3" in err.value.hint
    # a later single-process run's groundtruth.json wins over older shards
    whole = StateDir(root).groundtruth_file
    whole.write_text(json.dumps(_gt({"d9": {"zone": "A", "sent": 4}}, {})))
    later = max(shard_file(root, i, 3).stat().st_mtime for i in (1, 3)) + 5
    os.utime(whole, (later, later))
    assert load(root, "x").sent == 4
    assert load(tmp_path / "empty", "x") is None
