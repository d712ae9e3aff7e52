"""What enters the rule engine for a device publish (contract §6.5): one typed message per payload
element with deviceName/deviceType/ts metadata, whichever parser path the payload takes."""

import pytest

from tbspark.platform.transport import device_api as api


class Dev:
    id, name, type, tenant_id, customer_id, profile_id = "id1", "Wind Turbine 1", "WeatherStation", "t", "c", "p"


@pytest.mark.parametrize("payload,data", [
    (b'{"windSpeed":"42"}', {"windSpeed": 42}),                      # the tutorial's string → LONG
    (b'[{"windSpeed":"42"}]', {"windSpeed": 42}),                    # tb-mqtt-client wraps in an array
    (b'{"a":"33.5","b":33.0,"c":true,"d":"abc","e":{"x":1}}', {"a": 33.5, "b": 33.0, "c": True, "d": "abc", "e": {"x": 1}}),
    (b'{"n":1e5,"m":1.5e2}', {"n": 100000, "m": 150}),                 # exponent spelling → LONG
    (b'{"skip":null,"keep":1}', {"keep": 1}),                          # null silently skipped
    (b'{"big":123456789012345678901234}', {"big": "123456789012345678901234"}),
    (b'{"ts":7}', {"ts": 7}),                                           # ts without values is a key
])
def test_flat_payloads_become_one_typed_message(payload, data):
    msgs = api.telemetry_msgs(Dev, payload, 1_000)
    assert len(msgs) == 1
    assert msgs[0].data == data
    assert msgs[0].metadata == {"deviceName": "Wind Turbine 1", "deviceType": "WeatherStation", "ts": "1000"}
    assert msgs[0].type == "POST_TELEMETRY_REQUEST" and msgs[0].originator == ("DEVICE", "id1")


def test_array_elements_are_not_merged_and_keep_their_ts():
    msgs = api.telemetry_msgs(Dev, b'[{"ts":5,"values":{"a":1}},{"ts":5,"values":{"b":"2"}},{"c":3}]', 1_000)
    assert [(m.metadata["ts"], m.data) for m in msgs] == [("5", {"a": 1}), ("5", {"b": 2}), ("1000", {"c": 3})]


@pytest.mark.parametrize("payload", [b"{windSpeed: 1", b"not json", b'{"a":1,}', b"[1,2]", b'"text"'])
def test_malformed_or_wrong_shape_raises_value_error(payload):
    with pytest.raises(ValueError):
        api.telemetry_msgs(Dev, payload, 1_000)


def test_attributes_message_and_array_rejected():
    msg = api.attributes_msg(Dev, b'{"geoZone":"Zone A","fw":"1.0"}', 1_000)
    assert msg.type == "POST_ATTRIBUTES_REQUEST" and msg.data == {"geoZone": "Zone A", "fw": 1.0}
    assert msg.metadata["notifyDevice"] == "false"
    with pytest.raises(ValueError):
        api.attributes_msg(Dev, b'[{"a":1}]', 1_000)


def test_attribute_request_answers_sections_present_only():
    class Store:
        def get_attributes(self, etype, eid, scope, keys=None):
            rows = {"CLIENT_SCOPE": {"geoZone": ("STRING", "Zone A", 1)}, "SHARED_SCOPE": {}}[scope]
            return {k: v for k, v in rows.items() if keys is None or k in keys}
    assert api.attribute_response(Store(), "id1", b'{"clientKeys":"geoZone,missing","sharedKeys":"x"}') == \
        {"client": {"geoZone": "Zone A"}}
    assert api.attribute_response(Store(), "id1", b"{}") == {"client": {"geoZone": "Zone A"}}


# Device-timestamped payloads as the fleet simulator and tb-mqtt-client send them, and the shapes
# around them that must leave the fast path: every one gives what the full parser gives.
TS_FORMS = [
    b'{"ts":1700000000000,"values":{"windSpeed":42.3}}',
    b'{"ts":1700000000000,"values":{"windSpeed":"33","geoZone":"Zone A","on":true,"n":7}}',
    b'{"values":{"a":1.5},"ts":1700000000001}',
    b'{"ts":1700000000000,"values":{}}',
    b'{"ts":"1700000000000","values":{"a":1}}',                   # ts as text
    b'{"ts":1.7e12,"values":{"a":1}}',                             # ts as an exponent
    b'{"ts":1700000000000,"values":{"a":4.2e1,"b":1.5E+3}}',       # exponent spelling → LONG
    b'{"ts":1700000000000,"values":{"a":0.12345678901234567}}',    # 17 decimals: the spelling counts
    b'{"ts":1700000000000,"values":{"a":123456789012345678901234}}',
    b'{"ts":1700000000000,"values":{"a":null,"b":2}}',
    b'{"ts":1700000000000,"values":{"a":{"x":[1,2.5]}}}',
    b'{"ts":1700000000000,"values":{"ts":5,"values":{"a":1}}}',   # keys named ts and values inside
    b'{"ts":1700000000000,"values":{"a":-0.0,"b":1e-7,"c":123456.75}}',
    b'[{"ts":1700000000000,"values":{"windSpeed":42.3}}]',
    b'{"windSpeed":42.3,"e1":2.5,"values":1}',
]


@pytest.mark.parametrize("payload", TS_FORMS)
def test_device_timestamped_payloads_equal_the_full_parser(payload):
    from tbspark.platform import values
    msgs = api.telemetry_msgs(Dev, payload, 1_000)
    # The full parser: the spelling-aware decoder, then the generic typing of each element.
    expect = [(api._data_of(kv), str(ts)) for ts, kv in values.parse_telemetry(values.loads(payload), 1_000)]
    got = [(m.data, m.metadata["ts"]) for m in msgs]
    assert got == expect
    assert [[type(v) for v in d.values()] for d, _ in got] == [[type(v) for v in d.values()] for d, _ in expect]
    assert all(m.metadata["deviceName"] == "Wind Turbine 1" and m.ts == 1_000 for m in msgs)


def test_message_data_with_floats_is_the_json_modules_text():
    # data_bytes takes orjson's text for floats without a scan where both write the same digits.
    import json
    import random
    import struct

    from tbspark.platform.rules.msg import TbMsg
    rng = random.Random(11)
    floats = [round(rng.gauss(42, 6), 1) for _ in range(2000)] + [rng.uniform(-1e6, 1e6) for _ in range(2000)]
    floats += [10 ** rng.uniform(-6, 18) * rng.choice([1, -1]) for _ in range(2000)]
    floats += [v for v in (struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(2000))
               if v == v and abs(v) != float("inf")]
    floats += [0.0, -0.0, 1e-4, 9.999e-5, 1e16, 9999999999999998.0, 5e-324, 1.7976931348623157e308]
    for v in floats:
        msg = TbMsg("POST_TELEMETRY_REQUEST", ("DEVICE", "d"), {"windSpeed": v, "geoZone": "Zone A"}, {})
        assert msg.data_bytes() == json.dumps(msg.data, separators=(",", ":"), ensure_ascii=False).encode()
