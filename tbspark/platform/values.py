"""ThingsBoard value typing (contract §5.5, JSON_TYPE_CAST_ENABLED=true), shared by REST and MQTT.

A typed value is ``(kind, value)`` with kind one of BOOLEAN, LONG, DOUBLE, STRING, JSON:
BOOLEAN → bool, LONG → int (int64), DOUBLE → float, STRING → str, JSON → compact JSON text (str).
Parse payload text with :func:`loads` (not ``json.loads``) so that ``1e5`` (LONG 100000) and
``33.0`` (DOUBLE) keep the distinction ThingsBoard makes from the number's spelling.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from tbspark.platform import lenient_json

BOOLEAN = "BOOLEAN"
LONG = "LONG"
DOUBLE = "DOUBLE"
STRING = "STRING"
JSON = "JSON"
KINDS = (BOOLEAN, LONG, DOUBLE, STRING, JSON)

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_MAX_SCALE = 16  # more decimals than this → STRING (JsonConverter's precision guard)

_COMPACT = (",", ":")
# ThingsBoard's KvUtils.validate: a key longer than this is refused (ts_kv_dictionary.key is varchar(255)).
MAX_KEY_LENGTH = 255
KEY_TOO_LONG = f"Validation error: key length must be equal or less than {MAX_KEY_LENGTH}"
KEY_EMPTY = "Key can't be null or empty"
# An entity's name and label (@Length on Device, Asset: 255 by default).
MAX_NAME_LENGTH = 255


class PayloadError(ValueError):
    """A telemetry/attribute payload ThingsBoard would reject; ``str()`` is ThingsBoard's message."""


class ValidationError(PayloadError):
    """A key or name ThingsBoard's validators refuse (DataValidationException: a bare 400 over REST)."""


def check_key(key: str) -> None:
    """ThingsBoard's key rules (KvUtils.validate): not blank, at most MAX_KEY_LENGTH characters."""
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationError(KEY_TOO_LONG)
    if not key or key.isspace():
        raise ValidationError(KEY_EMPTY)


def check_name(name: str, field: str = "name") -> None:
    """An entity name or label ThingsBoard's ConstraintValidator accepts (length only)."""
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"Validation error: {field} length must be equal or less than {MAX_NAME_LENGTH}")


def check_text(obj: Any) -> None:
    """Raise PayloadError when a string anywhere in a parsed JSON value (keys included) holds a lone
    UTF-16 surrogate (``"\\ud800"`` in the text): the json module decodes one, but no UTF-8 store,
    Kafka record or JSON answer can carry it. Only needed when the text had a ``\\u`` escape (UTF-8
    input cannot encode a surrogate)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("Invalid JSON: a string holds a lone UTF-16 surrogate") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class _NumText(str):
    """A JSON number that does not fit LONG/DOUBLE; stored as STRING with its plain text."""


def _parse_int(text: str) -> Any:
    n = int(text)
    return n if _I64_MIN <= n <= _I64_MAX else _NumText(text.lstrip("+"))


def _parse_float(text: str) -> Any:
    if "e" in text or "E" in text:
        try:
            d = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the JSON scanner only hands us valid numbers
            return float(text)
        if d == d.to_integral_value():
            # int() of 1e999999 runs for minutes (a one-packet DoS found by tests/fuzz): only a number
            # of at most 19 digits can fit a LONG, and a huge one keeps its own spelling.
            if d.adjusted() <= 18:
                n = int(d)
                if _I64_MIN <= n <= _I64_MAX:
                    return n
            if d.adjusted() > 4096:
                return _NumText(text)
            return _NumText(format(d.normalize(), "f"))
        return float(d)
    dot = text.find(".")
    if dot >= 0 and len(text) - dot - 1 > _MAX_SCALE:
        return _NumText(text)
    return float(text)


def _bad_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_bad_constant)


def loads(data: str | bytes | bytearray) -> Any:
    """Parse JSON text the way ThingsBoard's JsonConverter sees numbers. Raises ValueError."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")
    try:
        obj = _DECODER.decode(data)
    except RecursionError:  # "[[[[…" nested thousands deep (found by tests/fuzz): malformed, not a crash
        raise ValueError("JSON nested too deeply") from None
    except ValueError:  # not strict JSON: ThingsBoard's Gson parses leniently (off the hot path)
        obj = lenient_json.loads(data)
    if "\\u" in data:
        check_text(obj)
    return obj


# commons-lang ``NumberUtils.isParsable``: optional '-', digits, at most one '.', not ending in '.'.
PARSABLE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)").fullmatch


def _is_parsable(s: str) -> bool:
    return PARSABLE(s) is not None


def numeric_from_string(s: str) -> tuple[str, Any]:
    """Typed value of a string that :data:`PARSABLE` accepts (a LONG, a DOUBLE, or text when too long)."""
    if "." in s:
        frac = len(s) - s.index(".") - 1
        if frac > _MAX_SCALE:
            return STRING, s
        return DOUBLE, float(s)
    n = int(s)
    if _I64_MIN <= n <= _I64_MAX:
        return LONG, n
    return STRING, str(n)


