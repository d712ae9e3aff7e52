"""The simulator's C hot path (tbspark/simulate/_fastsend.c through native.py) on real sockets:
the bytes on the wire (what the codec would build, the payload format of the Python path), the
ground truth it counts against what actually arrived, exact quotas on an absolute schedule, seeds,
a socket that cannot keep up, and the fall-back rules."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import sysconfig
import time

import pytest

from tbspark.errors import UsageError
from tbspark.mqtt import codec
from tbspark.mqtt.topics import TELEMETRY_TOPIC
from tbspark.simulate import native
from tbspark.simulate.aio_engine import AioEngine, _Conn
from tests.unit.test_simulate_engine import make_fleet

TUTORIAL = "{windSpeed: {kind: uniform_int, min: 30, max: 60, rate_hz: 10, send_as: string}}"


def test_the_extension_is_built_wherever_a_c_compiler_exists():
    # CI builds the package with `pip install -e` (make venv): if a compiler is there, the C path
    # must be there too — a missing module would silently measure and test the Python path only.
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the Python path is the engine here")
    assert native.available(), "tbspark.simulate._fastsend is missing: run make venv (pip install -e .)"


needs_c = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def drive(fleet, until_done: bool = True, step: float = 0.005, t0: float = 1000.0,
          devices=None):
    """Run the C path over socket pairs (one per device) with a simulated clock; returns the
    bytes each device's peer received and the wake-up times."""
    path = native.NativePath(fleet)
    pairs = {}
    for dev in devices or fleet.devices:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        pairs[dev.index] = (ours, theirs)
        path.hot.set_state(dev.index, ours.fileno(), 1)
        path.start_device(dev, t0)
    got = {i: bytearray() for i in pairs}
    now = t0
    while not path.hot.done():
        now += step
        sent, skipped, back = path.hot.send_due(now, int(now * 1000), 5000)
        assert back is None and skipped == 0  # socketpairs take everything here
        fleet.stats.sent += sent
        for i, (_, theirs) in pairs.items():
            try:
                while True:
                    got[i] += theirs.recv(1 << 16)
            except BlockingIOError:
                pass
        if not until_done:
            break
    fleet.flush()
    for ours, theirs in pairs.values():
        ours.close()
        theirs.close()
    return got, path


def packets(data: bytes) -> list[bytes]:
    """The PUBLISH packets in a byte stream, checked against the codec, as payloads."""
    decoder = codec.StreamDecoder()
    out = []
    for ptype, flags, body in decoder.feed(bytes(data)):
        assert ptype == codec.PUBLISH
        pub = codec.decode_publish(flags, body)
        assert pub.topic == TELEMETRY_TOPIC and pub.qos == 0
        out.append(pub.payload)
    # The stream is exactly these packets, each what publish_prefix + payload makes.
    assert b"".join(codec.publish_prefix(TELEMETRY_TOPIC, len(p), 0) + p for p in out) == data
    return out


@needs_c
def test_c_packets_are_the_codecs_and_the_ground_truth_is_what_arrived():
    fleet = make_fleet(6, TUTORIAL, duration_s=3.0)
    got, _ = drive(fleet)
    gt = fleet.gt.to_json()
    windows: dict = {}
    for dev in fleet.devices:
        payloads = packets(got[dev.index])
        values, last = [], 0
        for p in payloads:
            m = re.fullmatch(rb'\{"ts":(\d+),"values":\{"windSpeed":"(\d+)"\}\}', p)
            assert m, p  # the Python path's format, byte for byte
            ts, v = int(m[1]), int(m[2])
            assert ts > last and 30 <= v <= 60  # strictly increasing per device; in range
            last = ts
            values.append(v)
            w = windows.setdefault(dev.zone, {}).setdefault(str(ts - ts % 10000), [])
            w.append(v)
        assert len(values) == 30  # 3 s at 10 Hz, exactly
        assert gt["devices"][dev.name]["sent"] == 30 and gt["devices"][dev.name]["sum"] == sum(values)
    assert gt["sent"] == fleet.stats.sent == 180
    for zone, wins in windows.items():
        assert {k: (w["count"], w["sum"], w["min"], w["max"]) for k, w in gt["windows"][zone].items()} \
            == {k: (len(v), sum(v), min(v), max(v)) for k, v in wins.items()}
    assert len(set().union(*[set(re.findall(rb'"(\d+)"\}', bytes(b))) for b in got.values()])) > 20


