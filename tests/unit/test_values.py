"""Value typing of contract §5.5 (JSON_TYPE_CAST_ENABLED=true): one case per row of the table."""

from __future__ import annotations

import pytest

from tbspark.platform.values import (
    PayloadError, java_double, loads, parse_attributes, parse_telemetry, render, typed,
)


def kind_of(json_text: str):
    return typed(loads(json_text))


@pytest.mark.parametrize("text, expected", [
    # true / false → BOOLEAN
    ("true", ("BOOLEAN", True)), ("false", ("BOOLEAN", False)),
    # integral, not a plain decimal, fits int64 → LONG
    ("33", ("LONG", 33)), ("-5", ("LONG", -5)), ("1e5", ("LONG", 100000)), ("1.5e2", ("LONG", 150)),
    ("9223372036854775807", ("LONG", 9223372036854775807)),
    # plain decimal with a '.', or non-integral → DOUBLE (33.0 stays DOUBLE)
    ("33.0", ("DOUBLE", 33.0)), ("21.5", ("DOUBLE", 21.5)), ("1.25e1", ("DOUBLE", 12.5)),
    # integral beyond int64, or more than 16 decimals → STRING (plain decimal text)
    ("9223372036854775808", ("STRING", "9223372036854775808")),
    ("1.12345678901234567", ("STRING", "1.12345678901234567")),
    ("1e20", ("STRING", "100000000000000000000")),
    # parsable strings become numbers
    ('"33"', ("LONG", 33)), ('"-1"', ("LONG", -1)), ('"33.5"', ("DOUBLE", 33.5)),
    ('"000012300007"', ("LONG", 12300007)),
    # exponent, hex, booleans-as-text, padded, trailing dot → STRING unchanged
    ('"1e5"', ("STRING", "1e5")), ('"0x1A"', ("STRING", "0x1A")), ('"true"', ("STRING", "true")),
    ('"abc"', ("STRING", "abc")), ('" 33"', ("STRING", " 33")), ('"33."', ("STRING", "33.")),
    # object or array → JSON (compact text)
    ('{"a": 1}', ("JSON", '{"a":1}')), ("[1, 2]", ("JSON", "[1,2]")),
    # null → no value
    ("null", (None, None)),
])
def test_value_typing_table(text, expected):
    assert kind_of(text) == expected


@pytest.mark.parametrize("kind, value, loose, strict", [
    ("DOUBLE", 21.0, "21.0", 21.0), ("LONG", 33, "33", 33), ("BOOLEAN", True, "true", True),
    ("BOOLEAN", False, "false", False), ("STRING", "abc", "abc", "abc"), ("JSON", '{"a":1}', '{"a":1}', {"a": 1}),
    ("DOUBLE", 1e7, "1.0E7", 1e7), ("DOUBLE", 0.001, "0.001", 0.001),
])
def test_render_as_rest_returns_it(kind, value, loose, strict):
    assert render(kind, value, False) == loose
    assert render(kind, value, True) == strict


@pytest.mark.parametrize("d, text", [(21.0, "21.0"), (123456.789, "123456.789"), (1.234e-5, "1.234E-5"),
                                     (-2.5e10, "-2.5E10"), (0.0, "0.0")])
def test_java_double_to_string(d, text):
    assert java_double(d) == text


def test_three_telemetry_forms():
    now = 5
    assert parse_telemetry(loads('{"t": 26, "h": "87"}'), now) == [(5, {"t": ("LONG", 26), "h": ("LONG", 87)})]
    assert parse_telemetry(loads('{"ts": 1634712287000, "values": {"t": 26.5}}'), now) == [
        (1634712287000, {"t": ("DOUBLE", 26.5)})]
    assert parse_telemetry(loads('[{"ts": 1, "values": {"t": 1}}, {"t": 2}]'), now) == [
        (1, {"t": ("LONG", 1)}), (5, {"t": ("LONG", 2)})]


def test_ts_without_values_is_flat():
    # ThingsBoard stores a key called "ts" in that case.
    assert parse_telemetry(loads('{"ts": 7, "t": 1}'), 5) == [(5, {"ts": ("LONG", 7), "t": ("LONG", 1)})]


def test_nulls_skipped_on_device_path_refused_on_rest():
    assert parse_telemetry(loads('{"a": null, "b": 1}'), 5) == [(5, {"b": ("LONG", 1)})]
    with pytest.raises(PayloadError, match=r"^Can't parse value: null$"):
        parse_telemetry(loads('{"a": null}'), 5, skip_nulls=False)


@pytest.mark.parametrize("text, message", [
    ("[1]", "Can't parse value: 1"), ('"x"', 'Can\'t parse value: "x"'), ("5", "Can't parse value: 5"),
    ('{"ts": 1, "values": 3}', "Not a JSON Object: 3"),
])
def test_bad_telemetry_shapes(text, message):
    with pytest.raises(PayloadError) as err:
        parse_telemetry(loads(text), 0)
    assert str(err.value) == message


def test_attributes_object_only():
    assert parse_attributes(loads('{"geoZone": "Zone A", "threshold": 20}')) == {
        "geoZone": ("STRING", "Zone A"), "threshold": ("LONG", 20)}
    with pytest.raises(PayloadError):
        parse_attributes(loads('[{"a": 1}]'))


def test_invalid_json_is_an_error_and_lenient_forms_parse_as_gson_does():
    for bad in ('{"a": 1} x', '{"a": 1,}', "{a:1"):
        with pytest.raises(ValueError):
            loads(bad)
    # ThingsBoard's Gson is lenient (tests/differential/test_lenient_json.py has the recorded cases).
    assert loads("{a:1}") == {"a": 1} and loads('{"a": NaN}') == {"a": "NaN"}


def test_device_payload_parser_reads_like_the_json_module():
    """The fast JSON path (orjson when installed) must parse device payloads as the json module does:
    same values and same Python types (a 20-digit integer stays an int, not a float)."""
    import json

    from tbspark.platform.transport import device_api as api

    payloads = [b'{"windSpeed":"42"}', b'{"a":18446744073709551616,"b":-9223372036854775809}',
                b'[{"t":21.5,"ok":true,"n":null,"s":"\\u00e9"}]', b'\xef\xbb\xbf{"a":1}',
                b'{"a":1,"a":2}', b'{"x":0.1234567890123456}']
    for p in payloads:
        got, want = api.loads(p), json.loads(p)
        assert got == want and json.dumps(got) == json.dumps(want), p
    assert api.loads(b'{"a":"x\x01"}') == {"a": "x\x01"}  # Gson takes raw control characters
    # A lone surrogate decodes in the json module but can be neither stored nor forwarded: refused.
    for bad in (b'{"a":1,', b'\xff', b'{"a":"\\ud800"}', b'{"k\\udfff":1}'):
        with pytest.raises(ValueError):
            api.loads(bad)
