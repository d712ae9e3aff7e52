"""The state directory: everything a run leaves behind, in one folder.

    <state>/services.json        what `tbspark stack up` started (pids, ports, logs)
    <state>/kafka/               broker config, data (kraft log dirs) and its log
    <state>/platform/            the embedded platform's SQLite database, JWT secret, log
    <state>/provision.json       what `tbspark provision` created (names, ids, tokens, chain id)
    <state>/groundtruth.json     what `tbspark simulate` sent (per device, per zone per window)
    <state>/checkpoints/<name>/  Spark checkpoints of `tbspark aggregate`
    <state>/logs/                logs of background jobs

The three records passed between stages are typed here, each with ``load(path)`` / ``save(path)``
and one set of checks and error messages: ``ProvisionRecord`` (provision.json), ``GroundTruthRecord``
(groundtruth.json and its shards) and ``StackRecord`` (services.json). A record that is missing,
cut short or damaged is a one-line ``StateError`` that says which file and what to run — never a
KeyError or a JSON traceback. Their JSON format is the one these files have always had.

Files are written atomically (temp file + rename) so a crash never leaves half a record.
Secrets (the platform's database with password hashes and device tokens, its JWT signing key,
provision.json with device tokens) are owner-only: records are written 0600, the state directory
is created 0700 and the platform's directory is kept 0700 (docs/security.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tbspark.errors import StateError

if TYPE_CHECKING:
    from tbspark.scenario import Scenario


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
    def endpoint_file(self) -> Path:
        """Where `tbspark platform serve` says it listens (written once it is ready)."""
        return self.platform_dir / "endpoint.json"

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


# ---- reading records: one path, one set of messages ----------------------------------------------

def _read_object(path: Path, what: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a StateError naming the file: absent, unreadable, not JSON
    (cut short or damaged), or not an object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StateError(f"no {what} at {path}", hint) from None
    except OSError as exc:
        raise StateError(f"cannot read the {what} at {path} ({exc.strerror or exc})", hint) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"the {what} at {path} is damaged or cut short (not JSON: {exc})",
                         hint) from None
    if not isinstance(data, dict):
        raise StateError(f"the {what} at {path} is damaged (not a JSON object)", hint)
    return data


class _Fields:
    """Typed access to one JSON object of a record; a missing or mistyped field is a StateError
    naming the record's file and the field (``where`` is its path inside the file)."""

    def __init__(self, data: Any, what: str, path: Path, hint: str, where: str = ""):
        self.what, self.path, self.hint, self.where = what, path, hint, where
        if not isinstance(data, dict):
            raise self._bad(where.rstrip(".") or "the record", "a JSON object")
        self.data = data

    def _bad(self, key: str, wanted: str) -> StateError:
        return StateError(f"the {self.what} at {self.path} is incomplete or damaged: {key} is not "
                          f"{wanted}", self.hint)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., wanted: str = "") -> Any:
        value = self.data.get(key, ...)
        if value is ... or (value is None and default is None):
            if default is ...:
                raise StateError(f"the {self.what} at {self.path} is incomplete: it has no "
                                 f"{self.where}{key}", self.hint)
            return default
        # bool is an int to Python; no field here takes one for the other
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            raise self._bad(self.where + key, wanted or _describe(kind))
        return value

    def num(self, key: str, default: Any = ...) -> Any:
        return self.get(key, (int, float), default, "a number")

    def sub(self, key: str, default: Any = ...) -> "_Fields | None":
        value = self.get(key, dict, default)
        return None if value is None else _Fields(value, self.what, self.path, self.hint,
                                                  f"{self.where}{key}.")

    def items(self, key: str) -> list[tuple[str, "_Fields"]]:
        """The members of an object field (absent = none), each as _Fields."""
        value = self.get(key, dict, {})
        return [(k, _Fields(v, self.what, self.path, self.hint, f"{self.where}{key}.{k}."))
                for k, v in value.items()]


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", dict: "a JSON object", bool: "true or false",
             list: "a list", float: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


# ---- provision.json ------------------------------------------------------------------------------

PROVISION_WHAT = "provision record"


def provision_hint(scenario: "Scenario | None" = None) -> str:
    """What to run when the provision record is missing or does not fit the scenario."""
    if scenario is None:
        return "run `tbspark provision <scenario>` first (or pass the --state-dir of its run)"
    return f"run: tbspark provision {scenario.source or scenario.name}"


@dataclass(frozen=True)
class DeviceRecord:
    """One provisioned device: its id and access token on the platform, and the fingerprint of
    the client attributes last published (``attrs``; None when unknown)."""

    id: str
    token: str
    type: str = ""
    zone: str = ""
    attrs: str | None = None


@dataclass(frozen=True)
class GatewayRecord:
    name: str
    id: str
    token: str