@needs_c
def test_server_timestamps_and_constant_keys_render_like_the_python_path():
    fleet = make_fleet(2, "{windSpeed: {kind: uniform_int, min: -5, max: 5, rate_hz: 2}, "
                          "label: {kind: constant, value: on, rate_hz: 2}, "
                          "n: {kind: constant, value: 7, rate_hz: 2, send_as: string}}",
                       duration_s=2.0, timestamps="server")
    got, _ = drive(fleet)
    for dev in fleet.devices:
        payloads = packets(got[dev.index])
        assert len(payloads) == 4
        (stream,) = dev.streams
        for p in payloads:
            v = json.loads(p)["windSpeed"]
            # What the Python path renders for the same values (keys in the scenario's order).
            body, _ = type(stream).bodies(_Fixed(stream, v), 1, 0.0, 0, "}")
            assert p == b"{" + body[0]
        assert fleet.gt.devices[dev.name].sum == sum(json.loads(p)["windSpeed"] for p in payloads)


FLEET_WIND = ("{windSpeed: {kind: normal, mean: 42, stddev: 6, min: 0, max: 120, decimals: 1, "
              "rate_hz: 10}}")  # scenarios/fleet-3000.yaml's generator


def decimal_units(text: bytes, decimals: int) -> int:
    """'42.3' at 1 decimal -> 423: the exact number a payload carries, in 10^-decimals."""
    whole, _, frac = text.decode().partition(".")
    assert 1 <= len(frac) <= max(decimals, 1), text
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 10 ** decimals + int(frac.ljust(decimals, "0")[:decimals] or 0))


@needs_c
@pytest.mark.parametrize("telemetry,decimals,quoted", [
    (FLEET_WIND, 1, False),
    ("{windSpeed: {kind: uniform_float, min: -3, max: 2, decimals: 2, rate_hz: 10, send_as: string}}",
     2, True),
])
def test_float_generators_with_decimals_run_on_the_c_path_and_count_exactly(telemetry, decimals, quoted):
    fleet = make_fleet(12, telemetry, duration_s=10.0)
    assert native.why_not(fleet) is None  # the fleet scenario's generator is on the C path
    got, _ = drive(fleet)
    q = rb'"' if quoted else b""
    units: dict = {}
    gt = fleet.gt.to_json()
    for dev in fleet.devices:
        mine = []
        for p in packets(got[dev.index]):
            m = re.fullmatch(rb'\{"ts":(\d+),"values":\{"windSpeed":' + q + rb'(-?\d+\.\d+)' + q + rb'\}\}', p)
            assert m, p
            text = m[2]
            # Written like Python's repr of round(x, decimals): trailing zeros dropped, one kept.
            assert not (text.endswith(b"0") and not text.endswith(b".0")), text
            n = decimal_units(text, decimals)
            assert float(text) == n / 10 ** decimals
            mine.append(n)
            units.setdefault(dev.zone, {}).setdefault(str(int(m[1]) - int(m[1]) % 10000), []).append(n)
        assert len(mine) == 100
        # The ground truth is the exact sum of what was written, not a float sum of it.
        assert gt["devices"][dev.name]["sent"] == 100
        assert gt["devices"][dev.name]["sum"] == sum(mine) / 10 ** decimals
    unit = 10 ** decimals
    for zone, wins in units.items():
        assert {k: (w["count"], w["sum"], w["min"], w["max"]) for k, w in gt["windows"][zone].items()} \
            == {k: (len(v), sum(v) / unit, min(v) / unit, max(v) / unit) for k, v in wins.items()}
    values = [n / unit for wins in units.values() for v in wins.values() for n in v]
    mean = sum(values) / len(values)
    sd = (sum((x - mean) ** 2 for x in values) / len(values)) ** 0.5
    if "normal" in telemetry:  # 1,200 draws of N(42, 6): mean within 5 standard errors, sd within 10 %
        assert abs(mean - 42) < 5 * 6 / len(values) ** 0.5 and 5.4 < sd < 6.6
        assert 0 <= min(values) and max(values) <= 120
    else:  # uniform on [-3, 2): all inside, spread over the range
        assert -3 <= min(values) and max(values) <= 2 and abs(mean + 0.5) < 0.3 and len(set(values)) > 200


