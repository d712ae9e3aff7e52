"""Aggregation buckets as ThingsBoard cuts them (AbstractChunkedAggregationTimeseriesDao, TimeUtils):
the first bucket starts at startTs; with a calendar ``intervalType`` (WEEK = Sunday–Saturday,
WEEK_ISO = Monday–Sunday, MONTH, QUARTER) it ends where that calendar period ends in ``timeZone``, and
each later bucket is one whole period; the last is clipped at endTs. A bucket's ts is its middle.
Pure functions, no store."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tbspark import settings

CALENDAR_TYPES = ("WEEK", "WEEK_ISO", "MONTH", "QUARTER")
INTERVAL_TYPES = ("MILLISECONDS", *CALENDAR_TYPES)
# ThingsBoard's AggregationParams.TZ_LINKS: short ids Java's ZoneId.of accepts only through this map.
_TZ_LINKS = {"EST": "America/New_York", "GMT+0": "GMT", "GMT-0": "GMT", "HST": "US/Hawaii",
             "MST": "America/Phoenix", "ROC": "Asia/Taipei"}
_OFFSET = re.compile(r"^(?:UTC|GMT|UT)?([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?$")


@functools.lru_cache(maxsize=1)
def system_zone() -> tzinfo:
    """The server's zone, which ThingsBoard uses when timeZone is absent or unknown (read once)."""
    name = settings.system_time_zone()
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh)
    except OSError:
        return timezone.utc


def zone(name: str | None) -> tzinfo:
    """``timeZone`` as Java's ZoneId.of reads it (region ids, Z/UTC/GMT, ±hh[:mm], UTC±hh:mm);
    absent or unknown → the server's zone, as ThingsBoard falls back (it logs a warning)."""
    if not name:
        return system_zone()
    name = _TZ_LINKS.get(name, name)
    if name in ("Z", "UTC", "GMT", "UT"):
        return timezone.utc
    m = _OFFSET.match(name)
    if m:
        sign, hh, mm, ss = m.group(1), int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0)
        if hh <= 18 and mm < 60 and ss < 60:
            delta = timedelta(hours=hh, minutes=mm, seconds=ss)
            return timezone(-delta if sign == "-" else delta)
        return system_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return system_zone()


def _epoch_ms(local: datetime, tz: tzinfo) -> int:
    return int(local.replace(tzinfo=tz).timestamp() * 1000)


def period_start(ts_ms: int, interval_type: str, tz: tzinfo) -> int:
    """Start of the calendar period holding ``ts_ms`` (local midnight of its first day)."""
    day = datetime.fromtimestamp(ts_ms / 1000, tz).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if interval_type == "WEEK":
        day -= timedelta(days=(day.weekday() + 1) % 7)  # back to Sunday
    elif interval_type == "WEEK_ISO":
        day -= timedelta(days=day.weekday())  # back to Monday
    elif interval_type == "MONTH":
        day = day.replace(day=1)
    elif interval_type == "QUARTER":
        day = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    else:
        raise ValueError(f"not a calendar interval type: {interval_type}")
    return _epoch_ms(day, tz)


def period_end(ts_ms: int, interval_type: str, tz: tzinfo) -> int:
    """ThingsBoard's TimeUtils.calculateIntervalEnd: where the period holding ``ts_ms`` ends."""
    start = datetime.fromtimestamp(period_start(ts_ms, interval_type, tz) / 1000, tz).replace(tzinfo=None)
    if interval_type in ("WEEK", "WEEK_ISO"):
        end = start + timedelta(days=7)
    else:
        months = 1 if interval_type == "MONTH" else 3
        m = start.month - 1 + months
        end = start.replace(year=start.year + m // 12, month=m % 12 + 1)
    return _epoch_ms(end, tz)


def calendar_buckets(start_ms: int, end_ms: int, interval_type: str, tz: tzinfo,
                     first_data_ms: int | None = None, last_data_ms: int | None = None):
    """``(lo, hi)`` buckets over ``[start_ms, end_ms)``. With the range of the data known, periods
    before the first point and after the last one are skipped (they would be empty, and ThingsBoard
    leaves empty buckets out), so the work follows the data, not the span asked for."""
    end = max(start_ms + 1, end_ms)
    lo = start_ms
    hi = min(period_end(lo, interval_type, tz), end)
    if first_data_ms is not None and first_data_ms >= hi:
        lo = period_start(first_data_ms, interval_type, tz)
        hi = min(period_end(lo, interval_type, tz), end)
    while lo < end:
        if last_data_ms is not None and lo > last_data_ms:
            return
        yield lo, hi
        lo = hi
        hi = min(period_end(lo, interval_type, tz), end)
