"""The Spark job on real Kafka and real Spark (local[2]): exact windows per zone from known records,
numeric strings, Kafka-timestamp fallback, malformed and late records to the dead-letter topic,
and a resumed checkpoint. The sink here records what the job wrote; the ThingsBoard sinks are
tested in test_aggregate_platform.py."""

from __future__ import annotations

import pytest

from tbspark.aggregate.job import aggregate
from tbspark.settings import Connection
from tests.integration.aggregate_helpers import (
    T0,
    RecordingSink,
    expected_table,
    produce,
    read_topic,
    scenario_for,
    state_dir,
)

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]


def test_exact_windows_dead_letters_and_late_records_across_a_resumed_checkpoint(
        spark, kafka, kafka_topic, tmp_path):
    topic = kafka_topic()
    sc = scenario_for(topic, "job-exact")
    conn = Connection(kafka_bootstrap=kafka.bootstrap)
    state = state_dir(tmp_path)

    good = [  # (zone, ts, value) of usable records, sent in several spellings
        ("Zone A", T0 + 100, 30), ("Zone A", T0 + 9_999, 35.5), ("Zone A", T0 + 10_000, 50),
        ("Zone B", T0 + 2_000, 41), ("Zone B", T0 + 2_500, 43),
        ("Zone C", T0 + 27_000, 7),
    ]
    first = [
        {"geoZone": "Zone A", "windSpeed": "30", "ts": str(T0 + 100)},   # the forwarding chain's shape
        {"geoZone": "Zone A", "windSpeed": 35.5, "ts": T0 + 9_999},     # numbers instead of strings
        {"geoZone": "Zone A", "windSpeed": " 50 ", "ts": str(T0 + 10_000)},
        {"geoZone": "Zone B", "windSpeed": 41, "ts": str(T0 + 2_000)},
        {"geoZone": "Zone C", "windSpeed": "7", "ts": str(T0 + 27_000)},
        "not json at all",
        {"geoZone": "", "windSpeed": 5, "ts": str(T0)},
        {"windSpeed": 5, "ts": str(T0)},
        {"geoZone": "Zone A", "windSpeed": "fast", "ts": str(T0)},
        {"geoZone": "Zone A", "ts": str(T0)},
        {"geoZone": "Zone B", "windSpeed": "43"},                        # no ts: the Kafka timestamp
    ]
    stamps = [None] * 10 + [T0 + 2_500]
    produce(kafka.bootstrap, topic, first, stamps)
    sink = RecordingSink()
    r1 = aggregate(sc, conn, state, once=True, sink=sink, spark=spark)
    assert r1.stopped == "caught up"
    assert r1.records == 11 and r1.dead_letters == 5 and r1.late == 0
    assert sink.table() == expected_table(good)
    # Watermark now T0+22s: windows up to T0+20s are closed, [T0+20s, T0+30s) is open.

    second = [
        {"geoZone": "Zone A", "windSpeed": 99, "ts": str(T0 + 1_000)},   # late: its window closed
        {"geoZone": "Zone A", "windSpeed": 60, "ts": str(T0 + 21_000)},  # older than the watermark
        {"geoZone": "Zone C", "windSpeed": 9, "ts": str(T0 + 26_000)},   # but its window is open
    ]
    produce(kafka.bootstrap, topic, second)
    r2 = aggregate(sc, conn, state, once=True, sink=sink, spark=spark)
    assert (r2.records, r2.dead_letters, r2.late) == (3, 1, 1)
    good += [("Zone A", T0 + 21_000, 60), ("Zone C", T0 + 26_000, 9)]
    assert sink.table() == expected_table(good)

    letters = read_topic(kafka.bootstrap, sc.kafka.dlq_topic, expected=6)
    got = sorted((d["reason"], d["value"]) for d in letters)
    assert got == sorted([
        ("bad JSON", "not json at all"),
        ("empty geoZone", '{"geoZone": "", "windSpeed": 5, "ts": "%d"}' % T0),
        ("missing geoZone", '{"windSpeed": 5, "ts": "%d"}' % T0),
        ("non-numeric windSpeed", '{"geoZone": "Zone A", "windSpeed": "fast", "ts": "%d"}' % T0),
        ("missing windSpeed", '{"geoZone": "Zone A", "ts": "%d"}' % T0),
        ("late: window already closed by the watermark",
         '{"geoZone": "Zone A", "windSpeed": 99, "ts": "%d"}' % (T0 + 1_000)),
    ])
    assert all(d["topic"] == topic and d["offset"] >= 0 for d in letters)


def test_processing_time_mode_puts_everything_of_a_batch_in_the_window_it_was_processed_in(
        spark, kafka, kafka_topic, tmp_path):
    topic = kafka_topic()
    sc = scenario_for(topic, "job-proc", extra="  mode: processing_time")
    produce(kafka.bootstrap, topic, [{"geoZone": "Zone A", "windSpeed": v, "ts": str(T0 + i * 20_000)}
                                     for i, v in enumerate([10, 20, 30])])
    sink = RecordingSink()
    import time

    before = int(time.time() * 1000)
    aggregate(sc, Connection(kafka_bootstrap=kafka.bootstrap), state_dir(tmp_path), once=True,
              sink=sink, spark=spark)
    after = int(time.time() * 1000)
    # The device timestamps (2023) are ignored: one window, now, holding all three values.
    [(zone, start)] = sink.points
    assert zone == "Zone A" and before - 10_000 < start <= after
    assert sink.table()[(zone, start)] == (3, 20.0, 10.0, 30.0)
