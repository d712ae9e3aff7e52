"""verify's judging: what a user sees when the read-back aggregates are right, or are not."""

from __future__ import annotations

import json

import pytest

from tbspark.errors import UsageError
from tbspark.state import GroundTruthRecord
from tbspark.verify import MetricKeys, judge, parse_since, read_points

W = 10_000
T0 = 1_800_000_000_000  # a window start


def _gt(windows: dict[str, dict[int, list[float]]], timestamps: str = "device",
        near: dict[tuple[str, int], int] | None = None) -> dict:
    """Ground truth built from the raw values sent per zone per window."""
    out = {"scenario": "s", "window_s": 10, "timestamps": timestamps, "value_key": "windSpeed",
           "started_ms": T0, "ended_ms": T0 + 3 * W, "windows": {}}
    for zone, wins in windows.items():
        out["windows"][zone] = {
            str(ws): {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v),
                      "near_edge": (near or {}).get((zone, ws), 0)}
            for ws, v in wins.items()}
    return out


def _points(windows: dict[str, dict[int, list[float]]]) -> dict:
    """What a correct aggregation job would have written for those values."""
    out: dict = {}
    for zone, wins in windows.items():
        out[zone] = {"avg": [], "count": [], "min": [], "max": []}
        for ws, v in sorted(wins.items()):
            out[zone]["avg"].append((ws, sum(v) / len(v)))
            out[zone]["count"].append((ws, float(len(v))))
            out[zone]["min"].append((ws, float(min(v))))
            out[zone]["max"].append((ws, float(max(v))))
    return out


SENT = {
    "Zone A": {T0: [30, 47, 33, 50], T0 + W: [31, 46, 35], T0 + 2 * W: [34, 48]},
    "Zone B": {T0: [30, 60, 44], T0 + W: [45, 41], T0 + 2 * W: [59]},
}
EXPECT = {"Zone A": (40.0, 1.5), "Zone B": (45.0, 5.0)}


def run(points, gt=None, exact=True, expectations=EXPECT, timestamps="device", since_ms=None):
    return judge(scenario="s", window_s=10, keys=MetricKeys(), points=points,
                 groundtruth=GroundTruthRecord.from_json(gt if gt is not None else _gt(SENT, timestamps)),
                 expectations=expectations,
                 exact=exact, timestamps=timestamps, since_ms=since_ms)


def test_correct_aggregates_hold_window_by_window():
    rep = run(_points(SENT))
    assert rep.holds, [m.describe() for m in rep.mismatches]
    a = {z.zone: z for z in rep.zones}
    assert (a["Zone A"].windows_expected, a["Zone A"].windows_found, a["Zone A"].windows_matching) == (3, 3, 3)
    assert rep.windows_verified == 6
    # count-weighted: (30+47+33+50+31+46+35+34+48)/9, not the mean of the three averages
    assert a["Zone A"].mean == pytest.approx(354 / 9)
    assert a["Zone A"].messages_found == 9 and a["Zone A"].messages_expected == 9


def test_removed_window_is_named():
    pts = _points(SENT)
    for m in pts["Zone B"]:
        pts["Zone B"][m] = [p for p in pts["Zone B"][m] if p[0] != T0 + W]
    rep = run(pts)
    assert not rep.holds
    assert [(m.zone, m.window_start_ms, m.problem) for m in rep.mismatches] == [("Zone B", T0 + W, "missing")]
    assert "Zone B window" in rep.mismatches[0].describe() and "missing" in rep.mismatches[0].describe()


def test_duplicated_point_in_a_window_is_named():
    pts = _points(SENT)
    pts["Zone A"]["avg"].append((T0 + W + 1234, 40.0))
    rep = run(pts)
    assert not rep.holds
    problems = {(m.window_start_ms, m.problem) for m in rep.mismatches}
    assert (T0 + W, "duplicated") in problems


def test_extra_window_is_named():
    pts = _points(SENT)
    pts["Zone A"]["avg"].append((T0 + 5 * W, 40.0))
    rep = run(pts)
    assert [(m.window_start_ms, m.problem) for m in rep.mismatches] == [(T0 + 5 * W, "extra")]


