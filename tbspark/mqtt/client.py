"""The client side of MQTT's connect handshake, written once for every tbspark client on the codec:
send CONNECT, return once the CONNACK accepts, and turn a refusal into one clear error
(``ConnectRefusedError``). ``accepted`` reads the CONNACK; the I/O around it comes in the three
shapes the clients need: ``connect`` (blocking: ``DeviceSession``), ``handshake`` (awaited on a
non-blocking socket: the attribute publisher) and the simulator's asyncio engine, which feeds its
own reads to ``accepted`` so that a ramping fleet keeps one reader registration per connection.
``resolve`` and ``open_socket`` open the non-blocking sockets.

Only the handshake lives here: publishing stays with each client (the simulator's hot send path
never comes through this module)."""

from __future__ import annotations

import asyncio
import socket
import time

from tbspark.errors import MqttError
from tbspark.mqtt import codec

CONNACK_TIMEOUT_S = 10.0
# A client only hears CONNACK, PUBACK, PINGRESP, DISCONNECT (it subscribes to nothing): a bound far
# above those keeps one bad server from making the client buffer without limit.
MAX_PACKET_SIZE = 1 << 20

# Why a server refused, by CONNACK return code: MQTT 3.1.1 (§3.2.2.3) and MQTT 5 reason codes.
REFUSALS = {
    1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8C: "bad authentication method", 0x95: "packet too large", 0x97: "quota exceeded",
}


class ConnectRefusedError(MqttError):
    """The server answered CONNACK with a refusal: retrying with the same credentials cannot help.
    ``code`` is the CONNACK's return (reason) code."""

    def __init__(self, where: str, code: int):
        super().__init__(f"{where} refused the connection: {REFUSALS.get(code, 'refused')} "
                         f"(CONNACK {code})",
                         "provision the devices again (tbspark provision) or check the token")
        self.code = code


def accepted(decoder: codec.StreamDecoder, data: bytes, where: str) -> list | None:
    """Feed bytes read while waiting for the CONNACK. None while it has not come; once it accepts,
    the packets that came after it in the same read (for the caller's own reader). Raises
    ConnectRefusedError on a refusal and MqttProtocolError on anything else first."""
    packets = decoder.feed(data)
    for i, (ptype, _flags, body) in enumerate(packets):
        if ptype != codec.CONNACK or len(body) < 2:
            raise codec.MqttProtocolError(f"{where} answered CONNECT with packet type {ptype}, "
                                          "not a CONNACK")
        if body[1]:
            raise ConnectRefusedError(where, body[1])
        return packets[i + 1:]
    return None


def _closed(where: str) -> MqttError:
    return MqttError(f"{where} closed the connection before its CONNACK",
                     "is it an MQTT server? check TB_MQTT_HOST / TB_MQTT_PORT")


def _no_connack(where: str, timeout_s: float) -> MqttError:
    return MqttError(f"no CONNACK from {where} within {timeout_s:g} s",
                     "the platform is overloaded or not an MQTT server")


async def resolve(host: str, port: int) -> tuple:
    """The first getaddrinfo answer for a TCP connection to host:port (resolve once, connect many)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return infos[0]


async def open_socket(addr_info: tuple) -> socket.socket:
    """A connected non-blocking TCP socket (Nagle off: small packets go out at once) to a
    ``resolve`` answer. OSError when the connection fails."""
    family, type_, proto, _, addr = addr_info
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def handshake(sock: socket.socket, *, username: str | None, client_id: str = "",
                    keep_alive: int = 60, timeout_s: float = CONNACK_TIMEOUT_S,
                    where: str = "the server") -> tuple[codec.StreamDecoder, list]:
    """CONNECT on a connected non-blocking socket; return once the CONNACK accepts: the decoder
    (to keep reading with) and the packets that came after the CONNACK."""
    loop = asyncio.get_running_loop()
    decoder = codec.StreamDecoder(MAX_PACKET_SIZE)
    try:
        async with asyncio.timeout(timeout_s):
            await loop.sock_sendall(sock, codec.encode_connect(client_id, username=username,
                                                               keep_alive=keep_alive))
            while True:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise _closed(where)
                rest = accepted(decoder, data, where)
                if rest is not None:
                    return decoder, rest
    except TimeoutError:
        raise _no_connack(where, timeout_s) from None
    except ConnectionError as exc:  # reset or broken pipe: the server hung up
        raise _closed(where) from exc


def connect(host: str, port: int, *, username: str | None, client_id: str = "",
            keep_alive: int = 60, timeout_s: float = CONNACK_TIMEOUT_S
            ) -> tuple[socket.socket, codec.StreamDecoder, list]:
    """Open a blocking TCP connection and CONNECT; return once the CONNACK accepts: the socket, the
    decoder and the packets that came after the CONNACK. OSError when TCP cannot connect."""
    where = f"{host}:{port}"
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(codec.encode_connect(client_id, username=username, keep_alive=keep_alive))
        except ConnectionError as exc:
            raise _closed(where) from exc
        decoder = codec.StreamDecoder(MAX_PACKET_SIZE)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _no_connack(where, timeout_s)
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                raise _no_connack(where, timeout_s) from None
            except ConnectionError as exc:  # reset: the server hung up
                raise _closed(where) from exc
            if not data:
                raise _closed(where)
            rest = accepted(decoder, data, where)
            if rest is not None:
                return sock, decoder, rest
    except BaseException:
        sock.close()
        raise
