"""Telemetry generators: ranges, types on the wire, seeding, grouping by rate."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace as G

from tbspark.scenario import load_scenario, packaged_scenario
from tbspark.simulate.generators import device_rng, make_value_fn, message_streams, numeric


def test_tutorial_generators_send_integer_strings_in_their_inclusive_ranges():
    sc = load_scenario(packaged_scenario("wind-turbines"))
    ranges = {"Wind Turbine 1": (30, 35), "Wind Turbine 2": (45, 50), "Wind Turbine 3": (30, 60)}
    for spec in sc.expand_devices():
        (stream,) = message_streams(spec.telemetry, device_rng(7, spec.name))
        assert stream.rate_hz == 10 and stream.keys == ["windSpeed"]
        values = [stream.values(0)["windSpeed"] for _ in range(3000)]
        assert all(isinstance(v, str) for v in values)
        lo, hi = ranges[spec.name]
        assert {int(v) for v in values} == set(range(lo, hi + 1))  # both ends reached


def test_same_seed_same_values_different_devices_differ():
    gen = G(kind="uniform_float", min=0, max=1, decimals=3, send_as="number")
    a = [make_value_fn(gen, device_rng(1, "d1"))(0) for _ in range(5)]
    b = [make_value_fn(gen, device_rng(1, "d1"))(0) for _ in range(5)]
    c = [make_value_fn(gen, device_rng(1, "d2"))(0) for _ in range(5)]
    assert a != c
    fa, fb = make_value_fn(gen, device_rng(1, "d1")), make_value_fn(gen, device_rng(1, "d1"))
    assert [fa(0) for _ in range(5)] == [fb(0) for _ in range(5)]
    assert all(round(v, 3) == v for v in a + b)


def test_normal_constant_and_sine():
    rng = device_rng(3, "x")
    normal = make_value_fn(G(kind="normal", mean=10, stddev=2, decimals=None), rng)
    xs = [normal(0) for _ in range(20000)]
    mean = sum(xs) / len(xs)
    assert abs(mean - 10) < 0.1
    assert abs(math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) - 2) < 0.1
    assert make_value_fn(G(kind="constant", value=5, send_as="string"), rng)(0) == "5"
    sine = make_value_fn(G(kind="sine", mean=20, amplitude=5, period_s=60, noise=0, decimals=2), rng)
    assert sine(0) == 20 and sine(15) == 25 and sine(45) == 15


def test_keys_with_the_same_rate_share_one_message():
    tel = {"a": G(kind="constant", value=1, rate_hz=10), "b": G(kind="constant", value=2, rate_hz=1),
           "c": G(kind="constant", value=3, rate_hz=10)}
    streams = sorted(message_streams(tel, device_rng(None, "d")), key=lambda s: s.rate_hz)
    assert [(s.rate_hz, s.keys) for s in streams] == [(1.0, ["b"]), (10.0, ["a", "c"])]
    assert streams[1].values(0) == {"a": 1, "c": 3}


def test_numeric_follows_the_platforms_typing():
    assert numeric("33") == 33 and numeric("33.5") == 33.5 and numeric(7) == 7
    assert numeric("abc") is None and numeric(True) is None and numeric("1e5") is None


def test_values_drawn_in_blocks_are_the_values_drawn_one_by_one():
    # The engines draw a stream's messages ahead in blocks; --seed must give the same values
    # (and the same text on the wire) as asking the generators message by message.
    from tbspark.simulate.generators import MessageStream, json_value

    gens = [G(kind="uniform_int", min=30, max=60, send_as="string"),
            G(kind="uniform_int", min=-3, max=1 << 40),
            G(kind="uniform_float", min=0, max=1, decimals=3),
            G(kind="uniform_float", min=-5, max=5, send_as="string"),
            G(kind="normal", mean=20, stddev=2, decimals=1, send_as="string"),
            G(kind="normal", mean=20, stddev=2),
            G(kind="constant", value="7", send_as="string")]
    for gen in gens:
        one = make_value_fn(gen, device_rng(5, "d"))
        expected = [one(0) for _ in range(300)]
        stream = MessageStream(10, ["k"], [make_value_fn(gen, device_rng(5, "d"))])
        bodies, nums = [], []
        for n in (1, 32, 200, 67):
            b, v = stream.bodies(n, 0.0, 0, "}}")
            bodies += b
            nums += v
        assert bodies == [f'"k":{json_value(v)}}}}}'.encode() for v in expected], gen
        assert nums == [numeric(v) for v in expected], gen
    # Two keys in one stream: drawn message by message, in key order, as before.
    tel = {"windSpeed": G(kind="uniform_int", min=0, max=9, rate_hz=1, send_as="string"),
           "t": G(kind="normal", mean=0, stddev=1, decimals=2, rate_hz=1)}
    (a,) = message_streams(tel, device_rng(2, "x"))
    (b,) = message_streams(tel, device_rng(2, "x"))
    expected_msgs = [a.values(0) for _ in range(50)]
    bodies, nums = b.bodies(50, 0.0, 0)
    assert [json.loads(b"{" + body + b"}") for body in bodies] == expected_msgs
    assert nums == [int(m["windSpeed"]) for m in expected_msgs]


def test_a_sine_is_computed_at_send_time():
    from tbspark.simulate.generators import MessageStream

    gen = G(kind="sine", mean=20, amplitude=5, period_s=60, noise=0, decimals=2)
    stream = MessageStream(1, ["windSpeed"], [make_value_fn(gen, device_rng(1, "d"))])
    assert stream.timed
    assert stream.bodies(1, 15.0, 0)[1] == [25.0] and stream.bodies(1, 45.0, 0)[1] == [15.0]
