"""Poison on the aggregation job's topic, on real Kafka, real Spark and the real embedded platform: a
500 KB zone, zones that are an object, a number or hold a control character, a NaN and a 1e308
value, unreadable and negative timestamps, and a zone ThingsBoard refuses with a 400 — mixed into
good records. The job keeps going: the good zones' windows are stored exactly, every poison record
is a dead letter with its reason, the refused zone's windows are dead letters with ThingsBoard's
answer, and no asset is made of a poison zone."""

from __future__ import annotations

import json
import uuid

import pytest

from tbspark.aggregate.job import aggregate
from tbspark.aggregate.sinks import RestSink
from tbspark.errors import TbApiError
from tbspark.settings import Connection
from tbspark.thingsboard.rest import TbRestClient
from tests.integration.aggregate_helpers import KEYS, T0, expected_table, produce, read_topic, scenario_for, state_dir
from tests.integration.test_aggregate_platform import _ids, _stored

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

BAD_TS = "ts not a time in epoch ms from 2000 to 3000"


class RefusingClient(TbRestClient):
    """The real client, except that a zone named ``{{…}}`` gets the 400 real ThingsBoard answers for
    it (its NoXss validation, checked on ThingsBoard CE 4.3.1.3), which the embedded platform does
    not implement."""

    def get_or_create_asset(self, name: str, type: str) -> dict:
        if name.startswith("{{"):
            raise TbApiError(400, "Validation error: name is malformed", 31, "POST", "/api/asset")
        return super().get_or_create_asset(name, type)


def test_poison_records_are_dead_lettered_and_the_good_zones_stay_exact(spark, kafka, kafka_topic,
                                                                       platform, tmp_path):
    tag = uuid.uuid4().hex[:6]
    zones = [f"Poison A {tag}", f"Poison B {tag}"]
    refused = "{{" + tag + "}}"
    good, truth = [], []
    for w in range(2):
        for i in range(5):
            for z, zone in enumerate(zones + [refused]):
                ts = T0 + w * 10_000 + i * 1_000
                value = 10 * (z + 1) + i + w
                good.append({"geoZone": zone, "windSpeed": value, "ts": ts})
                if zone != refused:
                    truth.append((zone, ts, value))
    poison = [  # (record, reason)
        ({"geoZone": "Z" * 500_000, "windSpeed": 1, "ts": T0}, "geoZone longer than 255 characters"),
        ({"geoZone": {"a": 1}, "windSpeed": 1, "ts": T0}, "geoZone not a string"),
        ({"geoZone": 123, "windSpeed": 1, "ts": T0}, "geoZone not a string"),
        ({"geoZone": f"Poison A {tag}\n", "windSpeed": 1, "ts": T0}, "geoZone has control characters"),
        ('{"geoZone": "%s", "windSpeed": NaN, "ts": %d}' % (zones[0], T0), "non-numeric windSpeed"),
        ({"geoZone": zones[0], "windSpeed": 1e308, "ts": T0}, "windSpeed outside [-1e+09, 1e+09]"),
        ({"geoZone": zones[0], "windSpeed": 1, "ts": "abc"}, BAD_TS),
        ({"geoZone": zones[1], "windSpeed": 1, "ts": -1}, BAD_TS),
    ]
    records = []
    for k, record in enumerate(good):  # the poison spread among the good records
        records.append(record)
        if k % 3 == 0 and k // 3 < len(poison):
            records.append(poison[k // 3][0])
    topic = kafka_topic()
    produce(kafka.bootstrap, topic, records)

    sc = scenario_for(topic, f"poison-{tag}")
    conn = Connection(tb_url=platform.url, kafka_bootstrap=kafka.bootstrap)
    client = TbRestClient(platform.url, "tenant@thingsboard.org", "tenant")
    sink = RestSink(conn, "WeatherStation", KEYS,
                    client=RefusingClient(platform.url, "tenant@thingsboard.org", "tenant"))
    try:
        report = aggregate(sc, conn, state_dir(tmp_path), once=True, spark=spark, sink=sink)
    finally:
        sink.close()

    assert report.stopped == "caught up"
    assert report.records == len(records)
    stored = _stored(client, "ASSET", _ids(client, "ASSET", zones))
    assert stored == expected_table(truth)

    letters = read_topic(kafka.bootstrap, sc.kafka.dlq_topic, expected=len(poison) + 2, timeout_s=30)
    record_letters = sorted((d["reason"], d["offset"]) for d in letters if "offset" in d)
    offsets = [k for k, r in enumerate(records) if any(r is p for p, _ in poison)]
    assert record_letters == sorted((reason, offsets[k]) for k, (_, reason) in enumerate(poison))
    big = next(d for d in letters if d.get("reason") == "geoZone longer than 255 characters")
    assert big["value_chars"] == len(json.dumps(poison[0][0])) and len(big["value"]) == 100_000
    window_letters = sorted((d["ts"], d["values"]["windSpeedCount"], d["reason"])
                            for d in letters if "zone" in d)
    assert all(d["zone"] == refused for d in letters if "zone" in d)
    # update mode writes each window the batch touched; a --once run is one batch here
    assert window_letters == [(T0, 5, "sink refused: HTTP 400: Validation error: name is malformed"),
                              (T0 + 10_000, 5, "sink refused: HTTP 400: Validation error: name is malformed")]
    assert report.dead_letters == len(poison) + 2
    for name in ('{"a":1}', '{"a": 1}', "123"):  # no asset was made of a poison zone
        assert client.get_asset_by_name(name) is None
    client.close()
