"""The device fleet an engine drives: per-device message streams, a drift-free schedule against
absolute times, payload building, and the live counters the CLI shows."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from tbspark.simulate.generators import MessageStream, device_rng, message_streams, numeric
from tbspark.simulate.groundtruth import GroundTruth

TELEMETRY_TOPIC = "v1/devices/me/telemetry"
GOLDEN = 0.6180339887498949
MAX_BATCH = 5000  # messages handled per engine wake-up at most  # spreads first-message phases of many devices evenly over a period


@dataclass
class DevicePlan:
    index: int
    name: str
    token: str
    zone: str
    streams: list[MessageStream]
    # Per stream: index of the value key among the stream's keys, or -1.
    value_pos: list[int]
    sent_per_stream: list[int] = field(default_factory=list)
    quotas: list[int] = field(default_factory=list)
    last_ts_ms: int = 0


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


class Fleet:
    """Everything about the run that does not depend on the MQTT engine."""

    def __init__(self, devices: list[DevicePlan], cfg: RunConfig, gt: GroundTruth, stats: Stats):
        self.devices = devices
        self.cfg = cfg
        self.gt = gt
        self.stats = stats
        self.stats.devices = len(devices)
        self._heap: list[tuple[float, int, int, int]] = []  # (due, seq, device, stream)
        self._seq = 0
        self._device_ts = cfg.timestamps == "device"
        self._t0_mono = time.monotonic()
        self._t0_wall_ms = time.time() * 1000.0
        self._elapsed0 = time.monotonic()

    def quota(self, stream: MessageStream) -> int:
        if self.cfg.per_stream is not None:
            return self.cfg.per_stream
        return max(1, int(round(self.cfg.duration_s * stream.rate_hz)))

    def start_device(self, dev: DevicePlan, now: float) -> None:
        """Called on the device's first CONNACK: its streams start from here, each at a phase
        of its period so that a fleet does not publish in bursts."""
        if dev.sent_per_stream:
            return  # a reconnect: the schedule kept running
        dev.sent_per_stream = [0] * len(dev.streams)
        dev.quotas = [self.quota(st) for st in dev.streams]
        for s, stream in enumerate(dev.streams):
            phase = ((dev.index * GOLDEN) % 1.0) * stream.period_s
            self._push(now + phase, dev.index, s)

    def _push(self, due: float, dev: int, stream: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, dev, stream))

    @property
    def done(self) -> bool:
        return not self._heap

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int = MAX_BATCH) -> list[tuple[DevicePlan, int]]:
        """The (device, stream) pairs whose next message is due, at most ``limit`` (an engine
        that falls behind still reads acks and notices a stop between batches); reschedules
        each at its absolute next time (first_due + k·period), so lateness never accumulates
        into drift."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < limit:
            due, _, d, s = heapq.heappop(heap)
            dev = self.devices[d]
            dev.sent_per_stream[s] += 1
            out.append((dev, s))
            if dev.sent_per_stream[s] < dev.quotas[s]:
                self._push(due + dev.streams[s].period, d, s)
        return out

    def drop_device(self, dev: DevicePlan) -> None:
        """Stop scheduling a device (its token was refused)."""
        self._heap = [e for e in self._heap if e[2] != dev.index]
        heapq.heapify(self._heap)

    def message(self, dev: DevicePlan, s: int, now: float) -> tuple[bytes, int, float | None]:
        """(JSON payload, ts in ms, numeric value_key or None) for the next message of a stream."""
        stream = dev.streams[s]
        elapsed = now - self._elapsed0
        fns = stream.fns
        vals = [fns[0](elapsed)] if len(fns) == 1 else [fn(elapsed) for fn in fns]
        ts = int(self._t0_wall_ms + (now - self._t0_mono) * 1000.0)
        # Strictly increasing per device: the platform keeps one point per (key, ts).
        if ts <= dev.last_ts_ms:
            ts = dev.last_ts_ms + 1
        dev.last_ts_ms = ts
        if len(vals) == 1:
            body = stream.prefixes[0] + _json_value(vals[0])
        else:
            body = ",".join(p + _json_value(v) for p, v in zip(stream.prefixes, vals))
        if self._device_ts:
            payload = f'{{"ts":{ts},"values":{{{body}}}}}'
        else:
            payload = f"{{{body}}}"
        pos = dev.value_pos[s]
        return payload.encode(), ts, (numeric(vals[pos]) if pos >= 0 else None)

    def record_sent(self, dev: DevicePlan, ts: int, value: float | None) -> None:
        self.stats.sent += 1
        self.gt.record_sent(dev.name, ts, value)

    def record_acked(self, dev: DevicePlan, value: float | None) -> None:
        self.stats.acked += 1
        self.gt.record_acked(dev.name, value)


def _json_value(v: Any) -> str:
    # Generators only produce numbers or numbers rendered as text, so no escaping is needed.
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def build_devices(specs: list, record: dict, value_key: str, seed: int | None) -> list[DevicePlan]:
    out = []
    known = record.get("devices", {})
    for i, spec in enumerate(specs):
        rng = device_rng(seed, spec.name)
        streams = message_streams(spec.telemetry, rng)
        pos = [st.keys.index(value_key) if value_key in st.keys else -1 for st in streams]
        out.append(DevicePlan(i, spec.name, known[spec.name]["token"], spec.zone, streams, pos))
    return out
