"""The exact result bench/state_store.py holds both window-state variants to: which records are late
under the job's rule (and Spark's default one, a batch behind), and the windows' final aggregates."""

from __future__ import annotations

from tbspark.aggregate.windows import WindowAgg, WindowState, is_late, window_start_ms
from tbspark.testing import window_model as bench

W, D = 10_000, 5_000
T = 1_700_000_000_000  # a window start


def test_a_record_whose_window_the_previous_batches_closed_is_late():
    # batch 0 reaches T+20s → watermark T+15s closes [T, T+10s); batch 1 brings a record for it
    records = [("A", T + 1_000, 1.0), ("A", T + 20_000, 2.0), ("A", T + 9_000, 4.0), ("A", T + 21_000, 8.0)]
    windows, late = bench.expected_windows(records, 2, W, D)
    assert late == 1
    assert windows == {("A", T): (1, 1.0, 1.0, 1.0), ("A", T + 20_000): (2, 10.0, 2.0, 8.0)}


def test_spark_default_rule_judges_late_records_one_batch_behind():
    records = [("A", T + 1_000, 1.0), ("A", T + 20_000, 2.0), ("A", T + 9_000, 4.0), ("A", T + 21_000, 8.0)]
    windows, late = bench.expected_windows(records, 2, W, D, lag=1)
    assert late == 0  # batch 1 is judged against batch 0's watermark: none yet
    assert windows[("A", T)] == (2, 5.0, 1.0, 4.0)


def test_a_watermark_exactly_at_the_window_end_closes_it_and_one_ms_before_does_not():
    closes = [("A", T + 15_000, 1.0), ("A", T + 9_999, 2.0)]  # watermark T+10s = the window's end
    assert bench.expected_windows(closes, 1, W, D)[1] == 1
    stays = [("A", T + 14_999, 1.0), ("A", T + 9_999, 2.0)]  # watermark T+9.999s
    assert bench.expected_windows(stays, 1, W, D)[1] == 0


def test_records_of_one_batch_are_never_late_against_each_other():
    records = [("A", T + 100_000, 1.0), ("A", T, 2.0)]
    windows, late = bench.expected_windows(records, 2, W, D)
    assert late == 0 and windows[("A", T)] == (1, 2.0, 2.0, 2.0)


def test_the_expectation_is_the_jobs_fold_batch_by_batch():
    """The benchmark's expected windows equal what the job's pure fold (WindowState.apply with
    windows.is_late against the state's watermark) makes of the same batches."""
    records = bench.make_records(20_000, 7, seed=3)
    batch = 3_000
    state, final = WindowState(W, D), {}
    late = 0
    for b, first in enumerate(range(0, len(records), batch)):
        partials: dict = {}
        max_event = None
        for zone, ts, value in records[first:first + batch]:
            max_event = ts if max_event is None else max(max_event, ts)
            if is_late(ts, W, state.watermark_ms):
                late += 1
                continue
            key = (zone, window_start_ms(ts, W))
            one = WindowAgg.of(value)
            partials[key] = partials[key].merge(one) if key in partials else one
        state, out = state.apply(b, partials, max_event, "update")
        final.update({(w.zone, w.start_ms): (w.agg.count, w.agg.sum, w.agg.min, w.agg.max) for w in out})
    windows, want_late = bench.expected_windows(records, batch, W, D)
    assert late == want_late > 0
    assert final == windows


def test_the_input_has_late_and_out_of_order_records_and_exact_sums():
    records = bench.make_records(50_000, 5)
    assert records == bench.make_records(50_000, 5)  # the same input for every variant and run
    behind = sum(1 for a, b in zip(records, records[1:]) if b[1] < a[1])
    assert behind > 0.04 * len(records)
    assert all((v * 4).is_integer() for _, _, v in records)  # sums exact in any order
    assert {z for z, _, _ in records} == {f"Zone {i:02d}" for i in range(5)}
    assert bench.expected_windows(records, 10_000)[1] > 0


def test_compare_finds_missing_extra_and_wrong_windows():
    want = {("A", 0): (2, 3.0, 1.0, 2.0), ("B", 0): (1, 1.0, 1.0, 1.0)}
    assert bench.compare(dict(want), want)["exact"]
    got = {("A", 0): (2, 3.5, 1.0, 2.5), ("C", 0): (1, 1.0, 1.0, 1.0)}
    r = bench.compare(got, want)
    assert (r["exact"], r["missing"], r["extra"], r["wrong"]) == (False, 1, 1, 1)


def test_records_are_encoded_in_the_forwarding_chains_shape():
    assert bench.encode(("Zone 07", T, 12.25)) == (
        b'{"geoZone":"Zone 07","windSpeed":12.25,"ts":"1700000000000"}')
