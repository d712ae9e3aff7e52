"""The device fleet an engine drives: per-device message streams, a drift-free schedule against
absolute times (a timing wheel), payload building, and the live counters the CLI shows."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from tbspark.simulate.generators import MessageStream, device_rng, device_seed, message_streams
from tbspark.simulate.groundtruth import GroundTruth, window_key

if TYPE_CHECKING:
    from tbspark.scenario import DeviceSpec

GOLDEN = 0.6180339887498949  # spreads the first-message phases of many devices evenly over a period
MAX_BATCH = 5000  # messages handled per engine wake-up, about (whole wheel slots are taken)
SLOTS_PER_S = 1000  # timing-wheel slots of 1 ms
BLOCK = 32  # messages drawn ahead from a stream's generators at a time


@dataclass
class DevicePlan:
    index: int
    name: str
    token: str
    zone: str
    streams: list[MessageStream]
    # Per stream: index of the value key among the stream's keys, or -1.
    value_pos: list[int]
    sent_per_stream: list[int] = field(default_factory=list)  # non-empty once started
    quotas: list[int] = field(default_factory=list)
    last_ts_ms: int = 0
    feeds: list = field(default_factory=list)
    conn: Any = None  # the engine's live connection, None while down
    seed: int = 0  # 64 bits for the C hot path's generators (native.py)


@dataclass
class Stats:
    """Counters shared between the engine and the live view (read without locks: ints only)."""

    devices: int = 0
    connected: int = 0
    sent: int = 0
    acked: int = 0
    errors: int = 0
    skipped: int = 0
    reconnects: int = 0
    refused: int = 0
    last_error: str = ""
    hot_path: str = ""  # the asyncio engine's: "c", or "python (why)"


@dataclass
class RunConfig:
    host: str
    port: int
    qos: int
    timestamps: str  # "device" | "server"
    ramp_per_s: float
    per_stream: int | None  # messages per stream (from --messages), else from duration
    duration_s: float
    keepalive_s: int = 60
    ack_grace_s: float = 5.0
    max_write_buffer: int = 1 << 20  # bytes queued on one connection before messages are skipped


class Feed:
    """One stream of one device as the engines drive it: its absolute schedule (``due`` of the
    next message; the k-th is first + k·period), the messages it has left, a block of messages
    drawn ahead from its generators, and the device's live connection (None while down)."""

    # bodies: the next messages' JSON members and closing braces (the payload without its head).
    __slots__ = ("dev", "s", "stream", "due", "period", "left", "bodies", "nums", "i", "n",
                 "conn", "ds", "zbuf", "dead")

    def __init__(self, dev: DevicePlan, s: int, due: float, quota: int, ds: Any, zbuf: list):
        self.dev, self.s, self.stream = dev, s, dev.streams[s]
        self.due, self.period, self.left = due, self.stream.period, quota
        self.bodies: list[bytes] = []
        self.nums: list = []
        self.i = self.n = 0
        self.conn: Any = dev.conn
        self.ds = ds  # the device's ground-truth counters
        self.zbuf = zbuf  # its zone's values not yet folded into the ground-truth windows
        self.dead = False


