"""One MQTT connection (asyncio Protocol): CONNECT with the device token, then device-API and
gateway-API publishes. Every complete packet of one read is decoded together, engine-bound messages
go to the server's shared batch, and direct replies leave in one write."""

from __future__ import annotations

import asyncio
import logging
import time

from tbspark.mqtt import codec as c
from tbspark.platform.transport import device_api as api

log = logging.getLogger(__name__)

AWAIT_CONNECT, CONNECTED, CLOSING = 0, 1, 2
# MQTT 5 topic aliases a client may set per session (announced in CONNACK as Topic Alias Maximum).
TOPIC_ALIAS_MAXIMUM = 16
# The telemetry topic as it sits in a PUBLISH: its 2-byte length, then its bytes (see _fast_telemetry).
_TELEMETRY = len(api.TELEMETRY_TOPIC).to_bytes(2, "big") + api.TELEMETRY_TOPIC.encode()
_TELEMETRY_END = len(_TELEMETRY)


class MqttSession(asyncio.Protocol):
    __slots__ = ("server", "transport", "decoder", "level", "device", "keep_alive", "last_seen",
                 "subs", "gateway", "state", "aliases", "qos2", "__weakref__")

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.decoder = c.StreamDecoder(server.max_packet_size)
        self.level = c.MQTT_311
        self.device = None
        self.keep_alive = 0
        self.last_seen = time.monotonic()
        self.subs = 0
        self.gateway = None  # GatewayHandler for devices flagged as gateways
        self.state = AWAIT_CONNECT
        self.aliases = None  # MQTT 5 topic alias → topic, made on the first PUBLISH that sets one
        self.qos2 = None  # packet ids of QoS 2 PUBLISHes received and not yet released (PUBREL)

    # ------------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.on_open(self)

    def connection_lost(self, exc) -> None:
        self.state = CLOSING
        self.server.on_close(self)

    def data_received(self, data: bytes) -> None:
        server = self.server
        server.bytes_in += len(data)
        self.last_seen = time.monotonic()
        try:
            packets = self.decoder.feed(data)
        except c.MqttProtocolError as exc:
            server.errors += 1
            log.info("closing MQTT session %s: %s", self._who(), exc.message)
            self.close(exc.reason_code)
            return
        out: list[bytes] = []
        for ptype, flags, body in packets:
            if self.state != CONNECTED:
                if self.state == AWAIT_CONNECT and ptype == c.CONNECT:
                    self._on_connect(body, out)
                    if self.state == CONNECTED:
                        continue
                else:
                    server.errors += 1
                    self._flush(out)
                    self.close(c.RC_PROTOCOL_ERROR)
                break
            try:
                if ptype == c.PUBLISH:
                    if not self._fast_telemetry(flags, body, out):
                        self._on_publish(c.decode_publish(flags, body, self.level), out)
                elif ptype == c.PINGREQ:
                    out.append(c.encode_pingresp())
                elif ptype == c.SUBSCRIBE:
                    self._on_subscribe(c.decode_packet(ptype, flags, body, self.level), out)
                elif ptype == c.UNSUBSCRIBE:
                    self._on_unsubscribe(c.decode_packet(ptype, flags, body, self.level), out)
                elif ptype == c.DISCONNECT:
                    self._flush(out)
                    self.state = CLOSING
                    self.transport.close()
                    return
                elif ptype in (c.PUBACK, c.PUBREC, c.PUBCOMP):
                    pass  # we only publish QoS 0; tolerate acks anyway
                elif ptype == c.PUBREL:  # QoS 2, step 3: the id may be used again
                    packet_id = int.from_bytes(body[:2], "big")
                    known = bool(self.qos2) and packet_id in self.qos2
                    if known:
                        self.qos2.discard(packet_id)
                    # MQTT 5 §3.7.2.1: an id this session does not hold is 0x92 (Packet Identifier
                    # not found); 3.1.1 has no reason codes.
                    out.append(c.encode_puback(packet_id, 0 if known else 0x92, self.level, kind=c.PUBCOMP))
                else:
                    raise c.MqttProtocolError(f"unexpected packet type {ptype}", c.RC_PROTOCOL_ERROR)
            except c.MqttProtocolError as exc:
                server.errors += 1
                log.info("closing MQTT session %s: %s", self._who(), exc.message)
                self._flush(out)
                self.close(exc.reason_code)
                return
            if self.state == CLOSING:
                return
        self._flush(out)

    # ------------------------------------------------------------------------ writes and closing

    def _flush(self, out: list) -> None:
        if out:
            self.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()

    def write(self, data: bytes) -> None:
        if self.state != CLOSING and not self.transport.is_closing():
            self.server.bytes_out += len(data)
            self.transport.write(data)

    def close(self, reason_code: int | None = None) -> None:
        """Close the session; MQTT 5 connected sessions get a DISCONNECT with the reason first."""
        if self.state == CLOSING:
            return
        if reason_code and self.level == c.MQTT_5 and self.state == CONNECTED:
            self.write(c.encode_disconnect(reason_code, c.MQTT_5))
        self.state = CLOSING
        if self.transport is not None:
            self.transport.close()

    def publish(self, topic: str, payload: bytes) -> None:
        """Server → device message (QoS 0: devices need no ack bookkeeping for pushes)."""
        self.write(c.encode_publish(topic, payload, 0, protocol_level=self.level))

    def _who(self) -> str:
        return self.device.name if self.device is not None else "(not connected)"

    # ------------------------------------------------------------------------ CONNECT

    def _on_connect(self, body, out: list) -> None:
        server = self.server
        try:
            conn = c.decode_packet(c.CONNECT, 0, body)
        except c.MqttProtocolError as exc:
            server.errors += 1
            if exc.reason_code == c.RC_UNSUPPORTED_VERSION:
                # Answer in the version we can speak; 3.1.1 code 1 = unacceptable protocol version.
                level = body[6] if len(body) > 6 else 4
                rc = c.RC_UNSUPPORTED_VERSION if level == 5 else 1
                self.write(c.encode_connack(rc, protocol_level=5 if level == 5 else 4))
            self.close()
            return
        self.level = 5 if conn.protocol_level == 5 else 4
        v5 = self.level == c.MQTT_5
        device = server.store.device_by_token(conn.username) if conn.username else None
        if device is None:
            # §6.1: which code depends on what the CONNECT carried.
            if conn.username:
                rc5, rc3 = c.RC_BAD_USERNAME_PASSWORD, 5
            elif conn.client_id:
                rc5, rc3 = c.RC_CLIENT_ID_INVALID, 2
            else:
                rc5, rc3 = c.RC_NOT_AUTHORIZED, 5
            server.rejected += 1
            data = c.encode_connack(rc5 if v5 else rc3, protocol_level=self.level)
            if v5:
                data += c.encode_disconnect(rc5, c.MQTT_5)  # as ThingsBoard's closeCtx does
            self.write(data)
            self.close()
            return
        self.device = device
        self.keep_alive = conn.keep_alive
        self.state = CONNECTED
        props = None
        if v5:
            # No Maximum QoS: QoS 2 PUBLISHes are taken (exactly once per connection), as ThingsBoard
            # announces none either.
            props = {c.PROP_RETAIN_AVAILABLE: 0,
                     c.PROP_MAXIMUM_PACKET_SIZE: server.max_packet_size,
                     c.PROP_WILDCARD_SUB_AVAILABLE: 0, c.PROP_SHARED_SUB_AVAILABLE: 0,
                     c.PROP_TOPIC_ALIAS_MAXIMUM: TOPIC_ALIAS_MAXIMUM}
            if not conn.client_id:
                props[c.PROP_ASSIGNED_CLIENT_ID] = f"tbspark-{id(self):x}"
        out.append(c.encode_connack(0, protocol_level=self.level, properties=props))
        info = device.additional_info or {}
        if info.get("gateway") is True:
            from tbspark.platform.transport.gateway import GatewayHandler
            self.gateway = GatewayHandler(self)
        server.on_connected(self)

    # ------------------------------------------------------------------------ SUBSCRIBE

    def _on_subscribe(self, sub, out: list) -> None:
        codes = []
        for flt, opts in sub.topics:
            bit = api.ALLOWED_FILTERS.get(flt)
            if bit is None:
                codes.append(c.RC_TOPIC_FILTER_INVALID if self.level == c.MQTT_5 else 0x80)
            else:
                self.subs |= bit
                codes.append(min(opts & 3, 1))
        out.append(c.encode_suback(sub.packet_id, codes, self.level))
        if self.subs & api.SUB_RPC_REQUEST:
            self._flush(out)  # the SUBACK first, then any server-side RPC that waited for this session
            self.server.rpc.on_subscribed(self, [flt for flt, _opts in sub.topics])

    def _on_unsubscribe(self, uns, out: list) -> None:
        for flt in uns.filters:
            self.subs &= ~api.ALLOWED_FILTERS.get(flt, 0)
        out.append(c.encode_unsuback(uns.packet_id, [0] * len(uns.filters), self.level))

    # ------------------------------------------------------------------------ PUBLISH

    def ack(self, pub, reason: int = 0) -> bytes | None:
        """The answer to a PUBLISH: none (QoS 0), PUBACK (QoS 1) or PUBREC (QoS 2; an error reason
        ends that exchange, so its id is free again)."""
        if pub.qos == 0:
            return None
        if pub.qos == 2:
            if reason >= 0x80 and self.qos2:
                self.qos2.discard(pub.packet_id)
            return c.encode_puback(pub.packet_id, reason, self.level, kind=c.PUBREC)
        return c.encode_puback(pub.packet_id, reason, self.level)

    def malformed(self, pub, out: list, exc: Exception) -> None:
        """As ThingsBoard (sendResponseForAdaptorErrorOrCloseContext): MQTT 5 QoS ≥ 1 → PUBACK/PUBREC
        0x99 and the session stays; otherwise close without an ack, so that the device resends."""
        self.server.malformed += 1
        log.info("malformed payload from %s on %s: %s", self._who(), pub.topic, exc)
        if self.level == c.MQTT_5 and pub.qos >= 1:
            out.append(self.ack(pub, c.RC_PAYLOAD_FORMAT_INVALID))
        else:
            self._flush(out)
            self.close(c.RC_PAYLOAD_FORMAT_INVALID)

    def _fast_telemetry(self, flags: int, body: bytes, out: list) -> bool:
        """The hot path: a QoS 0/1 PUBLISH to ``v1/devices/me/telemetry`` (by name, or by an MQTT 5
        topic alias mapped to it, with no other properties) becomes its TbMsg without a Publish object.
        Returns False, having done nothing, for anything else: the generic path decides it (and raises
        its protocol errors)."""
        qos = (flags >> 1) & 3
        if qos > 1:  # QoS 2 (and the invalid 3): the generic path
            return False
        if body.startswith(_TELEMETRY):
            pos = _TELEMETRY_END
            alias = False
        elif body[:2] == b"\x00\x00" and self.aliases is not None:
            pos = 2
            alias = True  # an empty topic: only an alias mapped to the telemetry topic is ours
        else:
            return False
        n = len(body)
        packet_id = 0
        if qos:
            if pos + 2 > n:
                return False
            packet_id = (body[pos] << 8) | body[pos + 1]
            pos += 2
        if self.level == c.MQTT_5:
            if pos >= n:
                return False
            plen = body[pos]
            if plen == 0 and not alias:
                pos += 1
            elif (alias and plen == 3 and pos + 4 <= n and body[pos + 1] == c.PROP_TOPIC_ALIAS
                  and self.aliases.get((body[pos + 2] << 8) | body[pos + 3]) == api.TELEMETRY_TOPIC):
                pos += 4
            else:
                return False
        elif alias:
            return False
        server = self.server
        server.messages += 1
        payload = body[pos:]
        now_ms = int(time.time() * 1000)
        try:
            msgs = api.telemetry_msgs(self.device, payload, now_ms)
        except ValueError as exc:
            self.malformed(c.Publish(api.TELEMETRY_TOPIC, payload, qos, packet_id), out, exc)
            return True
        # PUBACK, success: the same 4 bytes in 3.1.1 and 5 (c.encode_puback's short form), made here.
        ack = bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF)) if qos else None
        if msgs:
            server.submit(self, msgs, ack)
        elif ack:
            out.append(ack)
        return True

    def _on_publish(self, pub, out: list) -> None:
        server = self.server
        server.messages += 1
        if pub.qos == 2:
            # Exactly once per connection (MQTT §4.3.3): an id not yet released is a retransmission
            # of a message already taken. It is answered with PUBREC again, queued behind the
            # original, so that the answer never comes before the original is stored.
            if self.qos2 is None:
                self.qos2 = set()
            elif pub.packet_id in self.qos2:
                server.submit(self, [], self.ack(pub))
                return
            self.qos2.add(pub.packet_id)
        topic = pub.topic
        if pub.properties or not topic:
            topic = self._resolve_topic(pub)
        device = self.device
        now_ms = int(time.time() * 1000)
        if topic in api.TELEMETRY_TOPICS:
            try:
                msgs = api.telemetry_msgs(device, pub.payload, now_ms)
            except ValueError as exc:
                self.malformed(pub, out, exc)
                return
            self._submit(msgs, pub, out)
        elif topic in api.ATTRIBUTES_TOPICS:
            try:
                msg = api.attributes_msg(device, pub.payload, now_ms)
            except ValueError as exc:
                self.malformed(pub, out, exc)
                return
            self._submit([msg] if msg is not None else [], pub, out)
        elif topic.startswith(api.ATTR_REQUEST_PREFIX):
            request_id = topic[len(api.ATTR_REQUEST_PREFIX):]
            try:
                answer = api.attribute_response(server.store, device.id, pub.payload)
            except ValueError as exc:
                self.malformed(pub, out, exc)
                return
            ack = self.ack(pub)
            if ack:
                out.append(ack)
            out.append(c.encode_publish(api.ATTR_RESPONSE_PREFIX + request_id, api.dumps(answer),
                                        protocol_level=self.level))
        elif topic.startswith(api.RPC_REQUEST_PREFIX):
            self._on_client_rpc(pub, topic[len(api.RPC_REQUEST_PREFIX):], now_ms, out)
        elif topic.startswith(api.RPC_RESPONSE_PREFIXES):
            self._on_rpc_reply(pub, topic, out)
        elif topic == "v1/devices/me/claim":
            ack = self.ack(pub)  # no claiming here: accepted and dropped
            if ack:
                out.append(ack)
        elif topic.startswith("v1/gateway/"):
            if self.gateway is None:
                # §7.1: ThingsBoard only logs this; no PUBACK is sent.
                log.warning("device %s is not a gateway but published to %s", device.name, topic)
                return
            self.gateway.on_publish(pub, now_ms, out)
        else:
            server.unknown_topic += 1
            if pub.qos:
                out.append(self.ack(pub, c.RC_TOPIC_NAME_INVALID if self.level == 5 else 0))

    def _resolve_topic(self, pub) -> str:
        """MQTT 5 Topic Alias (0x23): a PUBLISH with a topic and an alias maps the alias to it, one
        with an empty topic and an alias uses the mapping. Alias 0 or above TOPIC_ALIAS_MAXIMUM →
        DISCONNECT 0x94; an empty topic without a known alias → DISCONNECT 0x82 (MQTT 5 §3.3.2.3.4)."""
        if self.level != c.MQTT_5:
            return pub.topic  # 3.1.1 has no aliases; an empty topic is just an unknown one
        alias = pub.properties.get(c.PROP_TOPIC_ALIAS)
        if alias is None:
            if not pub.topic:
                raise c.MqttProtocolError("PUBLISH with an empty topic and no topic alias", c.RC_PROTOCOL_ERROR)
            return pub.topic
        if not 0 < alias <= TOPIC_ALIAS_MAXIMUM:
            raise c.MqttProtocolError(f"topic alias {alias} is outside 1..{TOPIC_ALIAS_MAXIMUM}",
                                      c.RC_TOPIC_ALIAS_INVALID)
        if pub.topic:
            if self.aliases is None:
                self.aliases = {}
            self.aliases[alias] = pub.topic
            return pub.topic
        topic = self.aliases.get(alias) if self.aliases else None
        if topic is None:
            raise c.MqttProtocolError(f"topic alias {alias} was never set on this connection", c.RC_PROTOCOL_ERROR)
        pub.topic = topic
        return topic

    def _on_rpc_reply(self, pub, topic: str, out: list) -> None:
        """The device answers server-side RPC ``{id}`` (§6.2); the payload is the result, kept as text."""
        ack = self.ack(pub)
        if ack:
            out.append(ack)
        self.server.rpc.on_reply(self.device.id, topic.rsplit("/", 1)[1], pub.payload)

    def _submit(self, msgs: list, pub, out: list) -> None:
        """Engine-bound messages: the PUBACK waits for the batch's ``engine.process``."""
        if msgs:
            self.server.submit(self, msgs, self.ack(pub))
        elif pub.qos:
            out.append(self.ack(pub))

    def _on_client_rpc(self, pub, request_id: str, now_ms: int, out: list) -> None:
        try:
            body = api.values.loads(pub.payload)
        except ValueError as exc:
            self.malformed(pub, out, exc)
            return
        if isinstance(body, dict) and body.get("method") == "getSessionLimits":
            ack = self.ack(pub)
            if ack:
                out.append(ack)
            limits = api.session_limits(self.server.max_packet_size, self.gateway is not None)
            out.append(c.encode_publish(api.RPC_RESPONSE_PREFIX + request_id, api.dumps(limits),
                                        protocol_level=self.level))
            return
        self._submit([api.rpc_msg(self.device, request_id, body, now_ms)], pub, out)