@pytest.mark.parametrize("hot", ["c", "python"])
def test_normal_min_and_max_clip_the_draw_on_both_paths(hot, monkeypatch):
    if hot == "c" and not native.available():
        pytest.skip("the C extension is not built")
    # N(10, 10) clipped to [5, 12]: a third of the draws below 5, two fifths above 12.
    fleet = make_fleet(4, "{windSpeed: {kind: normal, mean: 10, stddev: 10, min: 5, max: 12, "
                          "decimals: 1, rate_hz: 10}}", duration_s=5.0)
    if hot == "c":
        got, _ = drive(fleet)
        values = [json.loads(p)["values"]["windSpeed"] for d in fleet.devices for p in packets(got[d.index])]
    else:
        values = [v for d in fleet.devices for v in d.streams[0].bodies(50, 0.0, 0)[1]]
    assert len(values) == 200 and min(values) == 5.0 and max(values) == 12.0
    assert 40 < sum(v == 5.0 for v in values) < 100 and 50 < sum(v == 12.0 for v in values) < 110


@needs_c
def test_integer_and_float_value_keys_share_one_exact_ground_truth_unit():
    # Zone windows mix devices sending integers and devices sending two-decimal floats: both are
    # counted in hundredths, so a window's sum is exact whatever mix it holds.
    from tbspark.scenario import parse_scenario
    from tbspark.simulate.fleet import Fleet, RunConfig, Stats, build_devices
    from tbspark.simulate.groundtruth import GroundTruth
    sc = parse_scenario("""
name: s
devices:
  - {name: "i{i}", count: 4, zones: [A], telemetry: {windSpeed: {kind: uniform_int, min: 1, max: 9, rate_hz: 10}}}
  - {name: "f{i}", count: 4, zones: [A], telemetry: {windSpeed: {kind: uniform_float, min: 0, max: 1, decimals: 2, rate_hz: 10}}}
""")
    specs = sc.expand_devices()
    gt = GroundTruth("s", 10, "device", "windSpeed")
    for spec in specs:
        gt.add_device(spec.name, spec.zone)
    tokens = {s.name: f"t{i}" for i, s in enumerate(specs)}
    fleet = Fleet(build_devices(specs, tokens, "windSpeed", 1), RunConfig("h", 1, 0, "device", 1000, None, 3.0),
                  gt, Stats())
    assert native.fleet_scale(fleet) == 2 and native.why_not(fleet) is None
    got, _ = drive(fleet)
    wins: dict = {}
    for dev in fleet.devices:
        for p in packets(got[dev.index]):
            obj = json.loads(p)
            v = obj["values"]["windSpeed"]
            n = v * 100 if isinstance(v, int) else decimal_units(json.dumps(v).encode(), 2)
            wins.setdefault(str(obj["ts"] - obj["ts"] % 10000), []).append(n)
    out = fleet.gt.to_json()["windows"]["A"]
    assert {k: (w["count"], w["sum"]) for k, w in out.items()} == \
        {k: (len(v), sum(v) / 100) for k, v in wins.items()}
    assert sum(len(v) for v in wins.values()) == 8 * 30


class _Fixed:
    """A stream whose random key returns a given value (to render it the Python way)."""

    def __init__(self, stream, v):
        self.prefixes = stream.prefixes
        self.fns = [(lambda t, v=v: v) if getattr(fn, "kind", "") == "uniform_int" else fn
                    for fn in stream.fns]
        self._rendered = {}


@needs_c
def test_quotas_are_exact_and_the_schedule_absolute():
    fleet = make_fleet(50, "{windSpeed: {kind: uniform_int, min: 1, max: 9, rate_hz: 10}, "
                           "t: {kind: constant, value: 1, rate_hz: 3}}", duration_s=4.0)
    path = native.NativePath(fleet)
    socks = []
    for dev in fleet.devices:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        socks += [ours, theirs]
        path.hot.set_state(dev.index, ours.fileno(), 1)
        path.start_device(dev, 100.0 + dev.index * 0.001)  # a ramp
    now, k = 100.0, 0
    while not path.hot.done():
        k += 1
        now += 0.25 if k % 7 == 0 else 0.004  # sometimes very late wake-ups
        path.hot.send_due(now, int(now * 1000), 5000)
        for s in socks[1::2]:
            try:
                while s.recv(1 << 16):
                    pass
            except BlockingIOError:
                pass
    fleet.flush()
    for dev in fleet.devices:
        # 4 s at 10 Hz and at 3 Hz: 40 + 12 messages, however late the wake-ups were.
        assert fleet.gt.devices[dev.name].sent == 52
    # Finishing needed no more time than the schedule (4 s + ramp) plus the last late wake-up.
    assert now < 100.0 + 4.0 + 0.05 + 0.26
    for s in socks:
        s.close()