class Fleet:
    """Everything about the run that does not depend on the MQTT engine.

    The schedule is a timing wheel: 1 ms slots, each a list of the feeds whose next message falls
    in it, and a heap of the occupied slot numbers (one heap operation per slot, not per
    message). Each feed keeps its exact due time, so a message is never sent before it is due
    and lateness never accumulates."""

    def __init__(self, devices: list[DevicePlan], cfg: RunConfig, gt: GroundTruth, stats: Stats):
        self.devices = devices
        self.cfg = cfg
        self.gt = gt
        self.stats = stats
        self.stats.devices = len(devices)
        self._slots: dict[int, list[Feed]] = {}
        self._keys: list[int] = []  # heap of the occupied slot numbers
        self._device_ts = cfg.timestamps == "device"
        self._t0_mono = time.monotonic()
        self._t0_wall_ms = time.time() * 1000.0
        self._elapsed0 = time.monotonic()
        self._window_ms = int(round(gt.window_s * 1000))
        # Values of sent messages per zone, folded into the ground truth's windows whenever the
        # window (or its near-edge part) of the timestamps being sent changes, and at the end.
        self._zbufs: dict[str, list] = {}
        self._zkey: tuple[int, bool] | None = None
        # Set by an engine that counts ground truth elsewhere (the C hot path): called by flush().
        self.fold: Any = None

    def quota(self, stream: MessageStream) -> int:
        if self.cfg.per_stream is not None:
            return self.cfg.per_stream
        return max(1, int(round(self.cfg.duration_s * stream.rate_hz)))

    def start_device(self, dev: DevicePlan, now: float) -> None:
        """Called on the device's first CONNACK: its streams start from here, each at a phase
        of its period so that a fleet does not publish in bursts."""
        phases = self.begin(dev)
        if phases is None:
            return  # a reconnect: the schedule kept running
        ds = self.gt.devices[dev.name]
        zbuf = self._zbufs.setdefault(ds.zone, [])
        dev.feeds = []
        for s, phase in enumerate(phases):
            feed = Feed(dev, s, now + phase, dev.quotas[s], ds, zbuf)
            dev.feeds.append(feed)
            self._push(feed)

    def begin(self, dev: DevicePlan) -> list[float] | None:
        """A device's first start (None on a reconnect): its counters and quotas set, and each
        stream's phase — offsets spread over the period so that a fleet does not publish in bursts.
        Shared by this timing wheel and the C schedule (native.py)."""
        if dev.sent_per_stream:
            return None
        dev.sent_per_stream = [0] * len(dev.streams)
        dev.quotas = [self.quota(st) for st in dev.streams]
        return [((dev.index * GOLDEN) % 1.0) * st.period_s for st in dev.streams]

    def _push(self, feed: Feed) -> None:
        k = int(feed.due * SLOTS_PER_S)
        lst = self._slots.get(k)
        if lst is None:
            self._slots[k] = [feed]
            heapq.heappush(self._keys, k)
        else:
            lst.append(feed)

    @property
    def done(self) -> bool:
        return not self._keys

    def next_due(self) -> float | None:
        if not self._keys:
            return None
        return min(f.due for f in self._slots[self._keys[0]])

    def pop_due(self, now: float, limit: int = MAX_BATCH) -> list[Feed]:
        """The feeds whose next message is due (whole slots until ``limit`` is reached: an engine
        that falls behind still reads acks and notices a stop between batches). Each is counted
        and rescheduled at its absolute next time (first_due + k·period)."""
        keys, slots = self._keys, self._slots
        kn = int(now * SLOTS_PER_S)
        taken: list[Feed] = []
        while keys and keys[0] <= kn and len(taken) < limit:
            k = heapq.heappop(keys)
            lst = slots.pop(k)
            if k == kn:  # the current slot: only what is due by now
                later = [f for f in lst if f.due > now]
                if later:
                    taken += [f for f in lst if f.due <= now]
                    slots[k] = later
                    heapq.heappush(keys, k)
                    break
            taken += lst
        out: list[Feed] = []
        append = out.append
        slots_get = slots.get
        last_k, last = -1, None
        for f in taken:
            if f.dead:
                continue
            append(f)
            f.left -= 1
            if f.left > 0:
                due = f.due = f.due + f.period
                k = int(due * SLOTS_PER_S)
                if k != last_k:  # feeds of one slot mostly move to the same slot
                    last = slots_get(k)
                    if last is None:
                        last = slots[k] = []
                        heapq.heappush(keys, k)
                    last_k = k
                last.append(f)  # type: ignore[union-attr]
        return out

    def drop_device(self, dev: DevicePlan) -> None:
        """Stop scheduling a device (its token was refused)."""
        for f in dev.feeds:
            f.dead = True

    def set_conn(self, dev: DevicePlan, conn: Any) -> None:
        """The connection a device's messages go out on (None while it is down)."""
        dev.conn = conn
        for f in dev.feeds:
            f.conn = conn

    def refill(self, f: Feed, now: float) -> None:
        """Draw the feed's next block of messages (one at a time for time-dependent ones)."""
        n = 1 if f.stream.timed else max(1, min(BLOCK, f.left + 1))
        f.bodies, f.nums = f.stream.bodies(n, now - self._elapsed0, f.dev.value_pos[f.s],
                                           "}}" if self._device_ts else "}")
        f.i, f.n = 0, n

    def timestamp(self, now: float) -> int:
        return int(self._t0_wall_ms + (now - self._t0_mono) * 1000.0)

    def message(self, f: Feed, now: float) -> tuple[bytes, int, float | None]:
        """(JSON payload, ts in ms, numeric value_key or None) for the feed's next message: the
        general path (the asyncio engine inlines the same steps)."""
        if f.i == f.n:
            self.refill(f, now)
        body, value = f.bodies[f.i], f.nums[f.i]
        f.i += 1
        dev = f.dev
        ts = self.timestamp(now)
        # Strictly increasing per device: the platform keeps one point per (key, ts).
        if ts <= dev.last_ts_ms:
            ts = dev.last_ts_ms + 1
        dev.last_ts_ms = ts
        # Bodies end with the closing braces already.
        payload = (b'{"ts":%d,"values":{' % ts if self._device_ts else b"{") + body
        return payload, ts, value

    def record_sent(self, f: Feed, ts: int, value: float | None) -> None:
        self.stats.sent += 1
        self.gt.record_sent(f.dev.name, ts, value)

    def window_key(self, ts: int) -> tuple[int, bool]:
        """(window start, near an edge) of a timestamp, as GroundTruth.record_sent files it: the
        ground truth's own window arithmetic, not the job's (groundtruth.window_key)."""
        return window_key(ts, self._window_ms)

    def set_window(self, key: tuple[int, bool]) -> None:
        """The (window, near edge) the values buffered from now on belong to; the ones buffered
        so far are folded in first when it changes."""
        if key != self._zkey:
            self.flush()
            self._zkey = key

    def flush(self) -> None:
        """Fold the buffered per-zone values into the ground truth's windows."""
        if self.fold is not None:
            self.fold()
        if self._zkey is None:
            return
        start, near = self._zkey
        for zone, buf in self._zbufs.items():
            if buf:
                self.gt.add_window_values(zone, start, buf, near)
                buf.clear()

    def record_acked(self, dev: DevicePlan, value: float | None) -> None:
        self.stats.acked += 1
        self.gt.record_acked(dev.name, value)


def build_devices(specs: list[DeviceSpec], tokens: Mapping[str, str], value_key: str,
                  seed: int | None) -> list[DevicePlan]:
    """The devices' plans; ``tokens``: device name -> access token (ProvisionRecord.tokens())."""
    out = []
    for i, spec in enumerate(specs):
        rng = device_rng(seed, spec.name)
        streams = message_streams(spec.telemetry, rng)
        pos = [st.keys.index(value_key) if value_key in st.keys else -1 for st in streams]
        out.append(DevicePlan(i, spec.name, tokens[spec.name], spec.zone, streams, pos,
                              seed=device_seed(seed, spec.name)))
    return out
