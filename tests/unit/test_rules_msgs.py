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


@pytest.mark.parametrize("payload", [b"{windSpeed: 1", b"not json", b'{"a":NaN}', b"[1,2]", b'"text"'])
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
