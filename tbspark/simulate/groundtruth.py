"""What the simulator actually sent, as verify needs it: per device count and sum, per zone per
window (by the timestamp sent) count, sum, min and max — written to groundtruth.json atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbspark.state import write_json_atomic

NEAR_EDGE_MS = 250  # a server-stamped message this close to an edge may land in the neighbour window


@dataclass
class WindowStats:
    count: int = 0
    sum: float = 0
    min: float | None = None
    max: float | None = None
    near_edge: int = 0

    def add(self, value: float, near_edge: bool) -> None:
        self.count += 1
        self.sum += value
        self.min = value if self.min is None or value < self.min else self.min
        self.max = value if self.max is None or value > self.max else self.max
        self.near_edge += near_edge


@dataclass
class DeviceStats:
    zone: str
    sent: int = 0
    acked: int = 0
    sum: float = 0
    acked_sum: float = 0


@dataclass
class GroundTruth:
    scenario: str
    window_s: float
    timestamps: str  # "device" | "server"
    value_key: str
    started_ms: int = 0
    ended_ms: int = 0
    errors: int = 0
    devices: dict[str, DeviceStats] = field(default_factory=dict)
    windows: dict[str, dict[int, WindowStats]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._window_ms = int(round(self.window_s * 1000))

    def add_device(self, name: str, zone: str) -> None:
        self.devices[name] = DeviceStats(zone)
        self.windows.setdefault(zone, {})

    def record_sent(self, device: str, ts_ms: int, value: float | None) -> None:
        """One message handed to the connection. ``value`` is the numeric value_key or None."""
        dev = self.devices[device]
        dev.sent += 1
        if value is None:
            return
        dev.sum += value
        start = ts_ms - ts_ms % self._window_ms  # tumbling windows aligned to the epoch, as Spark's
        offset = ts_ms - start
        near = offset < NEAR_EDGE_MS or self._window_ms - offset <= NEAR_EDGE_MS
        zone = self.windows[dev.zone]
        stats = zone.get(start)
        if stats is None:
            stats = zone[start] = WindowStats()
        stats.add(value, near)

    def add_window_values(self, zone: str, start: int, values: list, near_edge: bool) -> None:
        """Values sent by devices of ``zone`` with timestamps in the window starting at
        ``start`` (all near its edge or none): the batched form of record_sent's window part
        (the senders count the devices' sent and sum themselves)."""
        if values:
            n = len(values)
            self.add_window_stats(zone, start, n, sum(values), min(values), max(values),
                                  n if near_edge else 0)

    def add_window_stats(self, zone: str, start: int, count: int, total: float, lo: float,
                         hi: float, near_edge: int) -> None:
        """Counts made elsewhere (the C hot path) for the window starting at ``start``."""
        if not count:
            return
        wins = self.windows[zone]
        stats = wins.get(start)
        if stats is None:
            stats = wins[start] = WindowStats()
        stats.count += count
        stats.sum += total
        stats.min = lo if stats.min is None or lo < stats.min else stats.min
        stats.max = hi if stats.max is None or hi > stats.max else stats.max
        stats.near_edge += near_edge

    def record_acked(self, device: str, value: float | None) -> None:
        dev = self.devices[device]
        dev.acked += 1
        if value is not None:
            dev.acked_sum += value

    @property
    def sent(self) -> int:
        return sum(d.sent for d in self.devices.values())

    @property
    def acked(self) -> int:
        return sum(d.acked for d in self.devices.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "window_s": self.window_s, "timestamps": self.timestamps,
            "value_key": self.value_key, "started_ms": self.started_ms, "ended_ms": self.ended_ms,
            "sent": self.sent, "acked": self.acked, "errors": self.errors,
            "devices": {name: {"zone": d.zone, "sent": d.sent, "acked": d.acked,
                               "sum": _num(d.sum), "acked_sum": _num(d.acked_sum)}
                        for name, d in self.devices.items()},
            "windows": {zone: {str(start): {"count": w.count, "sum": _num(w.sum), "min": w.min,
                                            "max": w.max, "near_edge": w.near_edge}
                               for start, w in sorted(wins.items())}
                        for zone, wins in self.windows.items()},
        }

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())


def _num(x: float) -> float:
    # Sums of integers stay integers in the file; float sums are rounded off their binary noise.
    if isinstance(x, int):
        return x
    return round(x, 9)
