"""The C feed plan has names: what stream_plan decides reads as fields, and it reaches the C side's
add_feed in the order _fastsend.c's header documents."""

from __future__ import annotations

import math

from tbspark.simulate import native
from tests.unit.test_simulate_engine import make_fleet


class RecordingHot:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_feed(self, *args):
        self.calls.append(args)
        return len(self.calls) - 1


def test_a_random_float_key_is_planned_by_name() -> None:
    fleet = make_fleet(1, "{windSpeed: {kind: normal, mean: 12, stddev: 3, min: 0, max: 40, decimals: 1, "
                          "rate_hz: 1}, blades: {kind: constant, value: 3, rate_hz: 1}}")
    dev = fleet.devices[0]
    plan = native.stream_plan(dev.streams[0], dev.value_pos[0], native.fleet_scale(fleet))
    assert isinstance(plan, native.FeedPlan)
    assert (plan.kind, plan.num_mode, plan.decimals, plan.fa, plan.fb) == (2, 1, 1, 12, 3)
    assert (plan.clip_lo, plan.clip_hi) == (0, 40)
    body = plan.pre + b"12.5" + plan.post  # the C side writes the drawn number between them
    assert body == b'"windSpeed":12.5,"blades":3.0'


def test_a_constants_only_stream_is_its_whole_body() -> None:
    fleet = make_fleet(1, "{windSpeed: {kind: uniform_int, min: 1, max: 9, rate_hz: 1}, "
                          "t: {kind: constant, value: 1, rate_hz: 2}}")
    dev = fleet.devices[0]
    first, second = (native.stream_plan(s, dev.value_pos[i]) for i, s in enumerate(dev.streams))
    assert (first.kind, first.lo, first.hi, first.num_mode) == (1, 1, 9, 1)
    assert (second.kind, second.pre, second.post, second.num_mode) == (0, b'"t":1.0', b"", 0)
    assert (second.clip_lo, second.clip_hi) == (-math.inf, math.inf)


def test_add_to_passes_the_c_boundary_order() -> None:
    plan = native.FeedPlan(b"pre", b"post", 1, -5, 5, True, 1, 0, 0.5, 1.5, 0, -1.0, 1.0)
    hot = RecordingHot()
    assert plan.add_to(hot, dev=3, period_s=0.25, quota=40, seed=99) == 0
    # add_feed(dev, period_s, quota, pre, post, kind, lo, hi, quote, num_mode, const_num, seed,
    #          fa, fb, decimals, clip_lo, clip_hi)
    assert hot.calls == [(3, 0.25, 40, b"pre", b"post", 1, -5, 5, True, 1, 0, 99, 0.5, 1.5, 0, -1.0, 1.0)]


def test_the_c_extension_takes_a_plan() -> None:
    if not native.available():
        import pytest
        pytest.skip("the C extension is not built")
    fleet = make_fleet(2, "{windSpeed: {kind: uniform_int, min: 1, max: 9, rate_hz: 10}}")
    path = native.NativePath(fleet)
    assert [len(ids) for ids in path.feeds] == [1, 1]