@needs_c
def test_a_seed_makes_a_run_reproducible_on_the_c_path():
    def values(seed):
        fleet = make_fleet(3, TUTORIAL, duration_s=2.0)
        for dev in fleet.devices:
            dev.seed = native_seed(seed, dev.name)
        got, _ = drive(fleet)
        return [packets(got[d.index]) for d in fleet.devices]

    a, b, c = values(1), values(1), values(2)
    strip = lambda runs: [[re.sub(rb'"ts":\d+', b"", p) for p in r] for r in runs]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)


def native_seed(seed, name):
    from tbspark.simulate.generators import device_seed
    return device_seed(seed, name)


@needs_c
def test_a_socket_that_cannot_keep_up_loses_nothing_and_counts_nothing_unsent(monkeypatch):
    monkeypatch.delenv("TBSPARK_SIM_HOT_PATH", raising=False)
    monkeypatch.delenv("TBSPARK_SIM_ENGINE", raising=False)

    async def main():
        loop = asyncio.get_running_loop()
        fleet = make_fleet(1, TUTORIAL, duration_s=401.0)
        fleet.cfg.max_write_buffer = 30_000  # beyond this, messages are skipped, not queued
        engine = AioEngine(fleet)
        assert engine.hot is not None and fleet.stats.hot_path == "c"
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(False)
        theirs.setblocking(False)
        conn = _Conn(engine, fleet.devices[0], ours, loop)
        conn.on_connected()  # the C path starts sending on this connection
        # Every message already late: one per wake-up. The peer does not read: 4,000 messages,
        # far more than the socket holds.
        now = time.monotonic() + 1000.0
        for _ in range(4000):
            now += 0.001
            engine._send_due(now)
        assert conn.pending and fleet.stats.skipped > 0  # buffered, then over the limit: skipped
        got = bytearray()
        while conn.pending or not got:
            try:
                got += theirs.recv(1 << 16)
            except BlockingIOError:
                await asyncio.sleep(0)  # the loop flushes the pending bytes when writable
        while True:
            try:
                got += theirs.recv(1 << 16)
            except BlockingIOError:
                break
        fleet.flush()
        payloads = packets(bytes(got))
        ds = fleet.gt.devices[fleet.devices[0].name]
        assert len(payloads) == ds.sent == fleet.stats.sent
        assert ds.sent + fleet.stats.skipped == 4000
        assert ds.sum == sum(int(json.loads(p)["values"]["windSpeed"]) for p in payloads)
        assert sum(w.count for w in fleet.gt.windows[fleet.devices[0].zone].values()) == ds.sent
        # After the buffer drained, the device sends straight to the socket again.
        now += 0.001
        engine._send_due(now)
        assert not conn.pending
        assert len(packets(theirs.recv(1 << 16))) == 1
        conn.lost(None)
        theirs.close()

    asyncio.run(main())


