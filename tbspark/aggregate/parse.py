"""Parsing of the forwarding chain's Kafka records ({"geoZone","windSpeed","ts"}) into typed columns,
as Spark expressions (no Python UDF: every record stays in the JVM), with a reason for each record
that cannot be used. The window and lateness formulas mirror ``windows.window_start_ms``/``is_late``."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

CORRUPT = "_corrupt_record"
TS_KEY = "ts"

# Reasons written to the dead-letter topic; ``{zone}``/``{value}`` become the scenario's key names.
BAD_JSON = "bad JSON"
MISSING_ZONE = "missing {zone}"
EMPTY_ZONE = "empty {zone}"
MISSING_VALUE = "missing {value}"
NON_NUMERIC = "non-numeric {value}"
LATE = "late: window already closed by the watermark"


@dataclass(frozen=True)
class ParseSpec:
    zone_key: str = "geoZone"
    value_key: str = "windSpeed"
    window_ms: int = 10_000
    event_time: bool = True  # False: the tutorial's processing time (the batch's wall clock)

    def reason_texts(self) -> dict[str, str]:
        names = {"zone": self.zone_key, "value": self.value_key}
        return {"bad_json": BAD_JSON, "missing_zone": MISSING_ZONE.format(**names),
                "empty_zone": EMPTY_ZONE.format(**names), "missing_value": MISSING_VALUE.format(**names),
                "non_numeric": NON_NUMERIC.format(**names), "late": LATE}


def window_start_col(event_ms: Column, window_ms: int) -> Column:
    """Spark twin of ``windows.window_start_ms`` (pmod floors like Python's %)."""
    return event_ms - F.pmod(event_ms, F.lit(window_ms))


def parse(df: DataFrame, spec: ParseSpec, watermark_ms: int | None, now_ms: int) -> DataFrame:
    """Kafka source rows (key, value, partition, offset, timestamp) → the same rows plus
    ``zone``, ``speed`` (double), ``event_ms``, ``win`` (window start ms) and ``reason`` (null = usable).

    Event time is the record's ``ts`` (ms, as a number or a numeric string), else the Kafka record
    timestamp. ``watermark_ms`` is the watermark from earlier batches: records of windows it has
    closed get the reason ``late``."""
    schema = T.StructType([T.StructField(spec.zone_key, T.StringType()),
                           T.StructField(spec.value_key, T.StringType()),
                           T.StructField(TS_KEY, T.StringType()),
                           T.StructField(CORRUPT, T.StringType())])
    text = F.col("value").cast("string")
    # StringType fields keep a JSON number's text, so 42 and "42" both arrive as "42".
    j = F.from_json(text, schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
    zone = j[spec.zone_key]
    raw_value = j[spec.value_key]
    speed = raw_value.try_cast("double")
    finite = speed.isNotNull() & ~F.isnan(speed) & (F.abs(speed) != F.lit(float("inf")))
    if spec.event_time:
        record_ts = j[TS_KEY].try_cast("double").try_cast("bigint")
        event_ms = F.coalesce(record_ts, F.unix_millis(F.col("timestamp")))
    else:
        event_ms = F.lit(int(now_ms)).cast("bigint")
    r = spec.reason_texts()
    win = window_start_col(F.col("event_ms"), spec.window_ms)
    reason = (F.when(text.isNull() | j.isNull() | j[CORRUPT].isNotNull(), F.lit(r["bad_json"]))
              .when(zone.isNull(), F.lit(r["missing_zone"]))
              # all whitespace, not only spaces: ThingsBoard refuses a blank asset name (Java isBlank)
              .when(F.trim(zone, F.lit(" \t\r\n\f\u000b")) == "", F.lit(r["empty_zone"]))
              .when(raw_value.isNull(), F.lit(r["missing_value"]))
              .when(~finite, F.lit(r["non_numeric"])))
    if spec.event_time and watermark_ms is not None:
        reason = reason.when(F.col("win") + F.lit(spec.window_ms) <= F.lit(int(watermark_ms)),
                             F.lit(r["late"]))
    return (df.select("key", "value", "partition", "offset", "timestamp",
                      zone.alias("zone"), speed.alias("speed"), event_ms.alias("event_ms"))
              .withColumn("win", win)
              .withColumn("reason", reason))


def batch_partials(parsed: DataFrame) -> DataFrame:
    """One row per (zone, window) of usable records, and one per dead-letter reason (zone null):
    the whole batch in a single pass, small enough to collect on the driver."""
    ok = F.col("reason").isNull()
    return (parsed.groupBy(F.when(ok, F.col("zone")).alias("zone"),
                           F.when(ok, F.col("win")).alias("win"),
                           F.col("reason"))
                  .agg(F.count(F.lit(1)).alias("n"),
                       F.sum(F.when(ok, F.col("speed"))).alias("sum"),
                       F.min(F.when(ok, F.col("speed"))).alias("min"),
                       F.max(F.when(ok, F.col("speed"))).alias("max"),
                       F.max(F.when(ok, F.col("event_ms"))).alias("max_event_ms")))


def dead_letters(parsed: DataFrame, topic: str) -> DataFrame:
    """The rejected records as Kafka rows for ``<topic>.dlq``: key kept, value = JSON with the reason,
    the original text and where it came from."""
    bad = parsed.filter(F.col("reason").isNotNull())
    body = F.to_json(F.struct(F.col("reason"), F.col("value").cast("string").alias("value"),
                              F.lit(topic).alias("topic"), F.col("partition"), F.col("offset"),
                              F.unix_millis(F.col("timestamp")).alias("timestamp")))
    return bad.select(F.col("key"), body.alias("value"))
