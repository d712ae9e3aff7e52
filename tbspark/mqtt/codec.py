"""MQTT 3.1.1 and 5.0 packet codec: pure encode functions and an incremental stream decoder.

Shared by the embedded platform's transport (server side) and the simulator (client side); it imports
nothing from the platform. Protocol level 3 (MQIsdp 3.1) is read like 3.1.1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from tbspark.errors import MqttError

# Packet types (high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

MQTT_311 = 4
MQTT_5 = 5

# MQTT 5 reason codes used by the platform (names as in the spec).
RC_SUCCESS = 0x00
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPLEMENTATION_ERROR = 0x83
RC_UNSUPPORTED_VERSION = 0x84
RC_CLIENT_ID_INVALID = 0x85
RC_BAD_USERNAME_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_PAYLOAD_FORMAT_INVALID = 0x99

# MQTT 5 property identifiers → wire type.
_BYTE, _INT2, _INT4, _VARINT, _UTF8, _BIN, _PAIR = range(7)
PROP_PAYLOAD_FORMAT = 0x01
PROP_MESSAGE_EXPIRY = 0x02
PROP_CONTENT_TYPE = 0x03
PROP_RESPONSE_TOPIC = 0x08
PROP_CORRELATION_DATA = 0x09
PROP_SUBSCRIPTION_ID = 0x0B
PROP_SESSION_EXPIRY = 0x11
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_AUTH_METHOD = 0x15
PROP_AUTH_DATA = 0x16
PROP_REQUEST_PROBLEM_INFO = 0x17
PROP_WILL_DELAY = 0x18
PROP_REQUEST_RESPONSE_INFO = 0x19
PROP_RESPONSE_INFO = 0x1A
PROP_SERVER_REFERENCE = 0x1C
PROP_REASON_STRING = 0x1F
PROP_RECEIVE_MAXIMUM = 0x21
PROP_TOPIC_ALIAS_MAXIMUM = 0x22
PROP_TOPIC_ALIAS = 0x23
PROP_MAXIMUM_QOS = 0x24
PROP_RETAIN_AVAILABLE = 0x25
PROP_USER_PROPERTY = 0x26
PROP_MAXIMUM_PACKET_SIZE = 0x27
PROP_WILDCARD_SUB_AVAILABLE = 0x28
PROP_SUB_ID_AVAILABLE = 0x29
PROP_SHARED_SUB_AVAILABLE = 0x2A

_PROP_TYPES = {
    0x01: _BYTE, 0x02: _INT4, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BIN, 0x0B: _VARINT, 0x11: _INT4,
    0x12: _UTF8, 0x13: _INT2, 0x15: _UTF8, 0x16: _BIN, 0x17: _BYTE, 0x18: _INT4, 0x19: _BYTE,
    0x1A: _UTF8, 0x1C: _UTF8, 0x1F: _UTF8, 0x21: _INT2, 0x22: _INT2, 0x23: _INT2, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _INT4, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}
# Properties that may appear more than once: decoded into a list.
_REPEATABLE = {PROP_USER_PROPERTY, PROP_SUBSCRIPTION_ID}


class MqttProtocolError(MqttError):
    """A packet that breaks the protocol; ``reason_code`` is the MQTT 5 code to close with."""

    def __init__(self, message: str, reason_code: int = RC_MALFORMED):
        super().__init__(message, "check the client's MQTT implementation")
        self.reason_code = reason_code


# ---------------------------------------------------------------------------------------- packets

@dataclass(slots=True)
class Connect:
    client_id: str = ""
    protocol_level: int = MQTT_311
    protocol_name: str = "MQTT"
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    properties: dict = field(default_factory=dict)
    will_properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Connack:
    reason_code: int = 0
    session_present: bool = False
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    packet_id: int = 0
    retain: bool = False
    dup: bool = False
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``kind`` is the packet type)."""
    kind: int
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    topics: list  # [(filter, options byte)]; options & 3 = requested QoS
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    filters: list
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list = field(default_factory=list)
    properties: dict = field(default_factory=dict)