def test_altered_average_is_named_with_both_values():
    pts = _points(SENT)
    ws, v = pts["Zone A"]["avg"][1]
    pts["Zone A"]["avg"][1] = (ws, v + 0.001)
    rep = run(pts)
    assert not rep.holds
    (m,) = rep.mismatches
    assert (m.zone, m.window_start_ms, m.problem) == ("Zone A", T0 + W, "avg")
    assert m.expected == pytest.approx(112 / 3) and m.found == pytest.approx(112 / 3 + 0.001)


def test_rounding_in_the_last_digits_is_not_a_mismatch():
    pts = _points(SENT)
    pts["Zone A"]["avg"] = [(ws, v * (1 + 1e-13)) for ws, v in pts["Zone A"]["avg"]]
    assert run(pts).holds


def test_altered_count_min_max_are_named():
    pts = _points(SENT)
    pts["Zone B"]["count"][0] = (T0, 4.0)
    pts["Zone B"]["max"][0] = (T0, 61.0)
    rep = run(pts)
    assert {m.problem for m in rep.mismatches} == {"count", "max"}


def test_mean_outside_tolerance_fails_even_without_ground_truth():
    rep = judge(scenario="s", window_s=10, keys=MetricKeys(), points=_points(SENT), groundtruth=None,
                expectations={"Zone A": (45.0, 0.5)}, exact=True)
    assert not rep.holds and not rep.exact
    (a,) = [z for z in rep.zones if z.zone == "Zone A"]
    assert a.mean_ok is False and a.deviation == pytest.approx(354 / 9 - 45)
    assert any("no ground truth" in n for n in rep.notes)


def test_nothing_read_back_does_not_hold():
    rep = run({})
    assert not rep.holds
    assert {m.problem for m in rep.mismatches} == {"missing"}
    assert any("no aggregates" in n for n in rep.notes)


def test_server_timestamps_accept_moves_explained_by_near_edge_messages():
    moved = {"Zone A": {T0: [30, 47, 33], T0 + W: [50, 31, 46, 35], T0 + 2 * W: [34, 48]},
             "Zone B": SENT["Zone B"]}
    gt = _gt(SENT, "server", near={("Zone A", T0): 1})
    rep = run(_points(moved), gt=gt, timestamps="server")
    assert rep.holds, [m.describe() for m in rep.mismatches]
    assert any("server timestamps" in n and "1 message" in n for n in rep.notes)
    # the same move without near-edge messages to explain it is a mismatch
    rep = run(_points(moved), gt=_gt(SENT, "server"), timestamps="server")
    assert not rep.holds


def test_since_limits_the_windows_judged():
    pts = _points(SENT)
    for z in pts:
        for m in pts[z]:
            pts[z][m] = [p for p in pts[z][m] if p[0] >= T0 + W]
    assert run(pts, since_ms=T0 + W).holds


def test_json_shape_is_serializable_and_complete():
    pts = _points(SENT)
    pts["Zone A"]["avg"] = pts["Zone A"]["avg"][1:]
    d = run(pts).to_dict()
    json.dumps(d)
    assert d["holds"] is False and d["windows_verified"] == 5
    assert set(d) >= {"scenario", "holds", "zones", "mismatches", "notes", "window_s", "timestamps"}
    assert d["mismatches"][0]["problem"] == "missing" and "description" in d["mismatches"][0]
    z = d["zones"][0]
    assert set(z) >= {"zone", "windows_expected", "windows_found", "windows_matching", "mean", "deviation"}
    assert z["series"][0] == {"ts": T0 + W, "avg": pytest.approx(112 / 3)}


def test_read_points_parses_thingsboard_strings_and_skips_non_numbers():
    def fetch(entity_id, keys, s, e):
        assert keys == ["windSpeed", "windSpeedCount", "windSpeedMin", "windSpeedMax"]
        return {"windSpeed": [{"ts": T0 + W, "value": "41.5"}, {"ts": T0, "value": "40.0"},
                              {"ts": T0 + 2 * W, "value": "oops"}],
                "windSpeedCount": [{"ts": T0, "value": 4}]}
    pts = read_points(fetch, {"Zone A": "id-a"}, MetricKeys(), T0, T0 + 3 * W)
    assert pts["Zone A"]["avg"] == [(T0, 40.0), (T0 + W, 41.5)]
    assert pts["Zone A"]["count"] == [(T0, 4.0)] and pts["Zone A"]["max"] == []


def test_parse_since():
    assert parse_since("1719999999999") == 1719999999999
    assert parse_since("2026-01-01T00:00:00Z") == 1767225600000
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday")