def typed(value: Any) -> tuple[str | None, Any]:
    """ThingsBoard's stored type for one JSON value; ``(None, None)`` for null."""
    t = type(value)
    if t is bool:
        return BOOLEAN, value
    if t is int:
        if _I64_MIN <= value <= _I64_MAX:
            return LONG, value
        return STRING, str(value)
    if t is float:
        return DOUBLE, value
    if t is str:
        if _is_parsable(value):
            return numeric_from_string(value)
        return STRING, value
    if t is _NumText:
        return STRING, str(value)
    if value is None:
        return None, None
    if t is dict or t is list:
        return JSON, json.dumps(value, separators=_COMPACT, ensure_ascii=False)
    if isinstance(value, str):
        return STRING, str(value)
    raise PayloadError(f"Can't parse value: {value!r}")


def _gson_text(value: Any) -> str:
    """How Gson prints a JSON element in an error message (compact JSON)."""
    try:
        return json.dumps(value, separators=_COMPACT, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _typed_object(obj: dict, skip_nulls: bool) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    for key, raw in obj.items():
        check_key(key)
        kind, val = typed(raw)
        if kind is None:
            if skip_nulls:
                continue
            raise PayloadError(f"Can't parse value: {_gson_text(raw)}")
        out[key] = (kind, val)
    return out


def _as_long(raw: Any) -> int:
    """A ``ts``: an integer of 64 bits (Java's long, SQLite's INTEGER), whatever its spelling."""
    if type(raw) is int:
        n = raw
    elif type(raw) is float and raw == int(raw):
        n = int(raw)
    elif isinstance(raw, str) and _is_parsable(raw) and "." not in raw:
        n = int(raw)
    else:
        raise PayloadError(f"Can't parse value: {_gson_text(raw)}")
    if not _I64_MIN <= n <= _I64_MAX:
        raise PayloadError(f"Can't parse value: {raw if type(raw) is not str else _gson_text(raw)} "
                           "(ts is out of the 64-bit range)")
    return n


def _parse_object(obj: dict, now_ms: int, skip_nulls: bool, out: list) -> None:
    if "ts" in obj and "values" in obj:
        ts = _as_long(obj["ts"])
        values = obj["values"]
        if type(values) is not dict:
            raise PayloadError(f"Not a JSON Object: {_gson_text(values)}")
        out.append((ts, _typed_object(values, skip_nulls)))
    else:
        # ThingsBoard treats {"ts": ...} without "values" as flat: a key named "ts" is stored.
        out.append((now_ms, _typed_object(obj, skip_nulls)))


def parse_telemetry(obj: Any, now_ms: int, *, skip_nulls: bool = True) -> list[tuple[int, dict[str, tuple[str, Any]]]]:
    """The three telemetry body forms → ``[(ts, {key: (kind, value)})]`` (entries without keys dropped).

    ``skip_nulls``: the device APIs silently skip ``null`` values (default); REST passes False,
    which makes a null a PayloadError("Can't parse value: null") as in ThingsBoard.
    """
    out: list[tuple[int, dict]] = []
    if type(obj) is dict:
        _parse_object(obj, now_ms, skip_nulls, out)
    elif type(obj) is list:
        for element in obj:
            if type(element) is not dict:
                raise PayloadError(f"Can't parse value: {_gson_text(element)}")
            _parse_object(element, now_ms, skip_nulls, out)
    else:
        raise PayloadError(f"Can't parse value: {_gson_text(obj)}")
    return [entry for entry in out if entry[1]]


def parse_attributes(obj: Any, *, skip_nulls: bool = True) -> dict[str, tuple[str, Any]]:
    """An attributes body (JSON object only) → ``{key: (kind, value)}``."""
    if type(obj) is not dict:
        raise PayloadError(f"Can't parse value: {_gson_text(obj)}")
    return _typed_object(obj, skip_nulls)


def java_double(d: float) -> str:
    """Java's ``Double.toString``: ``21.0``, ``0.001``, ``1.0E7``, ``1.234E-5``, ``NaN``, ``Infinity``."""
    if d != d:
        return "NaN"
    if math.isinf(d):
        return "Infinity" if d > 0 else "-Infinity"
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    a = abs(d)
    if 1e-3 <= a < 1e7:
        s = repr(d)
        if "e" in s or "E" in s:  # pragma: no cover - repr stays positional in this range
            s = format(Decimal(s), "f")
        return s if "." in s else s + ".0"
    sign, digits, exp = Decimal(repr(d)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    e10 = exp + len(digits) - 1
    mant = ds[0] + "." + (ds[1:] or "0")
    return ("-" if sign else "") + f"{mant}E{e10}"


def render(kind: str | None, value: Any, strict: bool) -> Any:
    """A stored value as REST returns it: strings unless ``strict`` (useStrictDataTypes=true)."""
    if kind is None or value is None:
        return None
    if strict:
        if kind == JSON:
            return json.loads(value) if isinstance(value, str) else value
        if kind == BOOLEAN:
            return bool(value)
        return value
    if kind == DOUBLE:
        return java_double(float(value))
    if kind == LONG:
        return str(int(value))
    if kind == BOOLEAN:
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, separators=_COMPACT)


def render_typed(kind: str | None, value: Any) -> Any:
    """Attribute reads: always native JSON types (JSON values nested)."""
    return render(kind, value, True)
