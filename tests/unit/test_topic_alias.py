"""MQTT 5 topic aliases in the platform's session, without sockets: the CONNACK announces a Topic Alias
Maximum, a PUBLISH with topic + alias sets the mapping and later ones may send an empty topic; alias 0,
an alias above the maximum, or an alias never set close the session with MQTT 5's reason codes."""

from __future__ import annotations

import pytest

from tbspark.mqtt import codec as c
from tbspark.platform.store.models import Device
from tbspark.platform.transport.session import TOPIC_ALIAS_MAXIMUM, MqttSession

TELEMETRY = "v1/devices/me/telemetry"
DEVICE = Device(id="d1", tenant_id="t1", customer_id="c1", name="Turbine 1", type="WeatherStation",
                profile_id="p1", additional_info=None, token="TOKEN", created_time=0)


class FakeTransport:
    def __init__(self):
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name):
        return None


class FakeStore:
    def device_by_token(self, token):
        return DEVICE if token == "TOKEN" else None


class FakeServer:
    """What MqttSession uses of MqttServer; ``submitted`` collects the engine-bound messages."""

    max_packet_size = 65536

    def __init__(self):
        self.store = FakeStore()
        self.submitted = []
        self.bytes_in = self.bytes_out = self.errors = self.messages = self.rejected = 0
        self.malformed = self.unknown_topic = 0

    def on_open(self, s): pass
    def on_connected(self, s): pass
    def on_close(self, s): pass

    def submit(self, s, msgs, ack):
        self.submitted += msgs
        if ack:
            s.write(ack)


def packets(data: bytes, level: int) -> list:
    return [c.decode_packet(t, f, b, level) for t, f, b in c.StreamDecoder().feed(data)]


def connect(level: int = c.MQTT_5):
    server, transport = FakeServer(), FakeTransport()
    s = MqttSession(server)
    s.connection_made(transport)
    s.data_received(c.encode_connect("dev", username="TOKEN", protocol_level=level))
    connack = packets(transport.data, level)[0]
    transport.data = b""
    return s, server, transport, connack


def publish(s, topic: str, payload: bytes, alias: int | None, packet_id: int = 1) -> None:
    props = {c.PROP_TOPIC_ALIAS: alias} if alias is not None else None
    s.data_received(c.encode_publish(topic, payload, 1, packet_id, protocol_level=c.MQTT_5, properties=props))


def test_connack_announces_the_topic_alias_maximum():
    *_, connack = connect()
    assert connack.properties[c.PROP_TOPIC_ALIAS_MAXIMUM] == TOPIC_ALIAS_MAXIMUM > 0


def test_alias_set_with_a_topic_is_used_by_later_publishes_with_an_empty_topic():
    s, server, transport, _ = connect()
    publish(s, TELEMETRY, b'{"windSpeed": 1}', alias=TOPIC_ALIAS_MAXIMUM, packet_id=1)
    publish(s, "", b'{"windSpeed": 2}', alias=TOPIC_ALIAS_MAXIMUM, packet_id=2)
    publish(s, "", b'{"windSpeed": 3}', alias=TOPIC_ALIAS_MAXIMUM, packet_id=3)
    assert [m.data for m in server.submitted] == [{"windSpeed": 1}, {"windSpeed": 2}, {"windSpeed": 3}]
    acks = packets(transport.data, c.MQTT_5)
    assert [(a.packet_id, a.reason_code) for a in acks] == [(1, 0), (2, 0), (3, 0)]
    assert not transport.closed


def test_an_alias_can_be_remapped_to_another_topic():
    s, server, transport, _ = connect()
    publish(s, "v1/devices/me/attributes", b'{"fw": "1"}', alias=1)
    publish(s, TELEMETRY, b'{"windSpeed": 7}', alias=1, packet_id=2)
    publish(s, "", b'{"windSpeed": 8}', alias=1, packet_id=3)
    assert [m.data for m in server.submitted] == [{"fw": 1}, {"windSpeed": 7}, {"windSpeed": 8}]


@pytest.mark.parametrize("topic, alias, reason", [
    (TELEMETRY, 0, c.RC_TOPIC_ALIAS_INVALID),
    (TELEMETRY, TOPIC_ALIAS_MAXIMUM + 1, c.RC_TOPIC_ALIAS_INVALID),
    ("", 5, c.RC_PROTOCOL_ERROR),      # alias never set on this connection
    ("", None, c.RC_PROTOCOL_ERROR),   # empty topic and no alias at all
])
def test_bad_alias_disconnects_with_mqtt5_reason(topic, alias, reason):
    s, server, transport, _ = connect()
    publish(s, topic, b'{"windSpeed": 1}', alias=alias)
    assert transport.closed
    sent = packets(transport.data, c.MQTT_5)
    assert len(sent) == 1 and isinstance(sent[0], c.Disconnect) and sent[0].reason_code == reason
    assert server.submitted == []


def test_aliases_are_per_connection():
    s1, _, _, _ = connect()
    publish(s1, TELEMETRY, b'{"windSpeed": 1}', alias=2)
    s2, server2, transport2, _ = connect()
    publish(s2, "", b'{"windSpeed": 1}', alias=2)
    assert transport2.closed and server2.submitted == []


def test_mqtt311_empty_topic_stays_an_unknown_topic():
    s, server, transport, connack = connect(c.MQTT_311)
    assert c.PROP_TOPIC_ALIAS_MAXIMUM not in connack.properties  # 3.1.1 has no properties at all
    s.data_received(c.encode_publish("", b"{}", 1, 9))
    assert not transport.closed and server.unknown_topic == 1