@dataclass(frozen=True)
class ProvisionRecord:
    """provision.json: what `tbspark provision` made the platform hold for one scenario."""

    scenario: str
    devices: Mapping[str, DeviceRecord]
    tb_url: str = ""
    created_at_ms: int = 0
    assets: Mapping[str, str] = field(default_factory=dict)  # zone -> asset id
    rule_chain_id: str | None = None
    rule_chain_name: str | None = None
    device_profiles: Mapping[str, str] = field(default_factory=dict)  # device type -> profile id
    gateway: GatewayRecord | None = None
    complete: bool = True

    @classmethod
    def load(cls, path: Path, hint: str | None = None) -> "ProvisionRecord":
        hint = hint or provision_hint()
        f = _Fields(_read_object(path, PROVISION_WHAT, hint), PROVISION_WHAT, path, hint)
        f.get("devices", dict)  # the one field every stage reads
        devices = {name: DeviceRecord(d.get("id", str), d.get("token", str), d.get("type", str, ""),
                                      d.get("zone", str, ""), d.get("attrs", str, None))
                   for name, d in f.items("devices")}
        chain = f.sub("rule_chain", None)
        gw = f.sub("gateway", None)
        return cls(
            scenario=f.get("scenario", str), devices=devices, tb_url=f.get("tb_url", str, ""),
            created_at_ms=int(f.num("created_at_ms", 0)),
            assets={zone: a.get("id", str) for zone, a in f.items("assets")},
            rule_chain_id=chain.get("id", str, None) if chain else None,
            rule_chain_name=chain.get("name", str, None) if chain else None,
            device_profiles=_string_map(f, "device_profiles"),
            gateway=GatewayRecord(gw.get("name", str), gw.get("id", str), gw.get("token", str))
            if gw else None,
            complete=f.get("complete", bool, True))

    @classmethod
    def for_scenario(cls, state: StateDir, scenario: "Scenario") -> "ProvisionRecord":
        """The record of ``scenario``'s provisioning in ``state`` (StateError when there is none,
        it is damaged, or it belongs to another scenario)."""
        hint = provision_hint(scenario)
        record = cls.load(state.provision_file, hint)
        if not record.complete or record.scenario != scenario.name:
            raise StateError(f"the provision record at {state.provision_file} is for scenario "
                             f"{record.scenario!r}, not {scenario.name!r}",
                             f"{hint} (or pass the --state-dir of this scenario's run)")
        return record

    @classmethod
    def previous(cls, state: StateDir, scenario_name: str) -> "ProvisionRecord | None":
        """The last complete record of this scenario, None when there is none usable (provision
        only reuses what it holds: a damaged record is simply made anew)."""
        try:
            record = cls.load(state.provision_file)
        except StateError:
            return None
        return record if record.complete and record.scenario == scenario_name else None

    def require_devices(self, scenario: "Scenario") -> None:
        """Every device of the scenario is in the record."""
        missing = [s.name for s in scenario.expand_devices() if s.name not in self.devices]
        if missing:
            raise StateError(f"{len(missing)} devices of the scenario are not provisioned "
                             f"(e.g. {missing[0]!r})", provision_hint(scenario))

    def tokens(self) -> dict[str, str]:
        """device name -> access token."""
        return {name: d.token for name, d in self.devices.items()}

    def require_gateway(self, scenario: "Scenario") -> GatewayRecord:
        if self.gateway is None or not self.gateway.token:
            raise StateError("the provision record has no gateway device",
                             f"{provision_hint(scenario)} with aggregation.sink: gateway in the scenario")
        return self.gateway

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "complete": self.complete, "tb_url": self.tb_url,
            "created_at_ms": self.created_at_ms,
            "devices": {name: {"id": d.id, "token": d.token, "type": d.type, "zone": d.zone,
                               "attrs": d.attrs} for name, d in self.devices.items()},
            "assets": {zone: {"id": uuid} for zone, uuid in self.assets.items()},
            "rule_chain": ({"id": self.rule_chain_id, "name": self.rule_chain_name}
                           if self.rule_chain_id is not None else None),
            "device_profiles": dict(self.device_profiles),
            "gateway": ({"name": self.gateway.name, "id": self.gateway.id, "token": self.gateway.token}
                        if self.gateway else None),
        }

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())


def _string_map(f: _Fields, key: str) -> dict[str, str]:
    value = f.get(key, dict, {})
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise f._bad(f"{key}.{bad[0]}", "a string")
    return dict(value)


# ---- groundtruth.json ----------------------------------------------------------------------------

GROUNDTRUTH_WHAT = "ground truth"


@dataclass(frozen=True)
class WindowTruth:
    """What was sent into one zone's window, as the ground truth records it. Deliberately not
    ``aggregate.windows.WindowAgg``: the verifier's figures must not come from the code it checks."""

    count: int
    sum: float
    min: float | None = None
    max: float | None = None
    near_edge: int = 0  # how many were stamped within NEAR_EDGE_MS of the window's edges


@dataclass(frozen=True)
class DeviceTruth:
    zone: str
    sent: int = 0
    acked: int = 0
    sum: float = 0
    acked_sum: float = 0


