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
    stamps = [946_684_800_000, 946_684_800_001, 946_684_809_999, 946_684_810_000, 1_700_000_009_999,
              1_700_000_010_000, 1_700_000_019_500]
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
        '{"geoZone":"Zone A","windSpeed":7,"ts":null}',            # null ts: Kafka timestamp
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


def _per_record(rows, spec, window_ms=10_000):
    """What the job made of the per-record parse: partials per (zone, window), records per reason."""
    from tbspark.aggregate.windows import WindowAgg

    partials, rejected = {}, {}
    for r in rows:
        if r["reason"] is not None:
            rejected[r["reason"]] = rejected.get(r["reason"], 0) + 1
            continue
        one = WindowAgg.of(r["speed"])
        key = (r["zone"], r["win"])
        partials[key] = partials[key].merge(one) if key in partials else one
    return partials, rejected


def test_driver_side_late_and_future_decisions_equal_the_per_record_parse(spark):
    """The job's one Spark job per batch groups without the clock and the watermark and decides
    lateness and future timestamps per group on the driver: the outcome must be the per-record
    one, and a window straddling the future limit must send the job back to the per-record parse."""
    from tbspark.aggregate.parse import batch_partials, classify_groups, parse_stable

    spec = ParseSpec()
    now_ms = 1_700_000_000_000
    watermark = 1_699_999_990_000  # closes the windows ending at or before it
    limit = now_ms + 3_600_000
    stamps = [1_699_999_975_000, 1_699_999_985_000, 1_699_999_989_999, 1_699_999_990_000,
              1_699_999_999_999, now_ms, limit - 5_000, limit + 10_000, limit + 19_999]
    values = ['{"geoZone":"Z%d","windSpeed":%d,"ts":"%d"}' % (i % 2, i, t) for i, t in enumerate(stamps)]
    values += ["{not json", '{"geoZone":"Z1"}', '{"geoZone":"Z1","windSpeed":7}']  # no ts: Kafka's
    df = _kafka_rows(spark, values)
    groups = classify_groups(batch_partials(parse_stable(df, spec)).collect(), spec, watermark, now_ms)
    want_partials, want_rejected = _per_record(parse(df, spec, watermark, now_ms).collect(), spec)
    assert groups.partials == want_partials
    assert groups.rejected == want_rejected
    assert want_rejected == {"late: window already closed by the watermark": 3, "bad JSON": 1,
                             "missing windSpeed": 1, "ts more than an hour ahead of the clock": 2}
    assert groups.total == len(values)
    assert groups.max_event_ms == limit - 5_000

    straddling = values + ['{"geoZone":"Z0","windSpeed":1,"ts":"%d"}' % t for t in (limit, limit + 1)]
    df2 = _kafka_rows(spark, straddling)
    assert classify_groups(batch_partials(parse_stable(df2, spec)).collect(), spec, watermark, now_ms) is None
    # the job's fallback: the per-record parse's groups classify without ambiguity
    exact = classify_groups(batch_partials(parse(df2, spec, watermark, now_ms)).collect(), spec,
                            watermark, now_ms)
    assert exact.rejected["ts more than an hour ahead of the clock"] == 3


def test_priming_runs_usable_records_through_the_batch_query_once_per_jvm(spark, monkeypatch):
    """The job primes the JIT with synthetic records before its query starts: they must take the
    usable path (zone, value, ts with the scenario's key names), not the dead-letter one, and only
    once per JVM."""
    from tbspark.aggregate import job

    monkeypatch.setattr(job, "_PRIMED", set())
    spec = ParseSpec(zone_key="region", value_key="gust")
    assert job.prime(spark, spec, records=3_000, rounds=2) == 6_000
    assert job.prime(spark, spec, records=3_000, rounds=2) == 0


POISON = [  # (record, the reason it must get); None: usable
    ('{"geoZone":"Zone A","windSpeed":1,"ts":1700000001000}', None),
    ('{"geoZone":"123","windSpeed":1,"ts":1700000001000}', None),          # a string of digits is a name
    ('{"geoZone":"true north","windSpeed":1,"ts":1700000001000}', None),
    ('{"geoZone":"' + "\U0001F32C" * 127 + '","windSpeed":1,"ts":1700000001000}', None),  # 254 UTF-16
    ('{"geoZone":"' + "z" * 255 + '","windSpeed":1,"ts":1700000001000}', None),
    ('{"geoZone":"Zone A","windSpeed":1e9,"ts":1700000001000}', None),     # the range's bound
    ('{"geoZone":{"a":1},"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":123,"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":-1.5,"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":[1],"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":true,"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":1e400,"windSpeed":1,"ts":1700000001000}', "geoZone not a string"),
    ('{"geoZone":"' + "z" * 256 + '","windSpeed":1,"ts":1700000001000}', "geoZone longer than 255 characters"),
    ('{"geoZone":"' + "z" * 500_000 + '","windSpeed":1,"ts":1700000001000}', "geoZone longer than 255 characters"),
    ('{"geoZone":"' + "\U0001F32C" * 128 + '","windSpeed":1,"ts":1700000001000}',
     "geoZone longer than 255 characters"),
    ('{"geoZone":"Zone\\u0000A","windSpeed":1,"ts":1700000001000}', "geoZone has control characters"),
    ('{"geoZone":"Zone A\\u0085","windSpeed":1,"ts":1700000001000}', "geoZone has control characters"),
    ('{"geoZone":" \\t ","windSpeed":1,"ts":1700000001000}', "empty geoZone"),
    ('{"geoZone":"Zone A","windSpeed":1e308,"ts":1700000001000}', "windSpeed outside [-1e+09, 1e+09]"),
    ('{"geoZone":"Zone A","windSpeed":"-1000000001","ts":1700000001000}', "windSpeed outside [-1e+09, 1e+09]"),
    ('{"geoZone":"Zone A","windSpeed":NaN,"ts":1700000001000}', "non-numeric windSpeed"),
    ('{"geoZone":"Zone A","windSpeed":"Infinity","ts":1700000001000}', "non-numeric windSpeed"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":"abc"}', "ts not a time in epoch ms from 2000 to 3000"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":-1}', "ts not a time in epoch ms from 2000 to 3000"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":1700000001}', "ts not a time in epoch ms from 2000 to 3000"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":1e300}', "ts not a time in epoch ms from 2000 to 3000"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":{"a":1}}', "ts not a time in epoch ms from 2000 to 3000"),
    ('{"geoZone":"Zone A","windSpeed":1,"ts":true}', "ts not a time in epoch ms from 2000 to 3000"),
]


