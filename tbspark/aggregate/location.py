"""Checkpoint locations as URIs (``file://``, ``hdfs://``, ``s3a://`` …, or a plain local path), and
the few file operations the job needs on them, done by Hadoop's FileSystem API in Spark's JVM (over
py4j) rather than by Python on the driver: a driver started on another machine, or by spark-submit in
cluster deploy mode, then reads the same window state that Spark's own checkpoint sits beside."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from tbspark.errors import StateError

# RFC 3986 scheme, then "://" or ":/" (Hadoop writes file:/tmp/x); a Windows drive "C:\" is not one.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def location_uri(location: str | Path) -> str:
    """``location`` as a URI Spark and Hadoop agree on: a URI with a scheme is kept as it is (only a
    trailing slash is dropped); a plain path becomes an absolute ``file://`` URI.

    >>> location_uri("hdfs://nn:8020/ckpt/")
    'hdfs://nn:8020/ckpt'
    """
    text = str(location).strip()
    if not text:
        raise StateError("the checkpoint location is empty", "pass --checkpoint DIR or a URI such as "
                                                             "hdfs://namenode:8020/tbspark/ckpt")
    if _SCHEME.match(text):
        return text.rstrip("/") if not text.endswith(":///") else text
    # Not Path.as_uri(): Hadoop's Path(String) takes the text literally, so "%20" would become a
    # folder named "a%20dir" (in Spark's checkpoint as well); it escapes a space itself.
    return "file://" + str(Path(text).expanduser().resolve())


def join(uri: str, *names: str) -> str:
    return "/".join([uri.rstrip("/"), *names])


def local_path(uri: str) -> Path | None:
    """The local folder of a ``file:`` URI (None for any other scheme)."""
    if not uri.startswith("file:"):
        return None
    from urllib.parse import urlparse

    return Path(urlparse(uri).path)  # not unquoted: Hadoop reads the text literally (see above)


class HadoopFS:
    """The file operations of ``WindowStore`` on one location, through
    ``org.apache.hadoop.fs.FileSystem`` of the running SparkSession (its Hadoop configuration: the
    ``spark.hadoop.*`` settings, core-site.xml, credentials providers)."""

    def __init__(self, spark: Any, uri: str):
        self._jvm = spark._jvm
        conf = spark._jsc.hadoopConfiguration()
        self._fs = self._path(uri).getFileSystem(conf)
        self.uri = uri

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def list_names(self, uri: str) -> list[str]:
        """File names directly in ``uri`` ([] when the folder does not exist)."""
        p = self._path(uri)
        if not self._fs.exists(p):
            return []
        return [st.getPath().getName() for st in self._fs.listStatus(p)]

    def read_text(self, uri: str) -> str:
        stream = self._fs.open(self._path(uri))
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text_atomic(self, uri: str, text: str) -> None:
        """Readers see the old file or the whole new one: written to a temporary name in the same
        folder, synced, then renamed. Hadoop's rename does not replace a file, so an existing one is
        deleted first; a crash between the two leaves no file of that name, which the store allows
        for (it keeps the snapshot before it and reads the latest one present)."""
        target = self._path(uri)
        parent = target.getParent()
        self._fs.mkdirs(parent)
        tmp = self._jvm.org.apache.hadoop.fs.Path(parent, f".{target.getName()}.{uuid.uuid4().hex}.tmp")
        out = self._fs.create(tmp, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
            out.hsync()  # on HDFS: on the datanodes' disks before the rename makes it visible
        finally:
            out.close()
        if self._fs.exists(target):
            self._fs.delete(target, False)
        if not self._fs.rename(tmp, target):
            self._fs.delete(tmp, False)
            raise StateError(f"could not rename {tmp.toString()} to {uri}",
                             "check that the checkpoint location is writable")

    def delete(self, uri: str) -> None:
        self._fs.delete(self._path(uri), False)

    def mkdirs(self, uri: str) -> None:
        self._fs.mkdirs(self._path(uri))