@dataclass(frozen=True)
class GroundTruthRecord:
    """groundtruth.json: what `tbspark simulate` sent and had acknowledged (written by
    ``simulate.groundtruth.GroundTruth``; its shards merged by ``simulate.groundtruth.load``)."""

    scenario: str
    window_s: float
    timestamps: str  # "device" | "server"
    value_key: str
    started_ms: int
    ended_ms: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    devices: Mapping[str, DeviceTruth] = field(default_factory=dict)
    windows: Mapping[str, Mapping[int, WindowTruth]] = field(default_factory=dict)  # zone -> start ->
    shards: int | None = None  # how many shard files were merged into this record (None: one file)

    @classmethod
    def load(cls, path: Path, hint: str = "run `tbspark simulate <scenario>` again") -> "GroundTruthRecord":
        return cls.from_json(_read_object(path, GROUNDTRUTH_WHAT, hint), path, hint)

    @classmethod
    def from_json(cls, data: Any, path: Path = Path("<ground truth>"),
                  hint: str = "run `tbspark simulate <scenario>` again") -> "GroundTruthRecord":
        f = _Fields(data, GROUNDTRUTH_WHAT, path, hint)
        windows: dict[str, dict[int, WindowTruth]] = {}
        for zone, wins in f.items("windows"):
            out = windows[zone] = {}
            for start, w in wins.data.items():
                wf = _Fields(w, GROUNDTRUTH_WHAT, path, hint, f"windows.{zone}.{start}.")
                if not start.lstrip("-").isdigit():
                    raise wf._bad(f"windows.{zone}.{start}", "keyed by a window start in ms")
                out[int(start)] = WindowTruth(int(wf.num("count")), wf.num("sum"), wf.num("min", None),
                                              wf.num("max", None), int(wf.num("near_edge", 0)))
        devices = {name: DeviceTruth(d.get("zone", str), int(d.num("sent", 0)), int(d.num("acked", 0)),
                                     d.num("sum", 0), d.num("acked_sum", 0))
                   for name, d in f.items("devices")}
        return cls(scenario=f.get("scenario", str), window_s=f.num("window_s"),
                   timestamps=f.get("timestamps", str), value_key=f.get("value_key", str, ""),
                   started_ms=int(f.num("started_ms")), ended_ms=int(f.num("ended_ms")),
                   sent=int(f.num("sent", 0)), acked=int(f.num("acked", 0)),
                   errors=int(f.num("errors", 0)), devices=devices, windows=windows,
                   shards=f.get("shards", int, None))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario, "window_s": self.window_s, "timestamps": self.timestamps,
            "value_key": self.value_key, "started_ms": self.started_ms, "ended_ms": self.ended_ms,
            "sent": self.sent, "acked": self.acked, "errors": self.errors,
            "devices": {name: {"zone": d.zone, "sent": d.sent, "acked": d.acked, "sum": d.sum,
                               "acked_sum": d.acked_sum} for name, d in self.devices.items()},
            "windows": {zone: {str(start): {"count": w.count, "sum": w.sum, "min": w.min,
                                            "max": w.max, "near_edge": w.near_edge}
                               for start, w in sorted(wins.items())}
                        for zone, wins in self.windows.items()},
        }
        if self.shards is not None:
            out["shards"] = self.shards
        return out

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())


# ---- services.json -------------------------------------------------------------------------------

STACK_WHAT = "running stack record (services.json)"


@dataclass(frozen=True)
class StackRecord:
    """services.json: what `tbspark stack up` started. Each section is the JSON object the stack
    module that started the service wrote (see ``stack.services.stack_up``); absent when that
    service was not started."""

    kafka: Mapping[str, Any] | None = None
    platform: Mapping[str, Any] | None = None
    spark: Mapping[str, Any] | None = None

    @classmethod
    def load(cls, path: Path, hint: str | None = None) -> "StackRecord":
        hint = hint or f"start the stack with `tbspark stack up --state-dir {path.parent}`"
        f = _Fields(_read_object(path, STACK_WHAT, hint), STACK_WHAT, path, hint)
        kafka, platform, spark = (f.get(k, dict, None) for k in ("kafka", "platform", "spark"))
        if kafka is not None:
            _Fields(kafka, STACK_WHAT, path, hint, "kafka.").get("bootstrap", str)
        if platform is not None:
            _Fields(platform, STACK_WHAT, path, hint, "platform.").get("url", str)
        return cls(kafka, platform, spark)

    @classmethod
    def find(cls, state: StateDir) -> "StackRecord | None":
        """The record of ``state``'s stack, None when no stack was started there (a damaged
        record is still a StateError)."""
        if not state.services_file.exists():
            return None
        return cls.load(state.services_file, f"run `tbspark stack down --state-dir {state.root}` "
                                             "(it finds the services by PID), then `stack up` again")

    def to_json(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in (("kafka", self.kafka), ("platform", self.platform),
                                        ("spark", self.spark)) if v is not None}

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())
