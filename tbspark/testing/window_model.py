"""The exact result bench/state_store.py holds both window-state variants to (the job's driver-side
fold and Spark's state store): its input — forwarding-chain records with out-of-order and late ones —
and, in plain Python, which records are late and each window's final aggregates when the records are
read in fixed batches. Pure; tested in tests/unit/test_bench_state_store.py against the job's
``WindowState``."""

from __future__ import annotations

import random
from typing import Sequence

T0 = 1_700_000_000_000  # event time of the first record (2023-11-14, a window start)
WINDOW_MS = 10_000
DELAY_MS = 5_000  # the watermark: the scenario default (aggregation.watermark_s: 5)
PER_S = 500  # records per second of event time (all zones together)
LATE_FRACTION = 0.01  # 15 s to 10 min behind: late or not, depending on where they fall
DISORDER_FRACTION = 0.05  # up to 5 s behind: out of order, never late (the watermark is 5 s)

Record = tuple[str, int, float]  # zone, event time ms, value
Agg = tuple[int, float, float, float]  # count, sum, min, max


def make_records(n: int, zones: int, seed: int = 18) -> list[Record]:
    """``n`` records in Kafka (offset) order: event time advancing PER_S records a second, with
    DISORDER_FRACTION of them up to 5 s behind (out of order, never late) and LATE_FRACTION 15 s to
    10 min behind. Values are multiples of 0.25, so every sum is exact in a double whatever the order
    Spark adds them in — an average compares with ``==``."""
    rng = random.Random(seed)
    out: list[Record] = []
    for i in range(n):
        ts = T0 + i * 1000 // PER_S
        r = rng.random()
        if r < LATE_FRACTION:
            ts -= rng.randrange(15_000, 600_000)
        elif r < LATE_FRACTION + DISORDER_FRACTION:
            ts -= rng.randrange(0, 5_000)
        out.append((f"Zone {rng.randrange(zones):02d}", ts, rng.randrange(0, 400) / 4))
    return out


def encode(record: Record) -> bytes:
    zone, ts, value = record
    return b'{"geoZone":"%s","windSpeed":%s,"ts":"%d"}' % (zone.encode(), repr(value).encode(), ts)


def expected_windows(records: Sequence[Record], batch_size: int, window_ms: int = WINDOW_MS,
                     delay_ms: int = DELAY_MS, lag: int = 0) -> tuple[dict[tuple[str, int], Agg], int]:
    """The final (count, sum, min, max) per (zone, window start) and the number of late records when
    ``records`` (in offset order) are read in batches of ``batch_size``.

    The watermark in effect in batch b is the latest event time of batches before b minus
    ``delay_ms`` (none in batch 0; it never goes back). A record is late when its window ends at or
    before the watermark of batch b - ``lag``: lag 0 is the job's rule (windows.is_late with the
    state's watermark) and Spark's with ``statefulOperator.allowMultiple=false``; lag 1 is Spark's
    default (PropagateWatermarkSimulator: late events against the previous batch's watermark)."""
    windows: dict[tuple[str, int], Agg] = {}
    late = 0
    marks: list[int | None] = [None]  # marks[b]: the watermark in effect in batch b
    for b, first in enumerate(range(0, len(records), batch_size)):
        mark = marks[b - lag] if b - lag >= 0 else None
        batch_max: int | None = None
        for zone, ts, value in records[first:first + batch_size]:
            batch_max = ts if batch_max is None else max(batch_max, ts)
            start = ts - ts % window_ms
            if mark is not None and start + window_ms <= mark:
                late += 1
                continue
            key = (zone, start)
            if key in windows:
                c, s, lo, hi = windows[key]
                windows[key] = (c + 1, s + value, min(lo, value), max(hi, value))
            else:
                windows[key] = (1, value, value, value)
        prev = marks[b]
        cand = None if batch_max is None else batch_max - delay_ms
        marks.append(prev if cand is None else cand if prev is None else max(prev, cand))
    return windows, late


def compare(got: dict[tuple[str, int], Agg], want: dict[tuple[str, int], Agg]) -> dict:
    """Windows missing, extra, or with another count/sum/min/max (the average is sum/count: equal
    sums and counts give equal averages)."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and tuple(got[k]) != tuple(want[k])]
    return {"exact": not (missing or extra or wrong), "windows": len(want), "missing": len(missing),
            "extra": len(extra), "wrong": len(wrong),
            "examples": [list(map(str, k)) for k in (missing + extra + wrong)[:3]]}
