"""YAML scenarios → typed, frozen models.

Parsing is strict: an unknown key, a wrong type or an impossible value is an error, and every error
names the file, the line and the key path, e.g.
``scenarios/x.yaml:14 devices[2].telemetry.windSpeed.rate_hz: must be > 0``.
``load_scenario`` never returns a half-valid scenario: it returns a ``Scenario`` or raises
``ScenarioError`` carrying every problem found. Every key is documented in docs/scenarios.md.
"""

from __future__ import annotations

import re
import string
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tbspark.errors import ScenarioError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- generators

_GENERATOR_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required fields, optional fields) besides kind, rate_hz, send_as
    "uniform_int": ({"min", "max"}, set()),
    "uniform_float": ({"min", "max"}, {"decimals"}),
    "normal": ({"mean", "stddev"}, {"min", "max", "decimals"}),
    "constant": ({"value"}, set()),
    "sine": ({"mean", "amplitude", "period_s"}, {"noise", "decimals"}),
}


class Generator(_Model):
    """How one telemetry key's values are made, and how often they are sent."""

    kind: Literal["uniform_int", "uniform_float", "normal", "constant", "sine"]
    rate_hz: float = Field(gt=0, le=1000)
    send_as: Literal["number", "string"] = "number"
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stddev: float | None = Field(default=None, ge=0)
    value: float | None = None
    amplitude: float | None = Field(default=None, ge=0)
    period_s: float | None = Field(default=None, gt=0)
    noise: float | None = Field(default=None, ge=0)
    decimals: int | None = Field(default=None, ge=0, le=12)

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> "Generator":
        required, optional = _GENERATOR_FIELDS[self.kind]
        given = {k for k in self.model_fields_set if k not in ("kind", "rate_hz", "send_as")}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"a {self.kind} generator needs {', '.join(missing)}")
        extra = sorted(given - required - optional)
        if extra:
            raise ValueError(f"{', '.join(extra)} not used by a {self.kind} generator")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be <= max ({self.max:g})")
        if self.kind == "uniform_int" and not (float(self.min).is_integer() and float(self.max).is_integer()):
            raise ValueError("a uniform_int generator needs whole-number min and max")
        return self


# --------------------------------------------------------------------------- devices

class ZonePattern(_Model):
    count: int = Field(gt=0, le=100_000)
    name: str = "Zone {j}"
    start: int = 1

    def names(self) -> list[str]:
        return [self.name.format(j=j) for j in range(self.start, self.start + self.count)]


class DeviceGroup(_Model):
    """One device, or ``count`` devices named by a pattern such as ``Turbine {i:04d}``."""

    name: str = Field(min_length=1)
    count: int = Field(default=1, gt=0, le=1_000_000)
    start: int = 1
    type: str = Field(default="WeatherStation", min_length=1)
    zone: str | None = Field(default=None, min_length=1)
    zones: list[str] | ZonePattern | None = None
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    telemetry: dict[str, Generator] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_pattern(cls, v: str) -> str:
        fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        if any(f != "i" for f in fields):
            raise ValueError("the only placeholder a device name may use is {i}")
        return v

    @model_validator(mode="after")
    def _zones_and_count(self) -> "DeviceGroup":
        if (self.zone is None) == (self.zones is None):
            raise ValueError("give exactly one of zone or zones")
        if isinstance(self.zones, list) and not self.zones:
            raise ValueError("zones must not be empty")
        if self.count > 1 and "{i" not in self.name:
            raise ValueError("a group with count > 1 needs {i} in its name, e.g. 'Turbine {i:04d}'")
        if self.count > 1 or "{i" in self.name:
            try:
                self.name.format(i=self.start)
            except (ValueError, IndexError, KeyError) as exc:
                raise ValueError(f"name pattern {self.name!r} cannot be formatted: {exc}") from None
        for reserved in ("deviceType", "geoZone"):
            if reserved in self.attributes:
                raise ValueError(f"attribute {reserved} is set from type/zone; do not repeat it")
        return self

    def zone_names(self) -> list[str]:
        if self.zone is not None:
            return [self.zone]
        if isinstance(self.zones, ZonePattern):
            return self.zones.names()
        return list(self.zones or [])

    def device_names(self) -> list[str]:
        if self.count == 1 and "{i" not in self.name:
            return [self.name]
        return [self.name.format(i=i) for i in range(self.start, self.start + self.count)]


