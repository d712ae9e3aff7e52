"""The window state beside Spark's checkpoint: one JSON snapshot per micro-batch, so a batch that
Spark replays after a crash is folded into exactly the state it was first folded into.

The snapshots live at ``<checkpoint URI>/tbspark-windows/<batch id>.json`` and are read and written
through a file-system object (``location.HadoopFS`` in the job: Hadoop's FileSystem API in Spark's
JVM), so they are wherever the checkpoint is — a local folder, HDFS, S3 — and a driver restarted on
another machine resumes from them."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from tbspark.aggregate.location import join
from tbspark.aggregate.windows import WindowState
from tbspark.errors import StateError

SUBDIR = "tbspark-windows"
_NAME = re.compile(r"^(\d+)\.json$")


class FileSystem(Protocol):
    def list_names(self, uri: str) -> list[str]: ...
    def read_text(self, uri: str) -> str: ...
    def write_text_atomic(self, uri: str, text: str) -> None: ...
    def delete(self, uri: str) -> None: ...


class WindowStore:
    def __init__(self, fs: FileSystem, checkpoint_uri: str, window_ms: int, delay_ms: int):
        self.fs = fs
        self.checkpoint = checkpoint_uri
        self.dir = join(checkpoint_uri, SUBDIR)
        self.window_ms = window_ms
        self.delay_ms = delay_ms

    def _ids(self) -> list[int]:
        return sorted(int(m.group(1)) for name in self.fs.list_names(self.dir) if (m := _NAME.match(name)))

    def before(self, batch_id: int) -> WindowState:
        """The state after the latest batch earlier than ``batch_id`` (empty before the first)."""
        earlier = [i for i in self._ids() if i < batch_id]
        if not earlier:
            return WindowState(self.window_ms, self.delay_ms)
        uri = join(self.dir, f"{earlier[-1]}.json")
        try:
            state = WindowState.from_json(json.loads(self.fs.read_text(uri)))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"window state {uri} is unreadable ({exc})",
                             "delete the checkpoint directory to start the aggregation afresh") from exc
        if (state.window_ms, state.delay_ms) != (self.window_ms, self.delay_ms):
            raise StateError(f"the checkpoint {self.checkpoint} was made with other window settings "
                             f"({state.window_ms} ms window, {state.delay_ms} ms watermark)",
                             "pass another --checkpoint, or delete this one to start afresh")
        return state

    def save(self, state: WindowState) -> None:
        text = json.dumps(state.to_json(), separators=(",", ":"))
        self.fs.write_text_atomic(join(self.dir, f"{state.batch_id}.json"), text)
        # Keep the previous snapshot: Spark may replay the last batch, which starts from it.
        for old in self._ids():
            if old < state.batch_id - 1:
                self.fs.delete(join(self.dir, f"{old}.json"))


def open_store(spark: Any, checkpoint_uri: str, window_ms: int, delay_ms: int) -> WindowStore:
    """The job's store: Hadoop's FileSystem for the checkpoint's scheme, from the session's JVM."""
    from tbspark.aggregate.location import HadoopFS

    try:
        fs = HadoopFS(spark, checkpoint_uri)
    except Exception as exc:  # noqa: BLE001 - py4j: no FileSystem for the scheme, bad authority …
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise StateError(f"cannot open the checkpoint location {checkpoint_uri} ({text})",
                         "check the URI's scheme and host, and that its Hadoop connector is on the "
                         "classpath (e.g. --packages org.apache.hadoop:hadoop-aws for s3a://)") from exc
    return WindowStore(fs, checkpoint_uri, window_ms, delay_ms)
