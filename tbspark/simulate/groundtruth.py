"""What the simulator actually sent, as verify needs it: per device count and sum, per zone per
window (by the timestamp sent) count, sum, min and max — written to groundtruth.json atomically, or,
for one shard of a fleet run in several processes, to groundtruth.shard-I-of-N.json (``load`` merges
the shards for verify)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from tbspark.errors import StateError, UsageError
from tbspark.state import DeviceTruth, GroundTruthRecord, StateDir, WindowTruth

NEAR_EDGE_MS = 250  # a server-stamped message this close to an edge may land in the neighbour window


def window_key(ts_ms: int, window_ms: int) -> tuple[int, bool]:
    """(start of the tumbling window that holds ``ts_ms``, aligned to the epoch as Spark's; whether
    ``ts_ms`` is within NEAR_EDGE_MS of one of its edges).

    A deliberate, independent copy of ``aggregate.windows.window_start_ms``: the ground truth and
    verify judge the aggregation job, so they must not share its arithmetic (a wrong window there
    would be wrong on both sides and pass). The only copy on this side: the simulator's bookkeeping
    (GroundTruth, Fleet) and verify (``window_start``) use it; the C hot path (simulate/native.py)
    has its own in C."""
    start = ts_ms - ts_ms % window_ms
    offset = ts_ms - start
    return start, offset < NEAR_EDGE_MS or window_ms - offset <= NEAR_EDGE_MS


def window_start(ts_ms: int, window_ms: int) -> int:
    """The ground truth's window start of ``ts_ms`` (see ``window_key``)."""
    return window_key(ts_ms, window_ms)[0]


@dataclass
class WindowStats:
    """The running count/sum/min/max of one zone's window while the simulator sends, frozen into a
    ``state.WindowTruth`` when the ground truth is written. Deliberately independent of
    ``aggregate.windows.WindowAgg``, the job's type: the ground truth judges the job, so it shares
    none of its code."""

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
        start, near = window_key(ts_ms, self._window_ms)
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

    def to_record(self) -> GroundTruthRecord:
        return GroundTruthRecord(
            scenario=self.scenario, window_s=self.window_s, timestamps=self.timestamps,
            value_key=self.value_key, started_ms=self.started_ms, ended_ms=self.ended_ms,
            sent=self.sent, acked=self.acked, errors=self.errors,
            devices={name: DeviceTruth(d.zone, d.sent, d.acked, _num(d.sum), _num(d.acked_sum))
                     for name, d in self.devices.items()},
            windows={zone: {start: WindowTruth(w.count, _num(w.sum), w.min, w.max, w.near_edge)
                            for start, w in sorted(wins.items())}
                     for zone, wins in self.windows.items()})

    def to_json(self) -> dict:
        """The record as written to groundtruth.json."""
        return self.to_record().to_json()

    def write(self, path: Path) -> None:
        self.to_record().save(path)


def _num(x: float) -> float:
    # Sums of integers stay integers in the file; float sums are rounded off their binary noise.
    if isinstance(x, int):
        return x
    return round(x, 9)


# ---- shards: `tbspark simulate --shard I/N` ------------------------------------------------------

SHARD_GLOB = "groundtruth.shard-*-of-*.json"
_SHARD_NAME = re.compile(r"^groundtruth\.shard-(\d+)-of-(\d+)\.json$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"--shard {text!r} is not I/N with 1 <= I <= N",
                         "e.g. --shard 1/3, --shard 2/3 and --shard 3/3 run a fleet in three processes")
    return int(m.group(1)), int(m.group(2))


def shard_of(specs: list, index: int, count: int) -> list:
    """Shard ``index`` of ``count`` (1-based) of the scenario's devices: every count-th device from
    the (index-1)-th, in the scenario's own order — deterministic, disjoint, together the whole
    fleet, and each shard within one device of the others' size (and spread over the zones). A
    device's values do not depend on its shard (its generator is seeded by its name)."""
    return specs[index - 1::count]


def shard_file(root: Path, index: int, count: int) -> Path:
    return Path(root) / f"groundtruth.shard-{index}-of-{count}.json"


def merge(records: Sequence[GroundTruthRecord]) -> GroundTruthRecord:
    """The ground truth of several shards as one record: devices side by side, windows added up
    (count, sum, near-edge; min of mins, max of maxes)."""
    windows: dict[str, dict[int, WindowTruth]] = {}
    devices: dict[str, DeviceTruth] = {}
    for r in records:
        devices.update(r.devices)
        for zone, wins in r.windows.items():
            mine = windows.setdefault(zone, {})
            for start, w in wins.items():
                have = mine.get(start)
                mine[start] = w if have is None else WindowTruth(
                    have.count + w.count, _num(have.sum + w.sum), _pick(min, have.min, w.min),
                    _pick(max, have.max, w.max), have.near_edge + w.near_edge)
    return replace(records[0], started_ms=min(r.started_ms for r in records),
                   ended_ms=max(r.ended_ms for r in records), sent=sum(r.sent for r in records),
                   acked=sum(r.acked for r in records), errors=sum(r.errors for r in records),
                   devices=devices, windows={z: dict(sorted(ws.items())) for z, ws in windows.items()},
                   shards=len(records))


def _pick(f, a, b):
    return a if b is None else b if a is None else f(a, b)


def load(root: Path, what_to_run: str) -> GroundTruthRecord | None:
    """The ground truth in state dir ``root``: groundtruth.json, or the shards' files merged when
    they are newer (None when there is neither). Shards of one run must all be there: a missing one
    is a StateError that names it. ``what_to_run``: the simulate command, for the hint."""
    root = Path(root)
    whole = StateDir(root).groundtruth_file
    shards: dict[int, dict[int, Path]] = {}
    for p in root.glob(SHARD_GLOB):
        m = _SHARD_NAME.match(p.name)
        if m:
            shards.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    newest_shard = max((p.stat().st_mtime for ps in shards.values() for p in ps.values()), default=None)
    if newest_shard is None or (whole.exists() and whole.stat().st_mtime >= newest_shard):
        if not whole.exists():
            return None
        return GroundTruthRecord.load(whole, f"run `{what_to_run}` again")
    count = max(shards, key=lambda n: max(p.stat().st_mtime for p in shards[n].values()))
    found = shards[count]
    missing = [i for i in range(1, count + 1) if i not in found]
    if missing:
        raise StateError(f"the ground truth of shard(s) {', '.join(f'{i}/{count}' for i in missing)} is missing "
                         f"in {root} (found {', '.join(f'{i}/{count}' for i in sorted(found))})",
                         f"run `{what_to_run} --shard {missing[0]}/{count}`, or copy its "
                         f"groundtruth.shard-{missing[0]}-of-{count}.json here from the machine that ran it")
    return merge([GroundTruthRecord.load(found[i], f"run `{what_to_run} --shard {i}/{count}` again")
                  for i in range(1, count + 1)])