class DeviceSpec(_Model):
    """One concrete device after expanding its group."""

    name: str
    type: str
    zone: str
    attributes: dict[str, str | int | float | bool]
    telemetry: dict[str, Generator]


# --------------------------------------------------------------------------- sections

class PlatformSection(_Model):
    kind: Literal["embedded", "thingsboard"] = "embedded"
    url: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int | None = Field(default=None, gt=0, lt=65536)
    username: str | None = None
    password: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/") if v else v


class KafkaSection(_Model):
    bootstrap: str | None = None
    bootstrap_for_platform: str | None = None
    topic: str = Field(default="weather-stations-data", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(default=1, ge=1, le=1000)
    dlq_topic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$")

    @model_validator(mode="after")
    def _default_dlq(self) -> "KafkaSection":
        if self.dlq_topic is None:
            object.__setattr__(self, "dlq_topic", f"{self.topic}.dlq")
        return self


class SimulationSection(_Model):
    duration_s: float = Field(default=60.0, gt=0)
    messages: int | None = Field(default=None, gt=0)
    qos: Literal[0, 1] = 1
    timestamps: Literal["device", "server"] = "device"
    ramp_per_s: float = Field(default=1000.0, gt=0)
    seed: int | None = None
    engine: Literal["asyncio", "paho"] = "asyncio"


class Metrics(_Model):
    avg: str = "windSpeed"
    count: str = "windSpeedCount"
    min: str = "windSpeedMin"
    max: str = "windSpeedMax"

    @model_validator(mode="after")
    def _distinct(self) -> "Metrics":
        names = [self.avg, self.count, self.min, self.max]
        if len(set(names)) != 4:
            raise ValueError("the four metric keys must differ")
        return self


class AggregationSection(_Model):
    window_s: float = Field(default=10.0, gt=0)
    watermark_s: float = Field(default=5.0, ge=0)
    value_key: str = Field(default="windSpeed", min_length=1)
    zone_key: str = Field(default="geoZone", min_length=1)
    sink: Literal["rest", "gateway"] = "rest"
    asset_type: str = Field(default="WeatherStation", min_length=1)
    gateway_device: str = Field(default="Analytics Gateway", min_length=1)
    metrics: Metrics = Field(default_factory=Metrics)
    mode: Literal["event_time", "processing_time"] = "event_time"
    output_mode: Literal["update", "append"] = "update"
    trigger_s: float = Field(default=1.0, gt=0)
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
    shuffle_partitions: int = Field(default=2, ge=1)


class ZoneExpectation(_Model):
    mean: float
    tolerance: float = Field(ge=0)


class Expectations(_Model):
    zones: dict[str, ZoneExpectation] = Field(default_factory=dict)
    exact: bool = True


# --------------------------------------------------------------------------- scenario

class Scenario(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    platform: PlatformSection = Field(default_factory=PlatformSection)
    kafka: KafkaSection = Field(default_factory=KafkaSection)
    devices: list[DeviceGroup] = Field(min_length=1)
    simulation: SimulationSection = Field(default_factory=SimulationSection)
    aggregation: AggregationSection = Field(default_factory=AggregationSection)
    expectations: Expectations = Field(default_factory=Expectations)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        seen: set[str] = set()
        for g in self.devices:
            for n in g.device_names():
                if n in seen:
                    raise ValueError(f"device name {n!r} appears twice")
                seen.add(n)
        zones = set(self.zones())
        unknown = sorted(set(self.expectations.zones) - zones)
        if unknown:
            raise ValueError(f"expectations name zones no device is in: {', '.join(unknown)}")
        if not any(self.aggregation.value_key in g.telemetry for g in self.devices):
            raise ValueError(f"no device sends the aggregated key {self.aggregation.value_key!r}")
        return self

    def expand_devices(self) -> list[DeviceSpec]:
        return list(self._expanded)

    @cached_property
    def _expanded(self) -> tuple[DeviceSpec, ...]:
        out: list[DeviceSpec] = []
        for g in self.devices:
            zones = g.zone_names()
            for k, name in enumerate(g.device_names()):
                zone = zones[k % len(zones)]
                attrs: dict[str, Any] = {"deviceType": g.type, "geoZone": zone, **g.attributes}
                out.append(DeviceSpec(name=name, type=g.type, zone=zone, attributes=attrs, telemetry=g.telemetry))
        return tuple(out)

    def zones(self) -> list[str]:
        ordered: dict[str, None] = {}
        for g in self.devices:
            zs = g.zone_names()
            for k in range(min(g.count, len(zs))):
                ordered.setdefault(zs[k], None)
        return list(ordered)

    def device_types(self) -> list[str]:
        return list(dict.fromkeys(g.type for g in self.devices))

    def expected_rate_hz(self) -> float:
        """Messages per second of the whole fleet (keys with equal rate_hz share a message)."""
        return sum(g.count * sum({gen.rate_hz for gen in g.telemetry.values()}) for g in self.devices)

    def device_count(self) -> int:
        return sum(g.count for g in self.devices)


# --------------------------------------------------------------------------- loading

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key missing",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in the YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> list[tuple[tuple, int]]:
    found: list[tuple[tuple, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.value in seen:
                found.append((path + (key_node.value,), key_node.start_mark.line + 1))
            seen.add(key_node.value)
            found += _duplicate_keys(value_node, path + (key_node.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, path + (i,))
    return found


def _format_path(path: tuple) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + str(seg)
    return out or "(top level)"


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union/type tags from an error location, keeping real keys and indexes."""
    path: list = []
    cur = data
    for seg in loc:
        if isinstance(cur, dict) and seg in cur:
            path.append(seg)
            cur = cur[seg]
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
            path.append(seg)
            cur = cur[seg]
        elif isinstance(cur, dict) and isinstance(seg, str) and seg.isidentifier() and seg not in (
            "list[str]", "ZonePattern"
        ) and not any(c in seg for c in "[]"):
            # a key that is absent (missing) or unknown: keep it as the last segment
            if seg in ("str", "int", "float", "bool", "function-after", "function-before"):
                continue
            path.append(seg)
            cur = None
        else:
            continue
    return tuple(path)


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _message(err: dict) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"has characters that are not allowed (pattern {ctx.get('pattern')})"
    if kind in ("too_short",) and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def parse_scenario(text: str, source: str | Path = "<string>") -> Scenario:
    """Parse scenario YAML text; ``source`` names the file in error messages."""
    where = str(source)
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError("scenario is not valid YAML", [f"{where}{line} (YAML): {problem}"]) from None
    if root is None:
        raise ScenarioError("scenario is empty", [f"{where}:1 (top level): the file is empty"])
    dups = _duplicate_keys(root)
    if dups:
        raise ScenarioError("duplicate keys", [f"{where}:{ln} {_format_path(p)}: key appears twice" for p, ln in dups])
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ScenarioError("scenario must be a mapping", [f"{where}:1 (top level): must be a mapping of keys"])
    lines = _line_index(root)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        issues: list[tuple[int, str]] = []
        for err in exc.errors():
            path = _clean_loc(err["loc"], data)
            line = None
            probe = path
            while line is None and True:
                line = lines.get(probe)
                if not probe:
                    break
                probe = probe[:-1]
            issues.append((line or 1, f"{where}:{line or 1} {_format_path(path)}: {_message(err)}"))
        ordered = [text for _, text in sorted(issues, key=lambda item: item[0])]
        raise ScenarioError(f"{where} is not a valid scenario", list(dict.fromkeys(ordered))) from None
    return scenario.model_copy(update={"source": Path(source)}) if source != "<string>" else scenario


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file; raises ScenarioError naming file, line and key."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"no scenario file at {p}", [f"{p}: no such file"]) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read {p}", [f"{p}: cannot read ({exc.strerror})"]) from None
    return parse_scenario(text, path)


def packaged_scenario(name: str = "wind-turbines") -> Path:
    """The path of a scenario shipped with tbspark (repo's scenarios/ or package data)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "scenarios" / f"{name}.yaml", here / "scenarios" / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    raise ScenarioError(f"no packaged scenario named {name!r}", [f"{name}: no such packaged scenario"])


def summarize(sc: Scenario) -> dict[str, Any]:
    """The facts `tbspark scenario check` prints."""
    return {
        "name": sc.name,
        "source": str(sc.source) if sc.source else None,
        "devices": sc.device_count(),
        "device_groups": len(sc.devices),
        "device_types": sc.device_types(),
        "zones": sc.zones(),
        "expected_msg_per_s": sc.expected_rate_hz(),
        "topic": sc.kafka.topic,
        "partitions": sc.kafka.partitions,
        "window_s": sc.aggregation.window_s,
        "watermark_s": sc.aggregation.watermark_s,
        "sink": sc.aggregation.sink,
        "duration_s": sc.simulation.duration_s,
        "qos": sc.simulation.qos,
        "timestamps": sc.simulation.timestamps,
    }
