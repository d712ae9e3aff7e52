"""The window state beside Spark's checkpoint: one JSON snapshot per micro-batch, so a batch that
Spark replays after a crash is folded into exactly the state it was first folded into."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tbspark.aggregate.windows import WindowState
from tbspark.errors import StateError
from tbspark.state import write_json_atomic

SUBDIR = "tbspark-windows"
_NAME = re.compile(r"^(\d+)\.json$")


class WindowStore:
    def __init__(self, checkpoint: Path, window_ms: int, delay_ms: int):
        self.dir = Path(checkpoint) / SUBDIR
        self.window_ms = window_ms
        self.delay_ms = delay_ms

    def _ids(self) -> list[int]:
        if not self.dir.exists():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _NAME.match(p.name)))

    def before(self, batch_id: int) -> WindowState:
        """The state after the latest batch earlier than ``batch_id`` (empty before the first)."""
        earlier = [i for i in self._ids() if i < batch_id]
        if not earlier:
            return WindowState(self.window_ms, self.delay_ms)
        path = self.dir / f"{earlier[-1]}.json"
        try:
            state = WindowState.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"window state {path} is unreadable ({exc})",
                             "delete the checkpoint directory to start the aggregation afresh") from exc
        if (state.window_ms, state.delay_ms) != (self.window_ms, self.delay_ms):
            raise StateError(f"the checkpoint {self.dir.parent} was made with other window settings "
                             f"({state.window_ms} ms window, {state.delay_ms} ms watermark)",
                             "pass another --checkpoint, or delete this one to start afresh")
        return state

    def save(self, state: WindowState) -> None:
        write_json_atomic(self.dir / f"{state.batch_id}.json", state.to_json())
        # Keep the previous snapshot: Spark may replay the last batch, which starts from it.
        for old in self._ids():
            if old < state.batch_id - 1:
                (self.dir / f"{old}.json").unlink(missing_ok=True)
