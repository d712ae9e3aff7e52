"""Parsing of the forwarding chain's Kafka records ({"geoZone","windSpeed","ts"}) into typed columns,
as Spark expressions (no Python UDF: every record stays in the JVM), with a reason for each record
that cannot be used. The window and lateness formulas mirror ``windows.window_start_ms``/``is_late``."""

from __future__ import annotations

from dataclasses import dataclass, field

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
FUTURE = "ts more than an hour ahead of the clock"
FUTURE_TOLERANCE_MS = 3_600_000  # one clock far ahead would otherwise drag the watermark along


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
                "non_numeric": NON_NUMERIC.format(**names), "late": LATE, "future": FUTURE}


def window_start_col(event_ms: Column, window_ms: int) -> Column:
    """Spark twin of ``windows.window_start_ms`` (pmod floors like Python's %)."""
    return event_ms - F.pmod(event_ms, F.lit(window_ms))


def parse(df: DataFrame, spec: ParseSpec, watermark_ms: int | None, now_ms: int | None) -> DataFrame:
    """Kafka source rows (key, value, partition, offset, timestamp) → the same rows plus
    ``zone``, ``speed`` (double), ``event_ms``, ``win`` (window start ms) and ``reason`` (null = usable).

    Event time is the record's ``ts`` (ms, as a number or a numeric string), else the Kafka record
    timestamp. ``watermark_ms`` is the watermark from earlier batches: records of windows it has
    closed get the reason ``late``. ``now_ms`` None (``parse_stable``): no future check, and in
    processing-time mode event time 0."""
    schema = T.StructType([T.StructField(spec.zone_key, T.StringType()),
                           T.StructField(spec.value_key, T.StringType()),
                           T.StructField(TS_KEY, T.StringType()),
                           T.StructField(CORRUPT, T.StringType())])
    # StringType fields keep a JSON number's text, so 42 and "42" both arrive as "42".
    parsed_json = F.from_json(F.col("value").cast("string"), schema,
                              {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
    # Parse once into a column, then read the fields from it (not from_json once per use).
    base = df.select("key", "value", "partition", "offset", "timestamp", parsed_json.alias("_j"))
    j = F.col("_j")
    zone = j[spec.zone_key]
    raw_value = j[spec.value_key]
    speed = raw_value.try_cast("double")
    if spec.event_time:
        record_ts = j[TS_KEY].try_cast("double").try_cast("bigint")
        event_ms = F.coalesce(record_ts, F.unix_millis(F.col("timestamp")))
    else:
        event_ms = F.lit(int(now_ms or 0)).cast("bigint")
    typed = base.select("key", "value", "partition", "offset", "timestamp", "_j",
                        zone.alias("zone"), raw_value.isNull().alias("_no_value"),
                        speed.alias("speed"), event_ms.alias("event_ms"))
    s = F.col("speed")
    finite = s.isNotNull() & ~F.isnan(s) & (F.abs(s) != F.lit(float("inf")))
    r = spec.reason_texts()
    reason = (F.when(F.col("value").isNull() | j.isNull() | j[CORRUPT].isNotNull(), F.lit(r["bad_json"]))
              .when(F.col("zone").isNull(), F.lit(r["missing_zone"]))
              # all whitespace, not only spaces: ThingsBoard refuses a blank asset name (Java isBlank)
              .when(F.trim(F.col("zone"), F.lit(" \t\r\n\f\u000b")) == "", F.lit(r["empty_zone"]))
              .when(F.col("_no_value"), F.lit(r["missing_value"]))
              .when(~finite, F.lit(r["non_numeric"])))
    if now_ms is not None:
        reason = reason.when(F.col("event_ms") > F.lit(int(now_ms) + FUTURE_TOLERANCE_MS),
                             F.lit(r["future"]))
    if spec.event_time and watermark_ms is not None:
        reason = reason.when(F.col("win") + F.lit(spec.window_ms) <= F.lit(int(watermark_ms)),
                             F.lit(r["late"]))
    return (typed.withColumn("win", window_start_col(F.col("event_ms"), spec.window_ms))
                 .withColumn("reason", reason)
                 .drop("_j", "_no_value"))


def parse_stable(df: DataFrame, spec: ParseSpec) -> DataFrame:
    """``parse`` without the two values that change every batch (the clock, the watermark): the
    reasons a record has in itself (bad JSON … non-numeric), and, in processing-time mode, window 0
    (the driver puts the batch's window in). Spark inlines numeric literals into its generated Java,
    so a plan with this batch's clock in it is new code, compiled again (Janino) in every batch; this
    plan's code is the same from batch to batch and comes from Spark's code cache. The clock- and
    watermark-dependent reasons (future, late) are decided on the driver per (zone, window) group:
    see ``classify_groups``."""
    return parse(df, spec, None, None)


def batch_partials(parsed: DataFrame) -> DataFrame:
    """One row per (zone, window) of usable records, and one per dead-letter reason (zone null):
    the whole batch in a single pass, small enough to collect on the driver."""
    ok = F.col("reason").isNull()
    # The value aggregates of a dead-letter row are not read (only its count), so they need no
    # CASE WHEN of their own: fewer expressions to plan and generate code for in every micro-batch.
    return (parsed.groupBy(F.when(ok, F.col("zone")).alias("zone"),
                           F.when(ok, F.col("win")).alias("win"),
                           F.col("reason"))
                  .agg(F.count(F.lit(1)).alias("n"),
                       F.sum("speed").alias("sum"),
                       F.min("speed").alias("min"),
                       F.max("speed").alias("max"),
                       F.min("event_ms").alias("min_event_ms"),
                       F.max("event_ms").alias("max_event_ms")))


def dead_letters(parsed: DataFrame, topic: str) -> DataFrame:
    """The rejected records as Kafka rows for ``<topic>.dlq``: key kept, value = JSON with the reason,
    the original text and where it came from."""
    bad = parsed.filter(F.col("reason").isNotNull())
    body = F.to_json(F.struct(F.col("reason"), F.col("value").cast("string").alias("value"),
                              F.lit(topic).alias("topic"), F.col("partition"), F.col("offset"),
                              F.unix_millis(F.col("timestamp")).alias("timestamp")))
    return bad.select(F.col("key"), body.alias("value"))


@dataclass
class BatchGroups:
    """One batch's ``batch_partials`` rows, classified: usable (zone, window) aggregates, counts of
    rejected records per reason, the latest usable event time, and the records in all."""

    partials: dict = field(default_factory=dict)  # (zone, window start ms) -> WindowAgg
    rejected: dict = field(default_factory=dict)  # reason -> records
    max_event_ms: int | None = None
    total: int = 0


def classify_groups(rows, spec: ParseSpec, watermark_ms: int | None, now_ms: int) -> BatchGroups | None:
    """Decide on the driver what ``parse`` with the clock and the watermark would have decided per
    record, from ``parse_stable``'s groups. Lateness is a function of the window alone, so a group is
    late or not as a whole; a group is "future" as a whole when its earliest record is over the
    tolerance, and not at all when its latest is within it. Returns None when a group straddles the
    tolerance (records about an hour ahead, in one 10 s window, on both sides of it): then only the
    per-record parse can tell, and the caller runs it."""
    from tbspark.aggregate.windows import WindowAgg, window_start_ms

    texts = spec.reason_texts()
    out = BatchGroups()
    limit = now_ms + FUTURE_TOLERANCE_MS
    for r in rows:
        n = r["n"]
        out.total += n
        reason = r["reason"]
        if reason is None:
            if spec.event_time:
                win, max_event = int(r["win"]), r["max_event_ms"]
                if r["min_event_ms"] > limit:
                    reason = texts["future"]
                elif max_event > limit:
                    return None
                elif watermark_ms is not None and win + spec.window_ms <= watermark_ms:
                    reason = texts["late"]
            else:  # processing time: every record of the batch is in the window of its clock
                win, max_event = window_start_ms(now_ms, spec.window_ms), now_ms
        if reason is not None:
            out.rejected[reason] = out.rejected.get(reason, 0) + n
            continue
        key = (r["zone"], win)
        agg = WindowAgg(n, r["sum"], r["min"], r["max"])
        out.partials[key] = out.partials[key].merge(agg) if key in out.partials else agg
        out.max_event_ms = max_event if out.max_event_ms is None else max(out.max_event_ms, max_event)
    return out
