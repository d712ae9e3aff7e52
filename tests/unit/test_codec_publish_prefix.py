"""publish_prefix: the bytes before a PUBLISH's payload, as the simulator's hot path builds
packets — they must be exactly what encode_publish (the codec's single source of truth) makes."""

from __future__ import annotations

import pytest

from tbspark.mqtt import codec

# Remaining-length boundaries of the variable byte integer (1→2 bytes at 128, 2→3 at 16,384),
# reached by the payload alone and with the topic's bytes counted.
TOPIC = "v1/devices/me/telemetry"
TOPIC_FIELD = 2 + len(TOPIC)
LENGTHS = sorted({0, 1, 2, 50, 126, 127, 128, 129, 16383, 16384, 16385, 100_000,
                  127 - TOPIC_FIELD, 128 - TOPIC_FIELD, 129 - TOPIC_FIELD,
                  127 - TOPIC_FIELD - 2, 128 - TOPIC_FIELD - 2,
                  16383 - TOPIC_FIELD, 16384 - TOPIC_FIELD, 16384 - TOPIC_FIELD - 2,
                  2_097_151 - TOPIC_FIELD, 2_097_152 - TOPIC_FIELD} | set(range(0, 300, 7)))


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("topic", [TOPIC, "a", "v1/devices/me/attributes", "é/ü"])
def test_prefix_plus_payload_is_encode_publish(topic, qos):
    for n in LENGTHS:
        payload = bytes(i % 251 for i in range(n))
        pid = b"\x12\x34" if qos else b""
        assert codec.publish_prefix(topic, n, qos) + pid + payload == \
            codec.encode_publish(topic, payload, qos, 0x1234), (topic, qos, n)


def test_prefix_decodes_as_the_publish_it_announces():
    payload = b'{"ts":1700000000000,"values":{"windSpeed":"42"}}'
    pkt = codec.publish_prefix(TOPIC, len(payload), 1) + b"\x00\x07" + payload
    ((ptype, flags, body),) = codec.StreamDecoder().feed(pkt)
    pub = codec.decode_publish(flags, body)
    assert (ptype, pub.topic, pub.qos, pub.packet_id, pub.payload) == \
        (codec.PUBLISH, TOPIC, 1, 7, payload)


def test_retain_flag_and_bad_arguments():
    assert codec.publish_prefix("t", 3, 0, retain=True) + b"abc" == \
        codec.encode_publish("t", b"abc", 0, retain=True)
    with pytest.raises(ValueError, match="QoS"):
        codec.publish_prefix("t", 1, 3)
    with pytest.raises(ValueError, match=">= 0"):
        codec.publish_prefix("t", -1)
    with pytest.raises(ValueError, match="256 MB"):
        codec.publish_prefix("t", 268_435_455)
