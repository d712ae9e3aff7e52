"""The asyncio engine's C hot path (``_fastsend.c``), set up from a fleet.

Per wake-up the engine makes one call: the C side takes every due message off its own schedule
(a heap of feeds, absolute due times: first + k·period), draws the value, formats the payload byte
for byte as the Python path does, builds the QoS 0 PUBLISH, send()s it and counts the ground truth
(per device count and sum, per zone per window count/sum/min/max/near-edge). What a socket does
not take is handed back to the engine's per-connection buffer; connections, reconnects, pings and
acks stay in Python.

The C path drives a fleet when every message stream of every device is made of ``constant`` keys
and at most one random key — ``uniform_int``, or ``normal`` / ``uniform_float`` with ``decimals``
set (0 to 9) — the value key (if present) is not a float constant, and QoS is 0. Anything else
(``sine``, floats without ``decimals``, several random keys in one message, QoS 1) runs on the
Python path. Its values come from its own seeded generator (xoshiro256**, Box-Muller for
``normal``), so ``--seed`` makes a run reproducible within one path, but the two paths draw
different sequences. A float is drawn as the integer round(x * 10^decimals) and written as that
decimal ("42.3", "42.0"), so the text on the wire and the ground truth are the same number; the
ground truth is counted in units of 10^-scale (scale = the largest ``decimals`` of a float value
key) with exact integer sums, and divided once when it is folded.

``TBSPARK_SIM_HOT_PATH`` (old name ``TBSPARK_SIM_ENGINE``): ``python`` forces the Python path, ``c``
requires the C path (an error names why it cannot run), unset or ``auto`` takes the C path where it
can."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from tbspark import settings
from tbspark.errors import UsageError
from tbspark.mqtt.topics import TELEMETRY_TOPIC
from tbspark.simulate.fleet import Fleet
from tbspark.simulate.generators import MessageStream, json_value, numeric
from tbspark.simulate.groundtruth import NEAR_EDGE_MS

try:
    from tbspark.simulate import _fastsend
except ImportError:  # built without a C compiler: the Python path does everything
    _fastsend = None  # type: ignore[assignment]

_I64 = (-(1 << 63), (1 << 63) - 1)
_M64 = (1 << 64) - 1
_FLOAT_KINDS = {"normal": 2, "uniform_float": 3}
_MAX_DECIMALS = 9
_FLOAT_LIMIT = 1e15  # |round(x * 10^decimals)| below this (the C side's FLOAT_LIMIT)


class FeedPlan(NamedTuple):
    """What the C side needs to send one message stream (``Hot.add_feed``'s arguments but the device,
    period, quota and seed; _fastsend.c's header describes each). A tuple, so building the call costs
    nothing more; it is made once per stream at start, never per message."""

    pre: bytes  # the payload before the random value (all of it when kind is 0)
    post: bytes  # the payload after it
    kind: int  # 0 no random key, 1 uniform_int, 2 normal, 3 uniform_float
    lo: int  # uniform_int's range
    hi: int
    quote: bool  # the random value is written as a JSON string
    num_mode: int  # the value key's number: 0 none, 1 the random value, 2 const_num
    const_num: int  # the constant value key, in ground-truth units
    fa: float  # normal: mean, stddev; uniform_float: low, high
    fb: float
    decimals: int  # a float's digits after the point
    clip_lo: float  # normal: the clip range
    clip_hi: float

    def add_to(self, hot: Any, dev: int, period_s: float, quota: int, seed: int) -> int:
        """``hot.add_feed`` with this plan: the C boundary's positional order, in one place."""
        return hot.add_feed(dev, period_s, quota, self.pre, self.post, self.kind, self.lo, self.hi, self.quote,
                            self.num_mode, self.const_num, seed, self.fa, self.fb, self.decimals,
                            self.clip_lo, self.clip_hi)


def available() -> bool:
    return _fastsend is not None


def fleet_scale(fleet: Fleet) -> int:
    """The ground truth's unit is 10^-scale: the most ``decimals`` of a float value key."""
    scale = 0
    for dev in fleet.devices:
        for s, stream in enumerate(dev.streams):
            pos = dev.value_pos[s]
            if pos >= 0 and getattr(stream.fns[pos], "kind", None) in _FLOAT_KINDS:
                scale = max(scale, getattr(stream.fns[pos], "decimals", None) or 0)
    return scale


def stream_plan(stream: MessageStream, value_pos: int, scale: int = 0) -> FeedPlan | str:
    """The C feed for one stream, or why the C path cannot send it."""
    parts: list[str | None] = []
    rnd = -1
    kind_no = 0
    lo = hi = decimals = 0
    fa = fb = 0.0
    c_lo, c_hi = -math.inf, math.inf
    quote = False
    int_lim = _I64[1] // 10 ** scale  # an integer value key, once counted in 10^-scale units
    for j, (fn, prefix) in enumerate(zip(stream.fns, stream.prefixes)):
        kind = getattr(fn, "kind", None)
        if kind in ("uniform_int", *_FLOAT_KINDS):
            if rnd >= 0:
                return "more than one random key in one message"
            rnd, quote = j, bool(fn.as_string)
            parts.append(None)
            if kind == "uniform_int":
                kind_no = 1
                lo, hi = fn.bounds
                if not (_I64[0] <= lo <= hi <= _I64[1]):
                    return "a uniform_int range outside 64-bit integers (or min > max)"
                if j == value_pos and not (-int_lim <= lo and hi <= int_lim):
                    return "a uniform_int range too large next to the float value keys' decimals"
                continue
            kind_no = _FLOAT_KINDS[kind]
            decimals = getattr(fn, "decimals", None)
            if decimals is None or not 0 <= decimals <= _MAX_DECIMALS:
                return f"a {kind} key without decimals (0 to {_MAX_DECIMALS})"
            fa, fb = fn.params[:2]
            c_lo, c_hi = fn.params[2:] if kind == "normal" else (-math.inf, math.inf)
            mul = 10 ** (scale - decimals) if j == value_pos else 1
            limit = min(_FLOAT_LIMIT, _I64[1] / mul / 2)
            reach = (max(abs(fa), abs(fb)) if kind == "uniform_float"
                     else min(abs(fa) + 10 * fb, max(abs(c_lo), abs(c_hi))))
            if not (reach * 10 ** decimals < limit) or (kind == "normal" and fb < 0) or \
                    (kind == "uniform_float" and fb < fa):
                return f"a {kind} range too large for the C path's 64-bit integers"
        elif kind == "constant":
            parts.append(prefix + json_value(fn(0.0)))
        else:
            return f"generator kind {kind!r}"
    num_mode, const_num = 0, 0
    if value_pos >= 0:
        if value_pos == rnd:
            num_mode = 1
        else:
            num = numeric(stream.fns[value_pos](0.0))
            if isinstance(num, float):
                return "a float constant as the value key"
            if num is not None:
                if not -int_lim <= num <= int_lim:
                    return "a constant value key outside 64-bit integers (in ground-truth units)"
                num_mode, const_num = 2, num
    if rnd < 0:
        return FeedPlan(",".join(parts).encode(), b"", 0, 0, 0, False, num_mode,  # type: ignore[arg-type]
                        const_num, 0.0, 0.0, 0, c_lo, c_hi)
    pre = "".join(p + "," for p in parts[:rnd]) + stream.prefixes[rnd]  # type: ignore[operator]
    post = "".join("," + p for p in parts[rnd + 1:])  # type: ignore[operator]
    return FeedPlan(pre.encode(), post.encode(), kind_no, lo, hi, quote, num_mode, const_num, fa, fb, decimals,
                    c_lo, c_hi)


def why_not(fleet: Fleet) -> str | None:
    """None when the C path can drive the fleet, else the reason it cannot."""
    if _fastsend is None:
        return "the C extension tbspark.simulate._fastsend is not built"
    if fleet.cfg.qos:
        return "QoS 1 (the PUBACK bookkeeping is on the Python path)"
    scale = fleet_scale(fleet)
    for dev in fleet.devices:
        for s, stream in enumerate(dev.streams):
            plan = stream_plan(stream, dev.value_pos[s], scale)
            if isinstance(plan, str):
                return f"{dev.name}: {plan}"
    return None


def choose(fleet: Fleet) -> "NativePath | None":
    """The C path for the fleet when it can and may drive it (see ``TBSPARK_SIM_HOT_PATH``)."""
    mode, var = settings.sim_hot_path()
    if mode == "python":
        fleet.stats.hot_path = f"python ({var}=python)"
        return None
    reason = why_not(fleet)
    if reason is not None:
        if mode == "c":
            raise UsageError(f"{var}=c, but the C hot path cannot run this fleet: {reason}",
                             f"unset {var} to fall back to the Python path")
        fleet.stats.hot_path = f"python ({reason})"
        return None
    fleet.stats.hot_path = "c"
    return NativePath(fleet)


def feed_seed(dev_seed: int, s: int) -> int:
    return (dev_seed + (s + 1) * 0x9E3779B97F4A7C15) & _M64


class NativePath:
    """One fleet's C state: its feeds, the devices' sockets, the ground truth counted in C (folded
    into the fleet's GroundTruth whenever the fleet flushes)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        gt = fleet.gt
        zones: dict[str, int] = {}
        zone_of = [zones.setdefault(gt.devices[d.name].zone, len(zones)) for d in fleet.devices]
        self.zone_names = list(zones)
        if any(d.index != i for i, d in enumerate(fleet.devices)):
            raise ValueError("device indices must be their positions in the fleet")
        self.scale = fleet_scale(fleet)
        self.hot = _fastsend.Hot(len(fleet.devices), zone_of, TELEMETRY_TOPIC.encode(),
                                 fleet.cfg.timestamps == "device", int(round(gt.window_s * 1000)),
                                 NEAR_EDGE_MS, self.scale)
        self.feeds: list[list[int]] = []
        for dev in fleet.devices:
            ids = []
            for s, stream in enumerate(dev.streams):
                plan = stream_plan(stream, dev.value_pos[s], self.scale)
                assert not isinstance(plan, str), plan
                ids.append(plan.add_to(self.hot, dev.index, stream.period, fleet.quota(stream),
                                       feed_seed(dev.seed, s)))
            self.feeds.append(ids)
        fleet.fold = self.fold

    def start_device(self, dev: Any, now: float) -> None:
        """Fleet.start_device for the C schedule: the same phases, the same quotas."""
        phases = self.fleet.begin(dev)
        if phases is None:
            return  # a reconnect: the schedule kept running
        for s, phase in enumerate(phases):
            self.hot.start_feed(self.feeds[dev.index][s], now + phase)

    def fold(self) -> None:
        """Move what the C side counted into the fleet's GroundTruth."""
        devs, wins = self.hot.take()
        gt, devices = self.fleet.gt, self.fleet.devices
        unit = 10 ** self.scale  # int / int: the float nearest the exact quotient
        for i, sent, total in devs:
            ds = gt.devices[devices[i].name]
            ds.sent += sent
            ds.sum += total / unit if unit > 1 else total
        for z, start, count, total, lo, hi, near in wins:
            if unit > 1:
                total, lo, hi = total / unit, lo / unit, hi / unit
            gt.add_window_stats(self.zone_names[z], start, count, total, lo, hi, near)