@dataclass(slots=True)
class Simple:
    """PINGREQ / PINGRESP (no body)."""
    kind: int


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------- primitives

def encode_varint(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _decode_varint(buf, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    for i in range(4):
        if pos >= len(buf):
            raise MqttProtocolError("truncated variable byte integer")
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult <<= 7
    raise MqttProtocolError("variable byte integer longer than 4 bytes")


def _utf8(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("!H", len(b)) + b


def _binary(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


class _Reader:
    """Cursor over one packet body; every overrun is a malformed packet."""
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int = 0):
        self.buf, self.pos, self.end = buf, pos, len(buf)

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MqttProtocolError("packet body too short")
        self.pos += 1
        return self.buf[self.pos - 1]

    def int2(self) -> int:
        if self.pos + 2 > self.end:
            raise MqttProtocolError("packet body too short")
        self.pos += 2
        return (self.buf[self.pos - 2] << 8) | self.buf[self.pos - 1]

    def int4(self) -> int:
        if self.pos + 4 > self.end:
            raise MqttProtocolError("packet body too short")
        self.pos += 4
        return struct.unpack_from("!I", self.buf, self.pos - 4)[0]

    def varint(self) -> int:
        value, self.pos = _decode_varint(self.buf, self.pos)
        return value

    def binary(self) -> bytes:
        n = self.int2()
        if self.pos + n > self.end:
            raise MqttProtocolError("string or binary field overruns the packet")
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos])

    def utf8(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MqttProtocolError("invalid UTF-8 string") from exc

    def rest(self) -> bytes:
        out = bytes(self.buf[self.pos:])
        self.pos = self.end
        return out

    def left(self) -> int:
        return self.end - self.pos

    def properties(self) -> dict:
        length = self.varint()
        stop = self.pos + length
        if stop > self.end:
            raise MqttProtocolError("properties overrun the packet")
        props: dict[int, Any] = {}
        while self.pos < stop:
            pid = self.varint()
            kind = _PROP_TYPES.get(pid)
            if kind is None:
                raise MqttProtocolError(f"unknown property 0x{pid:02x}", RC_PROTOCOL_ERROR)
            if kind == _BYTE:
                v: Any = self.byte()
            elif kind == _INT2:
                v = self.int2()
            elif kind == _INT4:
                v = self.int4()
            elif kind == _VARINT:
                v = self.varint()
            elif kind == _UTF8:
                v = self.utf8()
            elif kind == _BIN:
                v = self.binary()
            else:
                v = (self.utf8(), self.utf8())
            if pid in _REPEATABLE:
                props.setdefault(pid, []).append(v)
            elif pid in props:
                raise MqttProtocolError(f"property 0x{pid:02x} repeated", RC_PROTOCOL_ERROR)
            else:
                props[pid] = v
        if self.pos != stop:
            raise MqttProtocolError("properties length mismatch")
        return props


def encode_properties(props: dict | None) -> bytes:
    """MQTT 5 property block (length prefix included); repeatable ones take a list."""
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        kind = _PROP_TYPES[pid]
        values = value if pid in _REPEATABLE and isinstance(value, list) else [value]
        for v in values:
            out += encode_varint(pid)
            if kind == _BYTE:
                out.append(v)
            elif kind == _INT2:
                out += struct.pack("!H", v)
            elif kind == _INT4:
                out += struct.pack("!I", v)
            elif kind == _VARINT:
                out += encode_varint(v)
            elif kind == _UTF8:
                out += _utf8(v)
            elif kind == _BIN:
                out += _binary(v)
            else:
                out += _utf8(v[0]) + _utf8(v[1])
    return encode_varint(len(out)) + bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


# ------------------------------------------------------------------------------------ encoders

def encode_connect(client_id: str = "", username: str | None = None, password: bytes | str | None = None,
                   keep_alive: int = 60, clean_start: bool = True, protocol_level: int = MQTT_311,
                   properties: dict | None = None, will_topic: str | None = None,
                   will_payload: bytes = b"", will_qos: int = 0, will_retain: bool = False) -> bytes:
    flags = 0x02 if clean_start else 0
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    name = b"MQIsdp" if protocol_level == 3 else b"MQTT"
    body = bytearray(_binary(name) + bytes((protocol_level, flags)) + struct.pack("!H", keep_alive))
    v5 = protocol_level == MQTT_5
    if v5:
        body += encode_properties(properties)
    body += _utf8(client_id)
    if will_topic is not None:
        if v5:
            body += b"\x00"
        body += _utf8(will_topic) + _binary(will_payload)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _binary(password.encode() if isinstance(password, str) else password)
    return _packet(CONNECT << 4, bytes(body))


def encode_connack(reason_code: int = 0, session_present: bool = False, protocol_level: int = MQTT_311,
                   properties: dict | None = None) -> bytes:
    body = bytes((1 if session_present else 0, reason_code))
    if protocol_level == MQTT_5:
        body += encode_properties(properties)
    return _packet(CONNACK << 4, body)


def encode_publish(topic: str, payload: bytes | str = b"", qos: int = 0, packet_id: int = 0,
                   retain: bool = False, dup: bool = False, protocol_level: int = MQTT_311,
                   properties: dict | None = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    first = (PUBLISH << 4) | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    head = _utf8(topic)
    if qos:
        head += struct.pack("!H", packet_id)
    if protocol_level == MQTT_5:
        head += encode_properties(properties)
    return _packet(first, head + payload)


def publish_prefix(topic: str, payload_len: int, qos: int = 0, retain: bool = False) -> bytes:
    """The bytes of an MQTT 3.1.1 PUBLISH that come before its payload, for a payload of
    ``payload_len`` bytes: fixed header, remaining length and topic. With QoS 1 or 2 the caller
    appends the 2-byte packet id (the remaining length counts it). So that
    ``publish_prefix(t, len(p), 0) + p == encode_publish(t, p, 0)`` — a publisher sending the same
    topic many times builds each packet with one concatenation."""
    if not 0 <= qos <= 2:
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    if payload_len < 0:
        raise ValueError("payload length must be >= 0")
    topic_field = _utf8(topic)
    remaining = len(topic_field) + (2 if qos else 0) + payload_len
    if remaining > 268_435_455:
        raise ValueError(f"a PUBLISH of {remaining} bytes exceeds MQTT's 256 MB limit")
    first = (PUBLISH << 4) | (qos << 1) | (0x01 if retain else 0)
    return bytes((first,)) + encode_varint(remaining) + topic_field


def encode_puback(packet_id: int, reason_code: int = 0, protocol_level: int = MQTT_311,
                  properties: dict | None = None, kind: int = PUBACK) -> bytes:
    """PUBACK (or PUBREC/PUBREL/PUBCOMP via ``kind``). MQTT 5 success without properties is the
    short 2-byte form, as the spec allows."""
    first = (kind << 4) | (0x02 if kind == PUBREL else 0)
    if protocol_level != MQTT_5 or (reason_code == 0 and not properties):
        return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
    body = struct.pack("!HB", packet_id, reason_code)
    if properties:
        body += encode_properties(properties)
    return _packet(first, body)


def encode_subscribe(packet_id: int, topics: list, protocol_level: int = MQTT_311,
                     properties: dict | None = None) -> bytes:
    """``topics``: [(filter, qos)] (the second item is the MQTT 5 options byte; QoS in its low bits)."""
    body = bytearray(struct.pack("!H", packet_id))
    if protocol_level == MQTT_5:
        body += encode_properties(properties)
    for flt, opts in topics:
        body += _utf8(flt) + bytes((opts,))
    return _packet((SUBSCRIBE << 4) | 0x02, bytes(body))


def encode_suback(packet_id: int, reason_codes: list, protocol_level: int = MQTT_311,
                  properties: dict | None = None) -> bytes:
    body = struct.pack("!H", packet_id)
    if protocol_level == MQTT_5:
        body += encode_properties(properties)
    return _packet(SUBACK << 4, body + bytes(reason_codes))


def encode_unsubscribe(packet_id: int, filters: list, protocol_level: int = MQTT_311,
                       properties: dict | None = None) -> bytes:
    body = bytearray(struct.pack("!H", packet_id))
    if protocol_level == MQTT_5:
        body += encode_properties(properties)
    for flt in filters:
        body += _utf8(flt)
    return _packet((UNSUBSCRIBE << 4) | 0x02, bytes(body))


def encode_unsuback(packet_id: int, reason_codes: list | None = None, protocol_level: int = MQTT_311,
                    properties: dict | None = None) -> bytes:
    body = struct.pack("!H", packet_id)
    if protocol_level == MQTT_5:
        body += encode_properties(properties) + bytes(reason_codes or [])
    return _packet(UNSUBACK << 4, body)


def encode_pingreq() -> bytes:
    return b"\xc0\x00"


def encode_pingresp() -> bytes:
    return b"\xd0\x00"


def encode_disconnect(reason_code: int = 0, protocol_level: int = MQTT_311,
                      properties: dict | None = None) -> bytes:
    if protocol_level != MQTT_5 or (reason_code == 0 and not properties):
        return b"\xe0\x00"
    body = bytes((reason_code,))
    if properties:
        body += encode_properties(properties)
    return _packet(DISCONNECT << 4, body)


# ------------------------------------------------------------------------------------ decoding

class StreamDecoder:
    """Incremental framer: ``feed(bytes)`` returns every complete packet in the buffer as
    ``(packet_type, flags, body)``; a partial packet waits for the next feed. A packet larger than
    ``max_packet_size`` (whole packet, header included) raises as soon as its header is read, so an
    oversized packet is never buffered."""

    __slots__ = ("_buf", "max_packet_size")

    def __init__(self, max_packet_size: int = 268_435_460):
        self._buf = b""
        self.max_packet_size = max_packet_size

    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list:
        buf = self._buf + data if self._buf else data
        out = []
        n = len(buf)
        pos = 0
        limit = self.max_packet_size
        while pos + 2 <= n:
            first = buf[pos]
            # remaining length, inlined for speed (one byte in the common case)
            b = buf[pos + 1]
            if b < 128:
                length, hdr = b, 2
            else:
                length, mult, i = b & 0x7F, 128, pos + 2
                while True:
                    if i >= n:
                        if i - pos > 4:
                            raise MqttProtocolError("remaining length longer than 4 bytes")
                        length = -1
                        break
                    b = buf[i]
                    length += (b & 0x7F) * mult
                    i += 1
                    if not b & 0x80:
                        break
                    mult <<= 7
                    if i - pos > 4:
                        raise MqttProtocolError("remaining length longer than 4 bytes")
                if length < 0:
                    break
                hdr = i - pos
            if first >> 4 == 0:
                raise MqttProtocolError("reserved packet type 0")
            if hdr + length > limit:
                raise MqttProtocolError(
                    f"packet of {hdr + length} bytes exceeds the maximum of {limit}", RC_PACKET_TOO_LARGE)
            end = pos + hdr + length
            if end > n:
                break
            out.append((first >> 4, first & 0x0F, buf[pos + hdr:end]))
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        return out


def decode_publish(flags: int, body: bytes, protocol_level: int = MQTT_311) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH too short")
    tl = (body[0] << 8) | body[1]
    pos = 2 + tl
    if pos > len(body):
        raise MqttProtocolError("PUBLISH topic overruns the packet")
    try:
        topic = body[2:pos].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MqttProtocolError("PUBLISH topic is not UTF-8") from exc
    packet_id = 0
    if qos:
        if pos + 2 > len(body):
            raise MqttProtocolError("PUBLISH without packet id")
        packet_id = (body[pos] << 8) | body[pos + 1]
        pos += 2
    props: dict = {}
    if protocol_level == MQTT_5:
        if pos < len(body) and body[pos] == 0:
            pos += 1  # the usual empty property block, skipped cheaply
        else:
            r = _Reader(body, pos)
            props = r.properties()
            pos = r.pos
    return Publish(topic, body[pos:], qos, packet_id, bool(flags & 1), bool(flags & 8), props)


def decode_packet(ptype: int, flags: int, body: bytes, protocol_level: int = MQTT_311):
    """One framed packet (from :class:`StreamDecoder`) → its dataclass. CONNECT decides the protocol
    level of the session; pass it for every later packet."""
    if ptype == PUBLISH:
        return decode_publish(flags, body, protocol_level)
    v5 = protocol_level == MQTT_5
    r = _Reader(body)
    if ptype == CONNECT:
        return _decode_connect(r)
    if ptype == CONNACK:
        sp, rc = r.byte() & 1, r.byte()
        return Connack(rc, bool(sp), r.properties() if v5 and r.left() else {})
    if ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        pid = r.int2()
        rc = r.byte() if v5 and r.left() else 0
        return Ack(ptype, pid, rc, r.properties() if v5 and r.left() else {})
    if ptype == SUBSCRIBE:
        if flags != 0x02:
            raise MqttProtocolError("SUBSCRIBE with wrong fixed-header flags")
        pid = r.int2()
        props = r.properties() if v5 else {}
        topics = []
        while r.left():
            topics.append((r.utf8(), r.byte()))
        if not topics:
            raise MqttProtocolError("SUBSCRIBE without topic filters", RC_PROTOCOL_ERROR)
        return Subscribe(pid, topics, props)
    if ptype == SUBACK:
        pid = r.int2()
        props = r.properties() if v5 else {}
        return Suback(pid, list(r.rest()), props)
    if ptype == UNSUBSCRIBE:
        pid = r.int2()
        props = r.properties() if v5 else {}
        filters = []
        while r.left():
            filters.append(r.utf8())
        return Unsubscribe(pid, filters, props)
    if ptype == UNSUBACK:
        pid = r.int2()
        props = r.properties() if v5 and r.left() else {}
        return Unsuback(pid, list(r.rest()) if v5 else [], props)
    if ptype in (PINGREQ, PINGRESP):
        return Simple(ptype)
    if ptype == DISCONNECT:
        rc = r.byte() if v5 and r.left() else 0
        return Disconnect(rc, r.properties() if v5 and r.left() else {})
    raise MqttProtocolError(f"unsupported packet type {ptype}", RC_PROTOCOL_ERROR)


def _decode_connect(r: _Reader) -> Connect:
    name = r.utf8()
    level = r.byte()
    if name not in ("MQTT", "MQIsdp"):
        raise MqttProtocolError(f"unknown protocol name {name!r}", RC_UNSUPPORTED_VERSION)
    if level not in (3, 4, 5):
        raise MqttProtocolError(f"unsupported protocol level {level}", RC_UNSUPPORTED_VERSION)
    flags = r.byte()
    if flags & 0x01:
        raise MqttProtocolError("CONNECT reserved flag set")
    c = Connect(protocol_level=level, protocol_name=name, clean_start=bool(flags & 0x02))
    c.keep_alive = r.int2()
    if level == MQTT_5:
        c.properties = r.properties()
    c.client_id = r.utf8()
    if flags & 0x04:
        if level == MQTT_5:
            c.will_properties = r.properties()
        c.will_topic = r.utf8()
        c.will_payload = r.binary()
        c.will_qos = (flags >> 3) & 3
        c.will_retain = bool(flags & 0x20)
    if flags & 0x80:
        c.username = r.utf8()
    if flags & 0x40:
        c.password = r.binary()
    return c
