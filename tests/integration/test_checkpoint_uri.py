"""The checkpoint as a URI, on real Spark and Kafka: the window state is written through Hadoop's
FileSystem in the JVM beside Spark's own checkpoint, and a job given the same location as a URI or as
a plain path resumes from it exactly."""

from __future__ import annotations

import json

import pytest

from tbspark.aggregate.job import aggregate
from tbspark.aggregate.location import HadoopFS, join, local_path
from tbspark.aggregate.store import open_store
from tbspark.errors import StateError
from tbspark.settings import Connection
from tests.integration.aggregate_helpers import T0, RecordingSink, expected_table, produce, scenario_for, state_dir

pytestmark = [pytest.mark.spark]


def test_hadoop_fs_writes_atomically_over_an_existing_file_and_lists_what_is_there(spark, tmp_path):
    uri = f"file://{tmp_path}/a dir"  # a space, as Hadoop (and Spark's checkpointLocation) take it
    fs = HadoopFS(spark, uri)
    target = join(uri, "sub", "1.json")
    fs.write_text_atomic(target, '{"v": "first"}')
    fs.write_text_atomic(target, '{"v": "zweite — ü"}')  # replaces it; non-ASCII survives
    assert json.loads(fs.read_text(target)) == {"v": "zweite — ü"}
    assert json.loads((tmp_path / "a dir" / "sub" / "1.json").read_text()) == {"v": "zweite — ü"}
    assert [n for n in fs.list_names(join(uri, "sub")) if not n.endswith(".crc")] == ["1.json"]
    assert fs.list_names(join(uri, "absent")) == []
    fs.delete(target)
    assert not (tmp_path / "a dir" / "sub" / "1.json").exists()


def test_a_location_whose_scheme_hadoop_does_not_know_fails_with_a_hint(spark):
    with pytest.raises(StateError, match="nosuchfs://") as err:
        open_store(spark, "nosuchfs://somewhere/ckpt", 10_000, 5_000)
    assert "classpath" in err.value.hint


@pytest.mark.kafka
@pytest.mark.slow
def test_the_job_resumes_from_a_file_uri_checkpoint_given_later_as_a_plain_path(spark, kafka, kafka_topic,
                                                                                 tmp_path):
    topic = kafka_topic()
    sc = scenario_for(topic, "job-uri")
    conn = Connection(kafka_bootstrap=kafka.bootstrap)
    state = state_dir(tmp_path)
    folder = tmp_path / "elsewhere" / "ckpt"
    first = [("Zone A", T0 + 100, 30), ("Zone A", T0 + 2_000, 34), ("Zone B", T0 + 3_000, 41)]
    produce(kafka.bootstrap, topic, [{"geoZone": z, "windSpeed": v, "ts": str(t)} for z, t, v in first])
    sink = RecordingSink()
    r1 = aggregate(sc, conn, state, once=True, sink=sink, spark=spark, checkpoint=f"file://{folder}")
    assert r1.checkpoint == f"file://{folder}" and r1.records == 3
    snapshots = sorted(p.name for p in (folder / "tbspark-windows").glob("*.json"))
    assert snapshots and (folder / "offsets").is_dir()  # Spark's checkpoint and ours, side by side
    assert not (tmp_path / "state" / "checkpoints").exists()  # nothing went to the default place
    # The same window, continued by a second run: only a resumed window state gives count 4.
    produce(kafka.bootstrap, topic, [{"geoZone": "Zone A", "windSpeed": 36, "ts": str(T0 + 4_000)}])
    r2 = aggregate(sc, conn, state, once=True, sink=sink, spark=spark, checkpoint=str(folder))
    assert r2.records == 1 and local_path(r2.checkpoint) == folder
    assert sink.table() == expected_table(first + [("Zone A", T0 + 4_000, 36)])
