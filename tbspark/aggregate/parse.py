"""Parsing of the forwarding chain's Kafka records ({"geoZone","windSpeed","ts"}) into typed columns,
as Spark expressions (no Python UDF: every record stays in the JVM), with a reason for each record
that cannot be used. The window and lateness formulas mirror ``windows.window_start_ms``/``is_late``.

A record becomes (zone, value, event time) only when each part is one ThingsBoard and the window
arithmetic can take: anything else is a dead letter with its reason, never a failed batch (a batch
that fails is replayed, fails again, and stops every zone's windows for good)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from tbspark.delivery import PROBE_ZONE

CORRUPT = "_corrupt_record"
TS_KEY = "ts"

# Reasons written to the dead-letter topic; ``{zone}``/``{value}`` become the scenario's key names.
BAD_JSON = "bad JSON"
MISSING_ZONE = "missing {zone}"
EMPTY_ZONE = "empty {zone}"
MISSING_VALUE = "missing {value}"
NON_NUMERIC = "non-numeric {value}"
ZONE_NOT_STRING = "{zone} not a string"
ZONE_TOO_LONG = "{zone} longer than 255 characters"
ZONE_CONTROL = "{zone} has control characters"
OUT_OF_RANGE = "{value} outside [{min:g}, {max:g}]"
BAD_TS = "ts not a time in epoch ms from 2000 to 3000"
LATE = "late: window already closed by the watermark"
FUTURE = "ts more than an hour ahead of the clock"
FUTURE_TOLERANCE_MS = 3_600_000  # one clock far ahead would otherwise drag the watermark along

# ThingsBoard's limit for entity names, counted as Java does (UTF-16 units): a longer zone is refused
# by the asset lookup (and a 500 KB one overflows the request line of every server).
NAME_MAX = 255
# A ts outside these is no epoch-ms time (seconds or microseconds, a sign error, a 0): taking it
# would open windows at -10000 or in the year 50,000 and move the watermark there.
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 32_503_680_000_000  # 3000-01-01
# The zone text Spark's from_json makes of a non-string JSON value starts with one of these (an
# object, an array, a number, true/false, or a quoted "NaN"/"Infinity"): only such zones pay for
# the second look at the record's JSON that tells a string "123" from the number 123.
MAYBE_NOT_STRING = '-0123456789{["tf'

_CONTROL = "\\p{Cc}"  # Java regex: U+0000-U+001F and U+007F-U+009F, as scenario.check_name
_BLANK = " \t\r\n\f\u000b"
# The dead letter keeps this much of the original record: JSON escaping can make a control
# character six bytes, and the letter must stay below the broker's 1 MB message limit.
DLQ_VALUE_CHARS = 100_000
DLQ_KEY_BYTES = 4_096


@dataclass(frozen=True)
class ParseSpec:
    zone_key: str = "geoZone"
    value_key: str = "windSpeed"
    window_ms: int = 10_000
    event_time: bool = True  # False: the tutorial's processing time (the batch's wall clock)
    value_min: float = -1e9  # the scenario's aggregation.value_range
    value_max: float = 1e9

    def reason_texts(self) -> dict[str, str]:
        names = {"zone": self.zone_key, "value": self.value_key, "min": self.value_min,
                 "max": self.value_max}
        return {"bad_json": BAD_JSON, "missing_zone": MISSING_ZONE.format(**names),
                "zone_not_string": ZONE_NOT_STRING.format(**names),
                "empty_zone": EMPTY_ZONE.format(**names), "zone_too_long": ZONE_TOO_LONG.format(**names),
                "zone_control": ZONE_CONTROL.format(**names), "missing_value": MISSING_VALUE.format(**names),
                "non_numeric": NON_NUMERIC.format(**names), "out_of_range": OUT_OF_RANGE.format(**names),
                "bad_ts": BAD_TS, "late": LATE, "future": FUTURE}


def window_start_col(event_ms: Column, window_ms: int) -> Column:
    """Spark twin of ``windows.window_start_ms`` (pmod floors like Python's %)."""
    return event_ms - F.pmod(event_ms, F.lit(window_ms))


def parse(df: DataFrame, spec: ParseSpec, watermark_ms: int | None, now_ms: int | None,
          zone_types: bool = True) -> DataFrame:
    """Kafka source rows (key, value, partition, offset, timestamp) → the same rows plus
    ``zone``, ``speed`` (double), ``event_ms``, ``win`` (window start ms) and ``reason`` (null = usable).

    Event time is the record's ``ts`` (ms, as a number or a numeric string; one outside
    MIN_TS_MS..MAX_TS_MS or unreadable is a dead letter), else (no ``ts``, or null) the Kafka record
    timestamp. ``watermark_ms`` is the watermark from earlier batches: records of windows it has
    closed get the reason ``late``. ``now_ms`` None (``parse_stable``): no future check, and in
    processing-time mode event time 0. ``zone_types`` False: no check that the zone is a JSON
    string (``parse_stable``; see ``classify_groups``)."""
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
    ts_ms = j[TS_KEY].try_cast("double")
    if spec.event_time:
        # a ts given (not null) must be a plausible time; only a record without one takes Kafka's
        bad_ts = j[TS_KEY].isNotNull() & ~F.coalesce(ts_ms.between(MIN_TS_MS, MAX_TS_MS), F.lit(False))
        event_ms = F.when(bad_ts, F.lit(None)).otherwise(
            F.coalesce(ts_ms.try_cast("bigint"), F.unix_millis(F.col("timestamp"))))
    else:
        bad_ts = F.lit(False)
        event_ms = F.lit(int(now_ms or 0)).cast("bigint")
    typed = base.select("key", "value", "partition", "offset", "timestamp", "_j",
                        zone.alias("zone"), raw_value.isNull().alias("_no_value"),
                        speed.alias("speed"), event_ms.alias("event_ms"), bad_ts.alias("_bad_ts"))
    s = F.col("speed")
    finite = s.isNotNull() & ~F.isnan(s) & (F.abs(s) != F.lit(float("inf")))
    z = F.col("zone")
    r = spec.reason_texts()
    reason = (F.when(F.col("value").isNull() | j.isNull() | j[CORRUPT].isNotNull(), F.lit(r["bad_json"]))
              .when(z.isNull(), F.lit(r["missing_zone"]))
              .when(F.lit(zone_types) & F.ascii(z).isin(*map(ord, MAYBE_NOT_STRING))
                    & ~_is_json_string(spec.zone_key), F.lit(r["zone_not_string"]))
              # all whitespace, not only spaces: ThingsBoard refuses a blank asset name (Java isBlank)
              .when(F.btrim(z, F.lit(_BLANK)) == "", F.lit(r["empty_zone"]))
              # Java counts UTF-16 units (a character outside the BMP counts twice); a zone of at
              # most NAME_MAX bytes has at most NAME_MAX of them, so most zones cost one O(1) test
              .when((F.octet_length(z) > NAME_MAX) & ((F.length(z) > NAME_MAX)
                    | (F.octet_length(F.encode(z, "UTF-16BE")) > 2 * NAME_MAX)), F.lit(r["zone_too_long"]))
              .when(z.rlike(_CONTROL), F.lit(r["zone_control"]))
              .when(F.col("_no_value"), F.lit(r["missing_value"]))
              .when(~finite, F.lit(r["non_numeric"]))
              .when(~s.between(float(spec.value_min), float(spec.value_max)), F.lit(r["out_of_range"]))
              .when(F.col("_bad_ts"), F.lit(r["bad_ts"])))
    if now_ms is not None:
        reason = reason.when(F.col("event_ms") > F.lit(int(now_ms) + FUTURE_TOLERANCE_MS),
                             F.lit(r["future"]))
    if spec.event_time and watermark_ms is not None:
        reason = reason.when(F.col("win") + F.lit(spec.window_ms) <= F.lit(int(watermark_ms)),
                             F.lit(r["late"]))
    # `tbspark provision`'s delivery probe (tbspark/delivery.py) is not data: dropped, not dead-lettered.
    not_probe = ~F.col("zone").eqNullSafe(F.lit(PROBE_ZONE))
    return (typed.filter(not_probe)
                 .withColumn("win", window_start_col(F.col("event_ms"), spec.window_ms))
                 .withColumn("reason", reason)
                 .drop("_j", "_no_value", "_bad_ts"))


def _is_json_string(key: str) -> Column:
    """Whether the record's field ``key`` is a JSON string. A second parse of the record (as a
    variant), so only asked of zones whose text could have come from another JSON type; a record
    the variant parser refuses (duplicate keys, a lone surrogate) counts as not a string."""
    path = "$['" + key.replace("'", "") + "']"  # scenario.py refuses a ' in zone_key
    field_type = F.schema_of_variant(F.try_variant_get(F.try_parse_json(F.col("value").cast("string")),
                                                       path, "variant"))
    return F.coalesce(field_type == "STRING", F.lit(False))


def parse_stable(df: DataFrame, spec: ParseSpec) -> DataFrame:
    """``parse`` without the two values that change every batch (the clock, the watermark): the
    reasons a record has in itself (bad JSON … non-numeric), and, in processing-time mode, window 0
    (the driver puts the batch's window in). Spark inlines numeric literals into its generated Java,
    so a plan with this batch's clock in it is new code, compiled again (Janino) in every batch; this
    plan's code is the same from batch to batch and comes from Spark's code cache. The clock- and
    watermark-dependent reasons (future, late) are decided on the driver per (zone, window) group:
    see ``classify_groups``. Nor does it check that a zone is a JSON string: the variant parse that
    check needs made every record's parse ~15 % dearer even where it is never evaluated, so the
    driver sends a batch with a zone that could be a number, object … through ``parse``."""
    return parse(df, spec, None, None, zone_types=False)


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
    text = F.col("value").cast("string")
    # cut, so that a letter is never refused by the broker (that would fail the batch for good)
    body = F.to_json(F.struct(F.col("reason"), F.substring(text, 1, DLQ_VALUE_CHARS).alias("value"),
                              F.lit(topic).alias("topic"), F.col("partition"), F.col("offset"),
                              F.unix_millis(F.col("timestamp")).alias("timestamp"),
                              F.when(F.length(text) > DLQ_VALUE_CHARS, F.length(text))
                               .alias("value_chars")))
    return bad.select(F.substring(F.col("key"), 1, DLQ_KEY_BYTES).alias("key"), body.alias("value"))


@dataclass
class BatchGroups:
    """One batch's ``batch_partials`` rows, classified: usable (zone, window) aggregates, counts of
    rejected records per reason, the latest usable event time, and the records in all."""

    partials: dict = field(default_factory=dict)  # (zone, window start ms) -> WindowAgg
    rejected: dict = field(default_factory=dict)  # reason -> records
    max_event_ms: int | None = None
    total: int = 0


def classify_groups(rows, spec: ParseSpec, watermark_ms: int | None, now_ms: int,
                    exact: bool = False) -> BatchGroups | None:
    """Decide on the driver what ``parse`` with the clock and the watermark would have decided per
    record, from ``parse_stable``'s groups. Lateness is a function of the window alone, so a group is
    late or not as a whole; a group is "future" as a whole when its earliest record is over the
    tolerance, and not at all when its latest is within it. Returns None when a group straddles the
    tolerance (records about an hour ahead, in one 10 s window, on both sides of it), or, unless
    ``exact`` (the rows come from ``parse``), when a usable zone's text could have been a JSON
    number, object, list or boolean (it starts with one of MAYBE_NOT_STRING): then only the
    per-record parse can tell, and the caller runs it. (A record refused here for another reason
    keeps that reason in the counts; its dead letter, written by ``parse``, may name the zone.)"""
    from tbspark.aggregate.windows import WindowAgg, window_start_ms

    texts = spec.reason_texts()
    out = BatchGroups()
    limit = now_ms + FUTURE_TOLERANCE_MS
    for r in rows:
        n = r["n"]
        out.total += n
        reason = r["reason"]
        if reason is None:
            if not exact and r["zone"][:1] in MAYBE_NOT_STRING:
                return None
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