def test_poison_records_get_their_reason_and_good_ones_stay_usable(spark):
    """Every record that cannot become (zone, value, event time) as ThingsBoard and the windows can
    take it is a dead letter with its reason; the odd-but-valid ones are kept."""
    values = [v for v, _ in POISON]
    got = parse(_kafka_rows(spark, values), ParseSpec(), None, 1_700_000_000_000).orderBy("offset").collect()
    assert [(r["offset"], r["reason"]) for r in got] == [(i, want) for i, (_, want) in enumerate(POISON)]
    usable = [r for r in got if r["reason"] is None]
    assert {r["event_ms"] for r in usable} == {1_700_000_001_000}
    assert usable[1]["zone"] == "123" and usable[3]["zone"] == "\U0001F32C" * 127


def test_a_zone_that_may_be_no_string_sends_the_batch_through_the_full_parse(spark):
    """The batch query does not tell the number 123 from the string "123" (that check costs every
    record): the driver must see such a zone and fall back to ``parse``, which does."""
    from tbspark.aggregate.parse import batch_partials, classify_groups, parse_stable

    spec, now_ms = ParseSpec(), 1_700_000_000_000
    plain = ['{"geoZone":"Zone A","windSpeed":1,"ts":1700000001000}']
    rows = batch_partials(parse_stable(_kafka_rows(spark, plain), spec)).collect()
    assert classify_groups(rows, spec, None, now_ms) is not None
    for zone in ('123', '"123"', '{"a":1}', 'true'):
        df = _kafka_rows(spark, plain + ['{"geoZone":%s,"windSpeed":1,"ts":1700000001000}' % zone])
        assert classify_groups(batch_partials(parse_stable(df, spec)).collect(), spec, None, now_ms) is None
        exact = classify_groups(batch_partials(parse(df, spec, None, now_ms)).collect(), spec, None, now_ms,
                                exact=True)
        want_zones = {"Zone A", "123"} if zone == '"123"' else {"Zone A"}
        assert {z for z, _ in exact.partials} == want_zones
        assert exact.rejected == ({} if zone == '"123"' else {"geoZone not a string": 1})


def test_value_range_and_ts_in_processing_time(spark):
    """The scenario's value range is the bound; in processing-time mode ts is not read at all."""
    values = ['{"geoZone":"Z","windSpeed":%s,"ts":"abc"}' % v for v in ("0", "120", "120.5", "-0.1")]
    spec = ParseSpec(value_min=0, value_max=120, event_time=False)
    got = parse(_kafka_rows(spark, values), spec, None, 1_700_000_000_000).orderBy("offset").collect()
    assert [r["reason"] for r in got] == [None, None, "windSpeed outside [0, 120]", "windSpeed outside [0, 120]"]


def test_dead_letters_of_huge_records_stay_below_the_broker_limit(spark):
    from tbspark.aggregate.parse import DLQ_VALUE_CHARS, dead_letters

    huge = '{"geoZone":"' + "\\u0001" * 150_000 + '","windSpeed":1}'
    rows = dead_letters(parse(_kafka_rows(spark, [huge]), ParseSpec(), None, None), "t").collect()
    import json

    (letter,) = [json.loads(r["value"]) for r in rows]
    assert letter["reason"] == "geoZone longer than 255 characters"
    assert letter["value"] == huge[:DLQ_VALUE_CHARS] and letter["value_chars"] == len(huge)
    assert len(rows[0]["value"]) < 1_000_000


def test_the_delivery_probe_is_dropped_not_dead_lettered(spark):
    """`tbspark provision` sends one probe record through the chain (tbspark/delivery.py): it must not
    become a zone's window, nor a dead letter a user would have to explain."""
    from tbspark.delivery import PROBE_KEY, PROBE_ZONE

    values = ['{"geoZone":"Zone A","windSpeed":30,"ts":"1700000001000"}',
              '{"geoZone":"%s","windSpeed":0,"%s":"ab12","ts":"1700000001000"}' % (PROBE_ZONE, PROBE_KEY),
              '{"geoZone":"Zone B","windSpeed":40,"ts":"1700000002000"}']
    got = parse(_kafka_rows(spark, values), ParseSpec(), None, 1_700_000_000_000).orderBy("offset").collect()
    assert [(r["zone"], r["reason"]) for r in got] == [("Zone A", None), ("Zone B", None)]
