"""The job's window arithmetic with explicit timestamps: which window a record lands in, when it
is late, what each batch writes, and that replaying a batch gives the same state."""

import pytest

from tbspark.aggregate.windows import (
    WindowAgg,
    WindowState,
    ZoneWindow,
    aggregate,
    is_late,
    next_watermark,
    to_points,
    window_start_ms,
)

W = 10_000
T0 = 1_719_999_990_000  # a window start


def test_window_start_is_inclusive_at_the_start_and_exclusive_at_the_end():
    assert window_start_ms(T0, W) == T0
    assert window_start_ms(T0 + 9_999, W) == T0
    assert window_start_ms(T0 + 10_000, W) == T0 + 10_000
    assert window_start_ms(-1, W) == -10_000


def test_lateness_is_decided_per_window_against_the_watermark():
    # Watermark exactly at a window's end closes it; one ms before does not.
    assert is_late(T0 + 5_000, W, T0 + 10_000)
    assert not is_late(T0 + 5_000, W, T0 + 9_999)
    # A record older than the watermark whose window is still open is kept (Spark does the same).
    assert not is_late(T0 + 10_001, W, T0 + 12_000)
    assert not is_late(T0, W, None)


def test_watermark_follows_the_latest_event_minus_the_delay_and_never_goes_back():
    assert next_watermark(None, T0 + 20_000, 5_000) == T0 + 15_000
    assert next_watermark(T0 + 15_000, T0 + 1_000, 5_000) == T0 + 15_000
    assert next_watermark(T0, None, 5_000) == T0


def test_aggregate_gives_avg_count_min_max_per_zone_and_window():
    recs = [("A", T0 + 1, 30), ("A", T0 + 9_999, 35), ("A", T0 + 10_000, 50),
            ("B", T0 + 500, 40.5)]
    out = aggregate(recs, W)
    assert out[("A", T0)] == WindowAgg(2, 65.0, 30.0, 35.0)
    assert out[("A", T0)].mean == 32.5
    assert out[("A", T0 + W)] == WindowAgg(1, 50.0, 50.0, 50.0)
    assert out[("B", T0)] == WindowAgg(1, 40.5, 40.5, 40.5)


def _partials(recs):
    return aggregate(recs, W)


def test_update_mode_writes_every_touched_window_with_its_value_so_far():
    s0 = WindowState(W, 5_000)
    s1, out1 = s0.apply(0, _partials([("A", T0 + 1_000, 30)]), T0 + 1_000)
    assert out1 == [ZoneWindow("A", T0, WindowAgg(1, 30.0, 30.0, 30.0))]
    s2, out2 = s1.apply(1, _partials([("A", T0 + 2_000, 40), ("B", T0 + 3_000, 7)]), T0 + 3_000)
    assert out2 == [ZoneWindow("A", T0, WindowAgg(2, 70.0, 30.0, 40.0)),
                    ZoneWindow("B", T0, WindowAgg(1, 7.0, 7.0, 7.0))]
    assert s2.watermark_ms == T0 - 2_000
    assert s2.batch_id == 1


def test_append_mode_writes_a_window_once_the_watermark_passes_its_end_and_forgets_it():
    s0 = WindowState(W, 5_000)
    s1, out1 = s0.apply(0, _partials([("A", T0 + 1_000, 30), ("A", T0 + 12_000, 10)]), T0 + 12_000,
                        "append")
    assert out1 == []  # watermark T0+7s: nothing closed yet
    s2, out2 = s1.apply(1, _partials([("A", T0 + 15_500, 20)]), T0 + 15_500, "append")
    assert out2 == [ZoneWindow("A", T0, WindowAgg(1, 30.0, 30.0, 30.0))]
    assert ("A", T0) not in s2.windows and ("A", T0 + W) in s2.windows
    assert s2.flush() == [ZoneWindow("A", T0 + W, WindowAgg(2, 30.0, 10.0, 20.0))]


def test_update_mode_evicts_closed_windows_so_state_stays_small():
    s = WindowState(W, 5_000)
    for i in range(100):
        s, _ = s.apply(i, _partials([("A", T0 + i * W, 1)]), T0 + i * W)
    assert len(s.windows) <= 2


def test_replaying_a_batch_from_the_saved_previous_state_gives_the_same_state_and_output():
    s0 = WindowState(W, 5_000)
    s1, _ = s0.apply(0, _partials([("A", T0 + 1_000, 30)]), T0 + 1_000)
    saved = WindowState.from_json(s1.to_json())
    batch = _partials([("A", T0 + 2_000, 40), ("A", T0 + 11_000, 1)])
    first = s1.apply(1, batch, T0 + 11_000)
    again = saved.apply(1, batch, T0 + 11_000)
    assert first[1] == again[1]
    assert first[0].to_json() == again[0].to_json()


def test_unknown_output_mode_is_an_error():
    with pytest.raises(ValueError, match="output mode"):
        WindowState(W, 0).apply(0, {}, None, "complete")


def test_points_carry_the_window_start_and_the_scenario_key_names():
    keys = {"avg": "windSpeed", "count": "windSpeedCount", "min": "windSpeedMin", "max": "windSpeedMax"}
    pts = to_points([ZoneWindow("Zone A", T0, WindowAgg(3, 120.0, 30.0, 50.0))], keys)
    assert pts == {"Zone A": [{"ts": T0, "values": {"windSpeed": 40.0, "windSpeedCount": 3,
                                                     "windSpeedMin": 30, "windSpeedMax": 50}}]}
