"""The MQTT codec on its own: round trips, framing across reads, and the errors a broken client causes."""

import pytest

from tbspark.mqtt import codec as c


def frame(data: bytes, level: int = c.MQTT_311):
    packets = c.StreamDecoder().feed(data)
    assert len(packets) == 1
    return c.decode_packet(*packets[0], protocol_level=level)


@pytest.mark.parametrize("level", [c.MQTT_311, c.MQTT_5])
def test_connect_round_trip_keeps_token_and_keepalive(level):
    props = {c.PROP_SESSION_EXPIRY: 0, c.PROP_RECEIVE_MAXIMUM: 100} if level == 5 else None
    pkt = frame(c.encode_connect("dev1", username="TOKEN", keep_alive=120, protocol_level=level,
                                 properties=props, will_topic="w", will_payload=b"bye"), level)
    assert (pkt.client_id, pkt.username, pkt.password, pkt.keep_alive, pkt.protocol_level) == \
        ("dev1", "TOKEN", None, 120, level)
    assert (pkt.will_topic, pkt.will_payload) == ("w", b"bye")
    if level == 5:
        assert pkt.properties == {c.PROP_SESSION_EXPIRY: 0, c.PROP_RECEIVE_MAXIMUM: 100}


@pytest.mark.parametrize("level", [c.MQTT_311, c.MQTT_5])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_round_trip(level, qos):
    props = {c.PROP_USER_PROPERTY: [("a", "b"), ("a", "c")]} if level == 5 else None
    raw = c.encode_publish("v1/devices/me/telemetry", '{"windSpeed":"42"}', qos=qos, packet_id=7 if qos else 0,
                           protocol_level=level, properties=props)
    pkt = frame(raw, level)
    assert pkt.topic == "v1/devices/me/telemetry"
    assert pkt.payload == b'{"windSpeed":"42"}'
    assert (pkt.qos, pkt.packet_id) == (qos, 7 if qos else 0)
    if level == 5:
        assert pkt.properties[c.PROP_USER_PROPERTY] == [("a", "b"), ("a", "c")]


def test_puback_forms():
    assert c.encode_puback(258) == b"\x40\x02\x01\x02"
    assert c.encode_puback(258, 0, c.MQTT_5) == b"\x40\x02\x01\x02"  # short success form
    pkt = frame(c.encode_puback(258, c.RC_PAYLOAD_FORMAT_INVALID, c.MQTT_5), c.MQTT_5)
    assert (pkt.kind, pkt.packet_id, pkt.reason_code) == (c.PUBACK, 258, 0x99)


@pytest.mark.parametrize("level", [c.MQTT_311, c.MQTT_5])
def test_subscribe_suback_unsubscribe(level):
    sub = frame(c.encode_subscribe(3, [("v1/devices/me/attributes", 1), ("x/#", 0)], level), level)
    assert sub.packet_id == 3 and sub.topics == [("v1/devices/me/attributes", 1), ("x/#", 0)]
    ack = frame(c.encode_suback(3, [1, 0x80], level), level)
    assert ack.reason_codes == [1, 0x80]
    uns = frame(c.encode_unsubscribe(4, ["x/#"], level), level)
    assert uns.filters == ["x/#"]
    assert frame(c.encode_unsuback(4, [0], level), level).packet_id == 4


def test_connack_and_disconnect_v5_carry_reason_and_properties():
    ack = frame(c.encode_connack(c.RC_BAD_USERNAME_PASSWORD, protocol_level=5,
                                 properties={c.PROP_MAXIMUM_PACKET_SIZE: 65536}), 5)
    assert ack.reason_code == 0x86 and ack.properties == {c.PROP_MAXIMUM_PACKET_SIZE: 65536}
    assert frame(c.encode_disconnect(0x99, 5), 5).reason_code == 0x99
    assert c.encode_disconnect() == b"\xe0\x00"
    assert frame(c.encode_pingreq()).kind == c.PINGREQ


def test_decoder_reassembles_packets_split_at_every_byte():
    stream = b"".join(c.encode_publish("t", "x" * n, qos=1, packet_id=n + 1) for n in (0, 5, 200, 20000))
    dec = c.StreamDecoder()
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i:i + 1])
    assert [len(c.decode_publish(f, b).payload) for _, f, b in got] == [0, 5, 200, 20000]
    assert dec.pending() == 0


def test_decoder_returns_every_packet_of_one_read():
    stream = c.encode_pingreq() * 3 + c.encode_publish("t", "1")
    assert [p[0] for p in c.StreamDecoder().feed(stream)] == [c.PINGREQ] * 3 + [c.PUBLISH]


def test_oversized_packet_rejected_from_its_header():
    dec = c.StreamDecoder(max_packet_size=1024)
    head = c.encode_publish("t", "x" * 2000)[:10]  # only the header has arrived
    with pytest.raises(c.MqttProtocolError) as err:
        dec.feed(head)
    assert err.value.reason_code == c.RC_PACKET_TOO_LARGE


@pytest.mark.parametrize("garbage", [b"\x00\x00", b"\x30\xff\xff\xff\xff\x01", b"\x10\x03\x00\x04M"])
def test_garbage_is_a_protocol_error(garbage):
    with pytest.raises(c.MqttProtocolError):
        for t, f, b in c.StreamDecoder().feed(garbage + b"\x00" * 8):
            c.decode_packet(t, f, b)


def test_connect_with_unknown_level_is_unsupported_version():
    raw = bytearray(c.encode_connect("x"))
    raw[8] = 9  # protocol level byte
    with pytest.raises(c.MqttProtocolError) as err:
        frame(bytes(raw))
    assert err.value.reason_code == c.RC_UNSUPPORTED_VERSION


def test_paho_encodes_what_we_decode():
    """Cross-check against an independent implementation: paho's own packet builder."""
    paho = pytest.importorskip("paho.mqtt.client")
    sent = []

    class Sock:
        def send(self, data):
            sent.append(bytes(data))
            return len(data)

        def close(self):
            pass

    cl = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    cl._sock = Sock()
    cl._state = paho._ConnectionState.MQTT_CS_CONNECTED
    cl.publish("v1/devices/me/telemetry", '{"a":1}', qos=1)
    cl.loop_write()
    pkt = frame(b"".join(sent), 5)
    assert (pkt.topic, pkt.payload, pkt.qos) == ("v1/devices/me/telemetry", b'{"a":1}', 1)
