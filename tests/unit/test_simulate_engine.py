"""The fast engine's parts on their own: the timing-wheel schedule (absolute, never early, every
quota exactly), a socket that cannot keep up (bytes buffered and delivered in order), and the
packets it builds (what the codec's encode_publish makes)."""

from __future__ import annotations

import asyncio
import json
import random
import socket

from tbspark.mqtt import codec
from tbspark.scenario import parse_scenario
from tbspark.simulate.aio_engine import AioEngine, _Conn
from tbspark.simulate.fleet import Fleet, RunConfig, Stats, build_devices
from tbspark.simulate.groundtruth import GroundTruth


def make_fleet(n: int, telemetry: str, duration_s: float = 10.0, timestamps: str = "device"):
    sc = parse_scenario(f"""
name: s
devices:
  - name: "d{{i:04d}}"
    count: {n}
    zones: [A, B, C]
    telemetry: {telemetry}
""")
    specs = sc.expand_devices()
    gt = GroundTruth("s", 10, timestamps, "windSpeed")
    for spec in specs:
        gt.add_device(spec.name, spec.zone)
    tokens = {s.name: f"t{i}" for i, s in enumerate(specs)}
    return Fleet(build_devices(specs, tokens, "windSpeed", 1),
                 RunConfig("h", 1, 0, timestamps, 1000, None, duration_s), gt, Stats())


def test_wheel_sends_every_quota_never_early_and_without_drift():
    fleet = make_fleet(300, "{windSpeed: {kind: uniform_int, min: 1, max: 9, rate_hz: 10}, "
                            "t: {kind: constant, value: 1, rate_hz: 3}}")
    t0 = 5000.0
    for i, dev in enumerate(fleet.devices):
        fleet.start_device(dev, t0 + i * 0.0007)  # devices connect over a ramp
    firsts = {id(f): f.due for d in fleet.devices for f in d.feeds}
    seen: dict[int, list[float]] = {}
    rng = random.Random(3)
    now = t0
    while not fleet.done:
        # Wake-ups at uneven, sometimes very late times.
        now += rng.choice([0.0004, 0.002, 0.002, 0.013, 0.25])
        for f in fleet.pop_due(now):
            seen.setdefault(id(f), []).append(now)
    for dev in fleet.devices:
        for f in dev.feeds:
            times = seen[id(f)]
            assert len(times) == round(10 * f.stream.rate_hz)  # 10 s at the stream's rate
            for k, t in enumerate(times):
                due = firsts[id(f)] + k * f.period
                assert t >= due - 1e-9  # never before its time
            # The k-th message is due at first + k·period whatever the lateness before it.
            assert abs(f.due - (firsts[id(f)] + (len(times) - 1) * f.period)) < 1e-6


def test_wheel_batches_whole_slots_up_to_the_limit_and_keeps_the_rest_due():
    fleet = make_fleet(2000, "{windSpeed: {kind: constant, value: 1, rate_hz: 10}}")
    for dev in fleet.devices:
        fleet.start_device(dev, 100.0)
    now = 100.05  # half of the devices are due once (their phases spread over 0.1 s)
    due = sum(1 for d in fleet.devices for f in d.feeds if f.due <= now)
    assert 900 < due < 1100
    first = fleet.pop_due(now, limit=500)
    assert 500 <= len(first) < 600  # whole 1 ms slots: at most one slot (~20 feeds) over
    rest = fleet.pop_due(now, limit=10_000)
    assert len(first) + len(rest) == due and len({id(f) for f in first + rest}) == due
    assert fleet.pop_due(now) == []  # nothing more is due yet
    assert fleet.next_due() > now


def test_dropped_devices_are_not_scheduled_any_more():
    fleet = make_fleet(3, "{windSpeed: {kind: constant, value: 1, rate_hz: 10}}")
    for dev in fleet.devices:
        fleet.start_device(dev, 0.0)
    fleet.drop_device(fleet.devices[1])
    sent = [f.dev.index for f in fleet.pop_due(100.0, limit=10**6)]
    while not fleet.done:
        sent += [f.dev.index for f in fleet.pop_due(200.0)]
    assert 1 not in sent and sent.count(0) == sent.count(2) == 100


class _Engine:
    """What a connection needs of its engine."""

    def __init__(self) -> None:
        self.fleet = make_fleet(1, "{windSpeed: {kind: constant, value: 1, rate_hz: 10}}")
        self.stopping = False
        self.refused: set = set()
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)

    def sync(self, conn) -> None:  # the C path's view of the connection: none here
        pass


def test_a_socket_that_cannot_keep_up_gets_every_byte_in_order():
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        engine = _Engine()
        conn = _Conn(engine, engine.fleet.devices[0], ours, loop)  # type: ignore[arg-type]
        chunks = [bytes([i % 256]) * (1000 + i) for i in range(400)]  # ~600 KB, more than fits
        for chunk in chunks:
            assert conn.write(chunk)
        assert conn.pending  # the kernel buffer filled up: the rest waits, in order
        got = bytearray()
        while len(got) < sum(map(len, chunks)):
            try:
                got += theirs.recv(1 << 16)
            except BlockingIOError:
                await asyncio.sleep(0)  # the loop flushes the pending bytes when writable
        assert not conn.pending
        conn.lost(None)
        theirs.close()
        assert got == b"".join(chunks)
        return bytes(got)

    asyncio.run(main())


def test_packets_are_what_the_codec_encodes(monkeypatch):
    monkeypatch.setenv("TBSPARK_SIM_HOT_PATH", "python")  # the Python path (fake sockets)
    fleet = make_fleet(4, "{windSpeed: {kind: uniform_int, min: 30, max: 60, rate_hz: 10, "
                          "send_as: string}}")
    engine = AioEngine(fleet)
    out: dict[int, list[bytes]] = {}

    class Conn:
        pending = b""

        def __init__(self, i: int) -> None:
            self.send = lambda data: out.setdefault(i, []).append(data) or len(data)

    for dev in fleet.devices:
        fleet.set_conn(dev, Conn(dev.index))
        fleet.start_device(dev, 10.0)
    for k in range(40):
        engine._send_due(10.0 + 0.05 * k)
    fleet.flush()
    decoder = codec.StreamDecoder()
    total = 0
    for i, pkts in out.items():
        values = []
        for pkt in pkts:
            ((ptype, flags, body),) = decoder.feed(pkt)
            pub = codec.decode_publish(flags, body)
            assert codec.encode_publish(pub.topic, pub.payload, 0) == pkt
            data = json.loads(pub.payload)
            assert pub.topic == "v1/devices/me/telemetry" and set(data) == {"ts", "values"}
            values.append(int(data["values"]["windSpeed"]))
        dev = fleet.gt.devices[fleet.devices[i].name]
        assert dev.sent == len(values) and dev.sum == sum(values)
        total += len(values)
    gt = fleet.gt.to_json()
    assert gt["sent"] == total == fleet.stats.sent
    assert sum(w["count"] for z in gt["windows"].values() for w in z.values()) == total
