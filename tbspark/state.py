"""The state directory: everything a run leaves behind, in one folder.

    <state>/services.json        what `tbspark stack up` started (pids, ports, logs)
    <state>/kafka/               broker config, data (kraft log dirs) and its log
    <state>/platform/            the embedded platform's SQLite database, JWT secret, log
    <state>/provision.json       what `tbspark provision` created (names, ids, tokens, chain id)
    <state>/groundtruth.json     what `tbspark simulate` sent (per device, per zone per window)
    <state>/checkpoints/<name>/  Spark checkpoints of `tbspark aggregate`
    <state>/logs/                logs of background jobs

Files are written atomically (temp file + rename) so a crash never leaves half a record.
Secrets (the platform's database with password hashes and device tokens, its JWT signing key,
provision.json with device tokens) are owner-only: records are written 0600, the state directory
is created 0700 and the platform's directory is kept 0700 (docs/security.md).
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
        # 0700 when we create it; a directory the user already had keeps its mode (it may be theirs
        # to share), the secrets inside stay 0600 and the platform's own folder 0700 (private_dir).
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can list or enter (made, or tightened, to 0700)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner can read: created empty 0600 if absent, else tightened.
    SQLite gives its -wal and -shm files the mode of the database file, so this covers them too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one; the file is 0600
    (mkstemp's mode, kept by the rename): records may hold device tokens."""
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
