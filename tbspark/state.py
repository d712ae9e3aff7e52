"""The state directory: everything a run leaves behind, in one folder.

    <state>/services.json        what `tbspark stack up` started (pids, ports, logs)
    <state>/kafka/               broker config, data (kraft log dirs) and its log
    <state>/platform/            the embedded platform's SQLite database, JWT secret, log
    <state>/provision.json       what `tbspark provision` created (names, ids, tokens, chain id)
    <state>/groundtruth.json     what `tbspark simulate` sent (per device, per zone per window)
    <state>/checkpoints/<name>/  Spark checkpoints of `tbspark aggregate`
    <state>/logs/                logs of background jobs

Files are written atomically (temp file + rename) so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbspark.errors import StateError


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def services_file(self) -> Path:
        return self.root / "services.json"

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def platform_dir(self) -> Path:
        return self.root / "platform"

    @property
    def provision_file(self) -> Path:
        return self.root / "provision.json"

    @property
    def groundtruth_file(self) -> Path:
        return self.root / "groundtruth.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def checkpoint_dir(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / "checkpoints" / safe

    def ensure(self) -> "StateDir":
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path, what: str, hint: str) -> Any:
    """Read a JSON record from the state directory, or raise a StateError that says what to run."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"no {what} at {path}", hint) from None
    except (OSError, ValueError) as exc:
        raise StateError(f"{what} at {path} is unreadable ({exc})", hint) from exc