def test_fleets_the_c_path_cannot_drive_fall_back_to_python(monkeypatch):
    monkeypatch.delenv("TBSPARK_SIM_HOT_PATH", raising=False)
    monkeypatch.delenv("TBSPARK_SIM_ENGINE", raising=False)
    for telemetry in ("{windSpeed: {kind: uniform_float, min: 1, max: 2, rate_hz: 10}}",
                      "{windSpeed: {kind: normal, mean: 1, stddev: 2, rate_hz: 10}}",
                      "{windSpeed: {kind: normal, mean: 1e14, stddev: 2, decimals: 3, rate_hz: 10}}",
                      "{windSpeed: {kind: normal, mean: 1, stddev: 2, decimals: 1, rate_hz: 10}, "
                      "gust: {kind: uniform_int, min: 1, max: 2, rate_hz: 10}}",
                      "{windSpeed: {kind: sine, mean: 1, amplitude: 2, period_s: 5, rate_hz: 10}}",
                      "{windSpeed: {kind: constant, value: 1.5, rate_hz: 10}}"):
        fleet = make_fleet(1, telemetry)
        assert AioEngine(fleet).hot is None and fleet.stats.hot_path.startswith("python (")
    fleet = make_fleet(1, TUTORIAL)
    fleet.cfg.qos = 1
    assert AioEngine(fleet).hot is None and "QoS 1" in fleet.stats.hot_path
    monkeypatch.setenv("TBSPARK_SIM_ENGINE", "python")  # the old name still works
    fleet = make_fleet(1, TUTORIAL)
    assert AioEngine(fleet).hot is None and fleet.stats.hot_path == "python (TBSPARK_SIM_ENGINE=python)"
    monkeypatch.setenv("TBSPARK_SIM_HOT_PATH", "python")  # the new name, and it wins over the old
    monkeypatch.setenv("TBSPARK_SIM_ENGINE", "c")
    fleet = make_fleet(1, TUTORIAL)
    assert AioEngine(fleet).hot is None and fleet.stats.hot_path == "python (TBSPARK_SIM_HOT_PATH=python)"
    monkeypatch.setenv("TBSPARK_SIM_HOT_PATH", "c")
    with pytest.raises(UsageError, match="TBSPARK_SIM_HOT_PATH=c, but .* cannot run this fleet"):
        AioEngine(make_fleet(1, "{windSpeed: {kind: normal, mean: 1, stddev: 2, rate_hz: 10}}"))
    monkeypatch.setenv("TBSPARK_SIM_HOT_PATH", "fast")
    with pytest.raises(UsageError, match="not a simulator hot path"):
        AioEngine(make_fleet(1, TUTORIAL))


def run_against_sink(hot: str, monkeypatch, drop_after=None):
    """A whole asyncio-engine run (connect ramp, schedule, close) on the given hot path against
    the counting sink; returns (fleet, payloads per token)."""
    from tbspark.simulate.fleet import Fleet, RunConfig, Stats
    from tbspark.simulate.sink import ThreadedSink
    monkeypatch.setenv("TBSPARK_SIM_HOT_PATH", hot)
    base = make_fleet(12, TUTORIAL)
    with ThreadedSink(keep_payloads=True, drop_after=drop_after) as sink:
        cfg = RunConfig("127.0.0.1", sink.port, 0, "device", 500, 25, 0.0)
        fleet = Fleet(base.devices, cfg, base.gt, Stats())
        engine = AioEngine(fleet)
        assert (engine.hot is not None) == (hot == "c")
        engine.run()
        fleet.flush()
        got = {tok: list(p) for tok, p in sink.payloads.items()}
    return fleet, got


@pytest.mark.parametrize("hot", ["c", "python"])
def test_a_whole_run_delivers_exactly_the_ground_truth(hot, monkeypatch):
    if hot == "c" and not native.available():
        pytest.skip("the C extension is not built")
    fleet, got = run_against_sink(hot, monkeypatch)
    assert fleet.stats.errors == 0 and fleet.stats.skipped == 0
    for dev in fleet.devices:
        values = [int(json.loads(p)["values"]["windSpeed"]) for p in got[dev.token]]
        ds = fleet.gt.devices[dev.name]
        assert len(values) == ds.sent == 25 and sum(values) == ds.sum
    assert fleet.gt.to_json()["sent"] == fleet.stats.sent == 300


@needs_c
def test_the_c_path_reconnects_and_keeps_its_quotas_when_sessions_drop(monkeypatch):
    fleet, got = run_against_sink("c", monkeypatch, drop_after=7)
    assert fleet.stats.reconnects > 0  # the sink closed every session after 7 messages
    gt = fleet.gt.to_json()
    # Every message of every quota was either handed to a socket (and is in the ground truth)
    # or skipped while its device was down; what arrived was sent.
    assert gt["sent"] + fleet.stats.skipped == 300 and gt["sent"] == fleet.stats.sent
    for dev in fleet.devices:
        assert len(got.get(dev.token, [])) <= gt["devices"][dev.name]["sent"]
    assert sum(len(v) for v in got.values()) >= 12 * 7
