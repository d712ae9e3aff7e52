"""Checkpoint locations: URIs are kept as Spark and Hadoop expect them, plain paths become file:// URIs
(``Path("hdfs://nn:8020/ckpt")`` would have made a local folder ``hdfs:/nn:8020/ckpt``)."""

from pathlib import Path

import pytest

from tbspark.aggregate.location import join, local_path, location_uri
from tbspark.aggregate.store import WindowStore
from tbspark.aggregate.windows import WindowAgg
from tbspark.errors import StateError


@pytest.mark.parametrize("given, uri", [
    ("hdfs://nn:8020/tbspark/ckpt", "hdfs://nn:8020/tbspark/ckpt"),
    ("hdfs://nn:8020/tbspark/ckpt/", "hdfs://nn:8020/tbspark/ckpt"),
    ("s3a://bucket/prefix/ckpt", "s3a://bucket/prefix/ckpt"),
    ("file:///var/tbspark/ckpt", "file:///var/tbspark/ckpt"),
    ("file:/var/tbspark/ckpt", "file:/var/tbspark/ckpt"),
    ("/var/tbspark/ckpt", "file:///var/tbspark/ckpt"),
])
def test_uris_are_kept_and_paths_become_file_uris(given, uri):
    assert location_uri(given) == uri


def test_a_relative_path_becomes_an_absolute_file_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert location_uri("ckpt") == f"file://{tmp_path}/ckpt"
    assert location_uri(Path("a b")) == f"file://{tmp_path}/a b"  # Hadoop escapes it, not us
    assert local_path(location_uri(Path("a b"))) == tmp_path / "a b"
    assert local_path("hdfs://nn/x") is None


def test_an_empty_location_is_refused_with_a_hint():
    with pytest.raises(StateError, match="empty") as err:
        location_uri("  ")
    assert "hdfs://" in err.value.hint


class DictFS:
    """The store's file-system interface over a dict (the job uses Hadoop's, tested with Spark)."""

    def __init__(self):
        self.files: dict[str, str] = {}

    def list_names(self, uri):
        return [k[len(uri) + 1:] for k in self.files if k.startswith(uri + "/")]

    def read_text(self, uri):
        return self.files[uri]

    def write_text_atomic(self, uri, text):
        self.files[uri] = text

    def delete(self, uri):
        self.files.pop(uri, None)


def test_the_store_keeps_two_snapshots_under_the_checkpoint_uri_and_refuses_other_settings():
    fs = DictFS()
    store = WindowStore(fs, "hdfs://nn:8020/ckpt", 10_000, 5_000)
    assert store.before(0).batch_id == -1
    for b in range(4):
        new, _ = store.before(b).apply(b, {("Zone A", 0): WindowAgg.of(2.0)}, 1_000 * b, "update")
        store.save(new)
    assert sorted(fs.files) == [join("hdfs://nn:8020/ckpt", "tbspark-windows", n) for n in ("2.json", "3.json")]
    assert store.before(3).batch_id == 2  # a replay of batch 3 starts from batch 2's state
    assert store.before(4).windows[("Zone A", 0)].count == 4
    with pytest.raises(StateError, match="other window settings"):
        WindowStore(fs, "hdfs://nn:8020/ckpt", 60_000, 5_000).before(99)
