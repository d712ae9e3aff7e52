"""The session's telemetry fast path (a PUBLISH to v1/devices/me/telemetry handled without the generic
Publish object) must be invisible: for every kind of telemetry PUBLISH, the messages handed to the
engine, the bytes written back and whether the session closes are the same as on the generic path."""

from __future__ import annotations

import pytest

from tbspark.mqtt import codec as c
from tbspark.platform.transport import session as session_mod
from tests.unit.test_topic_alias import TELEMETRY, connect

GOOD = b'{"windSpeed":"42","geoZone":"Zone A","t":1.5}'
BAD = b"{windSpeed: oops"

CASES = [
    # (protocol level, qos, topic, payload, properties)
    (5, 1, TELEMETRY, GOOD, None),
    (5, 0, TELEMETRY, GOOD, None),
    (4, 1, TELEMETRY, GOOD, None),
    (4, 0, TELEMETRY, GOOD, None),
    (4, 1, TELEMETRY, b"[" + GOOD + b"]", None),
    (4, 1, TELEMETRY, b'{"ts":1700000000000,"values":{"a":1}}', None),
    (5, 1, TELEMETRY, b"{}", None),                                # nothing to store: PUBACK at once
    (5, 1, TELEMETRY, BAD, None),                                  # PUBACK 0x99, the session stays
    (5, 0, TELEMETRY, BAD, None),                                  # DISCONNECT 0x99
    (4, 1, TELEMETRY, BAD, None),                                  # closed
    (5, 1, TELEMETRY, GOOD, {c.PROP_CONTENT_TYPE: "application/json"}),   # other properties: ignored
    (5, 1, TELEMETRY, GOOD, {c.PROP_USER_PROPERTY: [("k", "v")]}),
    (5, 1, TELEMETRY + "/x", GOOD, None),                          # a longer topic is not telemetry
    (4, 1, "v1/devices/me/telemetr", GOOD, None),
    (5, 1, "v2/t", GOOD, None),
]


def run(case, fast: bool, monkeypatch):
    level, qos, topic, payload, props = case
    if not fast:
        monkeypatch.setattr(session_mod.MqttSession, "_fast_telemetry", lambda self, f, b, o: False)
    s, server, transport, _ = connect(level)
    s.data_received(c.encode_publish(topic, payload, qos, 7, protocol_level=level, properties=props))
    msgs = [(m.type, m.originator, m.data, m.metadata, m.ts) for m in server.submitted]
    monkeypatch.undo()
    return msgs, transport.data, transport.closed, server.messages, server.malformed, server.unknown_topic


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"v{case[0]}-q{case[1]}-{case[2]}-{case[3][:8]!r}")
def test_fast_path_matches_generic_path(case, monkeypatch):
    monkeypatch.setattr(session_mod.time, "time", lambda: 1_700_000_000.5)
    fast = run(case, True, monkeypatch)
    monkeypatch.setattr(session_mod.time, "time", lambda: 1_700_000_000.5)
    generic = run(case, False, monkeypatch)
    assert fast == generic
    assert fast[3] == 1  # counted once


def test_fast_path_is_taken_for_plain_and_aliased_telemetry(monkeypatch):
    """Guards the point of the fast path: the generic decoder is not called for telemetry sent by
    name or through an alias mapped to it, but still is for the PUBLISH that sets the alias."""
    s, server, transport, _ = connect(c.MQTT_5)
    calls = []
    real = c.decode_publish
    monkeypatch.setattr(c, "decode_publish", lambda *a: calls.append(1) or real(*a))
    s.data_received(c.encode_publish(TELEMETRY, GOOD, 1, 1, protocol_level=5))
    assert calls == []
    s.data_received(c.encode_publish(TELEMETRY, GOOD, 1, 2, protocol_level=5,
                                     properties={c.PROP_TOPIC_ALIAS: 3}))
    assert calls == [1]
    s.data_received(c.encode_publish("", GOOD, 1, 3, protocol_level=5, properties={c.PROP_TOPIC_ALIAS: 3}))
    assert calls == [1]
    assert len(server.submitted) == 3 and not transport.closed
    acks = [c.decode_packet(t, f, b, 5) for t, f, b in c.StreamDecoder().feed(transport.data)]
    assert [(a.packet_id, a.reason_code) for a in acks] == [(1, 0), (2, 0), (3, 0)]


def test_alias_mapped_to_another_topic_is_not_taken_as_telemetry():
    s, server, transport, _ = connect(c.MQTT_5)
    s.data_received(c.encode_publish("v1/devices/me/attributes", b'{"fw":"1"}', 1, 1, protocol_level=5,
                                     properties={c.PROP_TOPIC_ALIAS: 4}))
    s.data_received(c.encode_publish("", b'{"fw":"2"}', 1, 2, protocol_level=5, properties={c.PROP_TOPIC_ALIAS: 4}))
    assert [m.type for m in server.submitted] == ["POST_ATTRIBUTES_REQUEST"] * 2


def test_payload_parser_skips_the_scan_only_where_no_spelling_can_matter():
    """A flat object of text, integers and booleans is taken from orjson as is (strings that look like
    exponents, NaN or long digits are only text); anything holding a number whose spelling matters
    still goes to the spelling-aware parser, and string digits become LONG without the regex."""
    import json

    from tbspark.platform.transport import device_api as api

    plain = b'{"s":"1e5","n":"NaN","d":"12345678901234567890","i":9223372036854775807,"b":true}'
    assert api.loads(plain) == json.loads(plain) and type(api.loads(plain)["i"]) is int
    # 1e5 as a number is ThingsBoard's LONG 100000 (its spelling), a 20-digit integer stays exact
    assert api.loads(b'{"a":1e5}') == {"a": 100000} and type(api.loads(b'{"a":1e5}')["a"]) is int
    assert api.loads(b'{"a":18446744073709551616}') == {"a": 18446744073709551616}
    assert api.loads(b'{"a":NaN}') == {"a": "NaN"}  # Gson (lenient) reads NaN as text
    with pytest.raises(ValueError):
        api.loads(b'{"a":1} x')

    class Dev:
        id, name, type, tenant_id, customer_id, profile_id = "d", "D", "T", "t", None, None

    data = api.telemetry_msgs(Dev(), b'{"a":"33","b":"0042","c":"-5","d":"1.50","e":"\xd9\xa3","f":"99999999999999999999"}',
                              1)[0].data
    assert data == {"a": 33, "b": 42, "c": -5, "d": 1.5, "e": "\u0663", "f": "99999999999999999999"}
    assert [type(data[k]) for k in "abcdef"] == [int, int, int, float, str, str]
