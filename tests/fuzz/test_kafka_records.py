"""Malformed records on the aggregation job's Kafka topic: a couple of thousand generated ones — random
bytes, text that is not UTF-8, truncated JSON, JSON that is not an object, missing/empty zones,
values that are not finite numbers, tombstones — interleaved with valid records. Every malformed record
lands on ``<topic>.dlq`` with its reason and offset, and the windows are exactly those of the valid
records alone."""

from __future__ import annotations

import json
import os
import random
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from tbspark.aggregate.job import aggregate
from tbspark.settings import Connection
from tbspark.state import StateDir
from tests.integration.aggregate_helpers import T0, RecordingSink, expected_table, scenario_for

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

BAD = 2000
GOOD = 1000
SEED = int(os.environ.get("TBSPARK_FUZZ_SEED", str(random.randrange(1 << 32))))


def _bad(rng: random.Random, zone: str) -> tuple[bytes | None, str]:
    """One malformed record value and the dead-letter reason it must get."""
    good = json.dumps({"geoZone": zone, "windSpeed": "42", "ts": str(T0)}).encode()
    kind = rng.randrange(11)
    if kind == 0:
        while True:  # random bytes that do not happen to be JSON
            b = rng.randbytes(rng.randrange(1, 200))
            try:
                json.loads(b)
            except ValueError:
                return b, "bad JSON"
    if kind == 1:  # bytes that are not UTF-8 are read as U+FFFD (Spark's cast): a value that is no number
        return b'{"geoZone": "' + zone.encode() + b'", "windSpeed": "4\xff\xfe2"}', "non-numeric windSpeed"
    if kind == 2:
        return good[:rng.randrange(1, len(good) - 1)], "bad JSON"
    if kind == 3:
        return rng.choice([b"42", b'"text"', b"true", b"null", b"[]", b"", b"   "]), "bad JSON"
    if kind == 4:
        return None, "bad JSON"  # a tombstone
    if kind == 5:
        return json.dumps({"windSpeed": rng.random() * 100, "ts": str(T0)}).encode(), "missing geoZone"
    if kind == 6:
        z = rng.choice(["", " ", "\t", "   "])
        return json.dumps({"geoZone": z, "windSpeed": 1, "ts": str(T0)}).encode(), "empty geoZone"
    if kind == 7:
        return json.dumps({"geoZone": zone, "ts": str(T0)}).encode(), "missing windSpeed"
    if kind == 8:
        v = rng.choice(["abc", "NaN", "Infinity", "-Infinity", "1e999", "", " ", "4 2", "0x10", "--1"])
        return json.dumps({"geoZone": zone, "windSpeed": v, "ts": str(T0)}).encode(), "non-numeric windSpeed"
    if kind == 9:
        return json.dumps({"geoZone": zone, "windSpeed": None, "ts": str(T0)}).encode(), "missing windSpeed"
    return (b'{"geoZone": "' + zone.encode() + b'", "windSpeed": 1e999, "ts": "' + str(T0).encode() + b'"}',
            "non-numeric windSpeed")


def _produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failed: list = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: err and failed.append(err))
    assert p.flush(30) == 0 and not failed, failed[:3]


def _read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                if len(out) >= expected:
                    break  # one quiet poll after the expected count: no extras are coming
                continue
            if not msg.error():
                out.append(msg)
    finally:
        c.close()
    return out


def test_malformed_records_go_to_the_dead_letters_and_the_windows_stay_exact(spark, kafka, kafka_topic,
                                                                            tmp_path):
    rng = random.Random(SEED)
    tag = uuid.uuid4().hex[:6]
    zones = [f"Fuzz {z} {tag}" for z in "ABC"]
    topic = kafka_topic()
    values: list[bytes | None] = []
    reasons: dict[int, str] = {}  # offset → the reason the record must get
    truth = []
    kinds = [True] * BAD + [False] * GOOD
    rng.shuffle(kinds)
    for offset, bad in enumerate(kinds):
        zone = rng.choice(zones)
        if bad:
            value, reasons[offset] = _bad(rng, zone)
        else:
            ts = T0 + rng.randrange(40_000)
            speed = rng.randrange(0, 1200) / 10
            rec = {"geoZone": zone, "windSpeed": rng.choice([speed, str(speed)]),
                   "ts": rng.choice([ts, str(ts)])}
            value = json.dumps(rec).encode()
            truth.append((zone, ts, speed))
        values.append(value)
    _produce(kafka.bootstrap, topic, values)

    sc = scenario_for(topic, f"fuzz-{tag}")
    sink = RecordingSink()
    conn = Connection(kafka_bootstrap=kafka.bootstrap)  # with a recording sink only Kafka matters
    report = aggregate(sc, conn, StateDir(tmp_path / "state").ensure(), once=True, spark=spark, sink=sink)
    letters = [json.loads(m.value()) for m in _read_all(kafka.bootstrap, sc.kafka.dlq_topic, BAD)]
    got = {d["offset"]: d for d in letters}
    accepted = {o: (values[o], r) for o, r in reasons.items() if o not in got}
    assert not accepted, (f"{len(accepted)} malformed records were not dead-lettered (seed {SEED}): "
                          f"{list(accepted.values())[:10]}")
    assert (report.records, report.dead_letters, report.late) == (BAD + GOOD, BAD, 0), f"seed {SEED}"
    assert sink.table() == expected_table(truth), f"the windows differ from the valid records' (seed {SEED})"
    assert len(letters) == len(got) == BAD, f"{len(letters)} dead letters for {BAD} bad records (seed {SEED})"
    wrong = {o: (got[o]["reason"], want) for o, want in reasons.items() if got.get(o, {}).get("reason") != want}
    assert not wrong, f"wrong reasons (offset: got, want), seed {SEED}: {dict(list(wrong.items())[:10])}"
    for o, d in got.items():
        assert d["topic"] == topic and d["partition"] == 0
        original = values[o]
        if original is not None and _utf8(original):
            assert d["value"] == original.decode(), f"offset {o}: the original text is not kept"
    # the input topic is untouched: exactly what was produced, in order
    assert [m.value() for m in _read_all(kafka.bootstrap, topic, BAD + GOOD)] == values


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False
