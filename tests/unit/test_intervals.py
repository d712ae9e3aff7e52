"""Calendar aggregation buckets (platform/store/intervals.py) as ThingsBoard's TimeUtils cuts them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from tbspark.platform.store import intervals

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args, tz=BERLIN) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_week_starts_sunday_and_week_iso_monday_in_the_zone():
    wed = ms(2026, 3, 18, 15, 30)  # a Wednesday afternoon in Berlin
    assert intervals.period_start(wed, "WEEK", BERLIN) == ms(2026, 3, 15)       # Sunday 00:00 Berlin
    assert intervals.period_end(wed, "WEEK", BERLIN) == ms(2026, 3, 22)
    assert intervals.period_start(wed, "WEEK_ISO", BERLIN) == ms(2026, 3, 16)   # Monday 00:00 Berlin
    assert intervals.period_end(wed, "WEEK_ISO", BERLIN) == ms(2026, 3, 23)
    # Across the spring DST change (29 March 2026): the week is 7 local days, 167 hours.
    assert intervals.period_end(ms(2026, 3, 25), "WEEK_ISO", BERLIN) - ms(2026, 3, 23) == 167 * 3600_000


def test_month_and_quarter_follow_the_calendar():
    t = ms(2026, 11, 30, 23, 59)
    assert intervals.period_end(t, "MONTH", BERLIN) == ms(2026, 12, 1)
    assert intervals.period_end(ms(2026, 12, 5), "MONTH", BERLIN) == ms(2027, 1, 1)
    assert intervals.period_start(ms(2026, 8, 20), "QUARTER", BERLIN) == ms(2026, 7, 1)
    assert intervals.period_end(ms(2026, 8, 20), "QUARTER", BERLIN) == ms(2026, 10, 1)
    # The same instant is in another month in another zone: 23:30 UTC on 31 Jan is 1 Feb in Berlin.
    t = ms(2026, 1, 31, 23, 30, tz=timezone.utc)
    assert intervals.period_end(t, "MONTH", timezone.utc) == ms(2026, 2, 1, tz=timezone.utc)
    assert intervals.period_end(t, "MONTH", BERLIN) == ms(2026, 3, 1)


def test_first_bucket_starts_at_start_ts_and_the_last_is_clipped():
    start, end = ms(2026, 1, 10, 12), ms(2026, 3, 15)
    got = list(intervals.calendar_buckets(start, end, "MONTH", BERLIN))
    assert got == [(start, ms(2026, 2, 1)), (ms(2026, 2, 1), ms(2026, 3, 1)), (ms(2026, 3, 1), end)]
    # With the data's range known, empty periods before and after it are skipped.
    data = list(intervals.calendar_buckets(ms(2000, 1, 1), ms(2100, 1, 1), "MONTH", BERLIN,
                                           ms(2026, 5, 3), ms(2026, 6, 9)))
    assert data == [(ms(2026, 5, 1), ms(2026, 6, 1)), (ms(2026, 6, 1), ms(2026, 7, 1))]
    assert list(intervals.calendar_buckets(5, 5, "WEEK", BERLIN)) == [(5, 6)]  # endTs ≤ startTs: one ms


def test_time_zone_names_as_java_reads_them():
    assert intervals.zone("Europe/Berlin") == BERLIN
    assert intervals.zone("UTC") == timezone.utc
    assert intervals.zone("+02:00").utcoffset(None) == timedelta(hours=2)
    assert intervals.zone("GMT-05:30").utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert intervals.zone("EST") == ZoneInfo("America/New_York")  # ThingsBoard's short-id links
    system = intervals.system_zone()
    assert intervals.zone("Not/AZone") == system and intervals.zone(None) == system
