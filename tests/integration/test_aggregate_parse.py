"""The Spark side of parsing on real Spark (batch DataFrames shaped like Kafka rows, no broker):
the window column agrees with windows.window_start_ms, lateness with windows.is_late, and every
kind of bad record gets its reason."""

from __future__ import annotations

import datetime as dt

import pytest

from tbspark.aggregate.parse import ParseSpec, parse
from tbspark.aggregate.windows import is_late, window_start_ms

pytestmark = [pytest.mark.spark]

KAFKA_TS = dt.datetime(2023, 11, 14, 22, 13, 25, tzinfo=dt.timezone.utc)  # 1_700_000_005_000 ms


def _kafka_rows(spark, values: list[str | None]):
    rows = [(None, v.encode() if v is not None else None, 0, i, KAFKA_TS) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "key binary, value binary, partition int, offset long, timestamp timestamp")


def test_window_and_lateness_columns_agree_with_the_pure_functions(spark):
    stamps = [0, 1, 9_999, 10_000, 1_700_000_009_999, 1_700_000_010_000, 1_700_000_019_500]
    watermark = 1_700_000_010_000
    values = ['{"geoZone":"Z","windSpeed":1,"ts":"%d"}' % t for t in stamps]
    got = parse(_kafka_rows(spark, values), ParseSpec(), watermark, watermark).orderBy("offset").collect()
    assert [r["win"] for r in got] == [window_start_ms(t, 10_000) for t in stamps]
    assert [r["reason"] is not None for r in got] == [is_late(t, 10_000, watermark) for t in stamps]


def test_each_bad_record_gets_its_reason_and_good_spellings_parse(spark):
    values = [
        '{"geoZone":"Zone A","windSpeed":"33","ts":"1700000001000"}',
        '{"geoZone":"Zone A","windSpeed":33.5,"ts":1700000001000}',
        '{"geoZone":"Zone A","windSpeed":7}',                       # no ts: Kafka timestamp
        '{"geoZone":"Zone A","windSpeed":7,"ts":"yesterday"}',      # unreadable ts: Kafka timestamp
        "{not json", "[1,2]", None, '{"windSpeed":1}', '{"geoZone":"  ","windSpeed":1}',
        '{"geoZone":"Zone A"}', '{"geoZone":"Zone A","windSpeed":"NaN"}',
        '{"geoZone":"Zone A","windSpeed":{"a":1}}',
        '{"geoZone":"Zone A","windSpeed":1,"ts":"1700003600001"}',   # clock an hour ahead
        '{"geoZone":"Zone A","windSpeed":1,"ts":"1700003600000"}',   # just within the hour
    ]
    now_ms = 1_700_000_000_000
    got = parse(_kafka_rows(spark, values), ParseSpec(), None, now_ms).orderBy("offset").collect()
    assert [(r["speed"], r["event_ms"]) for r in got[:4]] == [
        (33.0, 1_700_000_001_000), (33.5, 1_700_000_001_000),
        (7.0, 1_700_000_005_000), (7.0, 1_700_000_005_000)]
    assert [r["reason"] for r in got] == [
        None, None, None, None, "bad JSON", "bad JSON", "bad JSON", "missing geoZone",
        "empty geoZone", "missing windSpeed", "non-numeric windSpeed", "non-numeric windSpeed",
        "ts more than an hour ahead of the clock", None]
