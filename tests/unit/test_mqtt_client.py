"""The one client-side connect handshake (tbspark.mqtt.client) and the device sessions built on it:
accepted, refused with a clear reason, a server that closes or never answers, and a publish whose
PUBACK the caller waits for."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tbspark.errors import MqttError
from tbspark.mqtt import client, codec
from tbspark.simulate.sink import ThreadedSink
from tbspark.thingsboard.mqtt import AttributePublisher, DeviceSession


def test_accepted_returns_what_came_after_the_connack():
    dec = codec.StreamDecoder()
    data = codec.encode_connack(0) + codec.encode_puback(7)
    assert client.accepted(dec, data[:3], "srv") is None  # half a CONNACK: keep reading
    rest = client.accepted(dec, data[3:], "srv")
    assert rest == [(codec.PUBACK, 0, b"\x00\x07")]


@pytest.mark.parametrize("code, reason", [(5, "not authorized"), (4, "bad user name or password"),
                                          (0x87, "not authorized"), (0x99, "refused")])
def test_a_refusal_says_why_and_what_to_do(code, reason):
    with pytest.raises(client.ConnectRefusedError) as exc:
        client.accepted(codec.StreamDecoder(), codec.encode_connack(code), "srv:1883")
    assert exc.value.code == code
    assert str(exc.value) == (f"srv:1883 refused the connection: {reason} (CONNACK {code}) — "
                              "provision the devices again (tbspark provision) or check the token")


def test_anything_but_a_connack_first_is_a_protocol_error():
    with pytest.raises(codec.MqttProtocolError, match="packet type 4, not a CONNACK"):
        client.accepted(codec.StreamDecoder(), codec.encode_puback(1), "srv")


def test_session_publishes_and_waits_for_the_puback():
    with ThreadedSink(tokens={"tok"}, keep_payloads=True) as sink:
        with DeviceSession("127.0.0.1", sink.port, "tok", timeout_s=5) as session:
            session.publish_telemetry({"t": 1})
            session.publish_attributes({"zone": "A"})
            # QoS 1: both stored by the time publish returned
            assert sink.payloads["tok"] == [b'{"t":1}', b'{"zone":"A"}']


def test_session_with_an_unknown_token_is_refused():
    with ThreadedSink(tokens={"tok"}) as sink:
        with pytest.raises(client.ConnectRefusedError, match=r"refused the connection: not authorized \(CONNACK 5\)"):
            DeviceSession("127.0.0.1", sink.port, "other", timeout_s=5).connect()


def test_session_to_a_closed_port_names_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MqttError, match=f"cannot connect to MQTT at 127.0.0.1:{port}"):
        DeviceSession("127.0.0.1", port, "tok", timeout_s=2).connect()


class _Silent:
    """A TCP server that accepts and then either closes at once or says nothing."""

    def __init__(self, close: bool):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.close_at_once = close
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        if self.close_at_once:
            conn.close()
        else:
            self.conns.append(conn)

    def stop(self) -> None:
        self.srv.close()
        for c in self.conns:
            c.close()
        self.thread.join(2)


@pytest.mark.parametrize("close, message", [(True, "closed the connection before its CONNACK"),
                                            (False, "no CONNACK from 127.0.0.1:")])
def test_blocking_connect_never_hangs(close, message):
    srv = _Silent(close)
    try:
        with pytest.raises(MqttError, match=message):
            client.connect("127.0.0.1", srv.port, username="tok", timeout_s=0.5)
    finally:
        srv.stop()


@pytest.mark.parametrize("close, message", [(True, "closed the connection before its CONNACK"),
                                            (False, "no CONNACK from 127.0.0.1:")])
def test_async_handshake_never_hangs(close, message):
    srv = _Silent(close)

    async def main() -> None:
        sock = await client.open_socket(await client.resolve("127.0.0.1", srv.port))
        try:
            await client.handshake(sock, username="tok", timeout_s=0.5, where=f"127.0.0.1:{srv.port}")
        finally:
            sock.close()

    try:
        with pytest.raises(MqttError, match=message):
            asyncio.run(main())
    finally:
        srv.stop()


def test_attribute_publisher_stores_and_refuses_unknown_tokens():
    with ThreadedSink(tokens={"tok"}, keep_payloads=True) as sink:
        with AttributePublisher("127.0.0.1", sink.port, timeout_s=5) as pub:
            pub.submit("tok", {"zone": "B"}).result(10)
            assert sink.payloads["tok"] == [b'{"zone":"B"}']
            with pytest.raises(client.ConnectRefusedError, match=r"CONNACK 5"):
                pub.submit("other", {"zone": "B"}).result(10)
