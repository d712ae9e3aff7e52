"""Pure window arithmetic of the aggregation job: tumbling event-time windows per zone, the watermark,
lateness, and the window state carried from one micro-batch to the next. No Spark here: the job
(``job.py``) lets Spark compute each batch's partial aggregates and folds them in with ``WindowState``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable


def window_start_ms(ts_ms: int, window_ms: int) -> int:
    """Start of the tumbling window holding ``ts_ms``; windows are [start, start + window_ms)."""
    return ts_ms - (ts_ms % window_ms)  # Python's % floors, so negative times land correctly too


def is_late(ts_ms: int, window_ms: int, watermark_ms: int | None) -> bool:
    """A record is late when its whole window lies at or before the watermark: that window was
    closed (and its final value written) by an earlier batch, so the record is dropped."""
    return watermark_ms is not None and window_start_ms(ts_ms, window_ms) + window_ms <= watermark_ms


def next_watermark(current_ms: int | None, max_event_ms: int | None, delay_ms: int) -> int | None:
    """The watermark after a batch whose latest event time is ``max_event_ms``; it never goes back."""
    if max_event_ms is None:
        return current_ms
    candidate = max_event_ms - delay_ms
    return candidate if current_ms is None else max(current_ms, candidate)


@dataclass(frozen=True)
class WindowAgg:
    """count/sum/min/max of one zone's values in one window; ``mean`` is derived."""

    count: int
    sum: float
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.sum / self.count

    @classmethod
    def of(cls, value: float) -> "WindowAgg":
        return cls(1, float(value), float(value), float(value))

    def merge(self, other: "WindowAgg") -> "WindowAgg":
        return WindowAgg(self.count + other.count, self.sum + other.sum,
                         min(self.min, other.min), max(self.max, other.max))


@dataclass(frozen=True)
class ZoneWindow:
    zone: str
    start_ms: int
    agg: WindowAgg


Key = tuple[str, int]  # (zone, window start ms)


@dataclass
class WindowState:
    """Open windows and the watermark after batch ``batch_id`` (-1 = before the first batch).

    ``apply`` is deterministic, so replaying a batch from the previous state gives the same result:
    that is what makes the job's writes exactly-once in effect."""

    window_ms: int
    delay_ms: int
    batch_id: int = -1
    watermark_ms: int | None = None
    windows: dict[Key, WindowAgg] = field(default_factory=dict)

    def apply(self, batch_id: int, partials: dict[Key, WindowAgg], max_event_ms: int | None,
              output_mode: str = "update") -> tuple["WindowState", list[ZoneWindow]]:
        """Fold one batch's partial aggregates (already stripped of late records) into a new state.

        Returns the new state and the windows to write: in ``update`` mode every window the batch
        touched, with its value so far; in ``append`` mode only the windows the new watermark closed."""
        merged = dict(self.windows)
        for key, agg in partials.items():
            merged[key] = merged[key].merge(agg) if key in merged else agg
        watermark = next_watermark(self.watermark_ms, max_event_ms, self.delay_ms)
        closed = {k for k in merged if watermark is not None and k[1] + self.window_ms <= watermark}
        if output_mode == "append":
            out_keys = closed
        elif output_mode == "update":
            out_keys = set(partials)
        else:
            raise ValueError(f"unknown output mode {output_mode!r}")
        out = [ZoneWindow(z, s, merged[(z, s)]) for (z, s) in sorted(out_keys)]
        kept = {k: v for k, v in merged.items() if k not in closed}
        return WindowState(self.window_ms, self.delay_ms, batch_id, watermark, kept), out

    def flush(self) -> list[ZoneWindow]:
        """Every window still open (append mode writes these when a --once run ends)."""
        return [ZoneWindow(z, s, a) for (z, s), a in sorted(self.windows.items())]

    def to_json(self) -> dict:
        return {"batch_id": self.batch_id, "watermark_ms": self.watermark_ms,
                "window_ms": self.window_ms, "delay_ms": self.delay_ms,
                "windows": [[z, s, a.count, a.sum, a.min, a.max]
                            for (z, s), a in sorted(self.windows.items())]}

    @classmethod
    def from_json(cls, data: dict) -> "WindowState":
        windows = {(z, int(s)): WindowAgg(int(c), float(sm), float(mn), float(mx))
                   for z, s, c, sm, mn, mx in data["windows"]}
        return cls(int(data["window_ms"]), int(data["delay_ms"]), int(data["batch_id"]),
                   data["watermark_ms"], windows)


def aggregate(records: Iterable[tuple[str, int, float]], window_ms: int) -> dict[Key, WindowAgg]:
    """Aggregate (zone, ts_ms, value) records into windows in one go: the reference result a
    stream must reach when nothing is late."""
    out: dict[Key, WindowAgg] = {}
    for zone, ts_ms, value in records:
        key = (zone, window_start_ms(int(ts_ms), window_ms))
        one = WindowAgg.of(value)
        out[key] = out[key].merge(one) if key in out else one
    return out


def to_points(windows: Iterable[ZoneWindow], keys: dict[str, str]) -> dict[str, list[dict]]:
    """ThingsBoard telemetry per zone, each point at ts = window start so a rewrite overwrites it.

    ``keys`` maps avg/count/min/max to the output key names (e.g. windSpeed, windSpeedCount, …)."""
    points: dict[str, list[dict]] = {}
    for w in windows:
        values = {keys["avg"]: w.agg.mean, keys["count"]: w.agg.count,
                  keys["min"]: _clean(w.agg.min), keys["max"]: _clean(w.agg.max)}
        points.setdefault(w.zone, []).append({"ts": w.start_ms, "values": values})
    return points


def _clean(x: float) -> float | int:
    # Integral min/max go out as ints (42 not 42.0), the type the devices sent; the mean stays a double.
    return int(x) if math.isfinite(x) and x == int(x) and abs(x) < 2**53 else x
