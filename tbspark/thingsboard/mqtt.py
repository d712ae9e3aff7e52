"""Device-side MQTT on the project's codec: DeviceSession — connect with an access token, publish
and wait for the PUBACK — and AttributePublisher, which publishes client attributes for thousands of
devices from one asyncio loop (provision uses it). Both connect through tbspark.mqtt.client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

from tbspark.errors import MqttError
from tbspark.mqtt import client, codec
from tbspark.mqtt.topics import ATTRIBUTES_TOPIC, TELEMETRY_TOPIC


def _payload(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, separators=(",", ":")).encode()


def _unreachable(host: str, port: int, exc: OSError) -> MqttError:
    return MqttError(f"cannot connect to MQTT at {host}:{port} ({exc.strerror or exc})",
                     "is the platform running? check TB_MQTT_HOST / TB_MQTT_PORT")


class DeviceSession:
    """One device's MQTT 3.1.1 session on a blocking socket, driven from the calling thread (no
    background thread, so thousands of short sessions can run from a small thread pool)."""

    def __init__(self, host: str, port: int, token: str, *, client_id: str = "",
                 keepalive_s: int = 60, timeout_s: float = 10):
        self.host, self.port, self.token, self.timeout_s = host, port, token, timeout_s
        self._client_id, self._keepalive_s = client_id, keepalive_s
        self._sock: socket.socket | None = None
        self._decoder = codec.StreamDecoder(client.MAX_PACKET_SIZE)
        self._packets: list = []
        self._next_id = 0

    def connect(self) -> "DeviceSession":
        try:
            self._sock, self._decoder, self._packets = client.connect(
                self.host, self.port, username=self.token, client_id=self._client_id,
                keep_alive=self._keepalive_s, timeout_s=self.timeout_s)
        except OSError as exc:
            raise _unreachable(self.host, self.port, exc) from exc
        return self

    def _lost(self, what: str, why: str) -> MqttError:
        return MqttError(f"connection to {self.host}:{self.port} lost while waiting for {what} ({why})",
                         "check the platform's log; it may have dropped the session")

    def _wait_puback(self, packet_id: int) -> None:
        sock = self._sock
        deadline = time.monotonic() + self.timeout_s
        while True:
            for ptype, _flags, body in self._packets:
                if ptype == codec.PUBACK and body[:2] == packet_id.to_bytes(2, "big"):
                    self._packets = []
                    return
                if ptype == codec.DISCONNECT:
                    raise self._lost("PUBACK", "the server sent DISCONNECT")
            self._packets = []
            left = deadline - time.monotonic()
            if left <= 0:
                raise MqttError(f"no PUBACK from {self.host}:{self.port} within {self.timeout_s:g} s",
                                "the platform is overloaded or not an MQTT server")
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue  # the deadline check above words it
            except OSError as exc:
                raise self._lost("PUBACK", exc.strerror or str(exc)) from exc
            if not data:
                raise self._lost("PUBACK", "closed by the server")
            self._packets = self._decoder.feed(data)

    def publish(self, topic: str, data: Any, qos: int = 1) -> None:
        """Publish; with QoS 1, return only once the PUBACK is in."""
        if self._sock is None:
            raise MqttError(f"publish to {topic} failed (not connected)", "the session is not connected")
        packet_id = 0
        if qos:
            self._next_id = packet_id = self._next_id % 65535 + 1
        try:
            self._sock.settimeout(self.timeout_s)
            self._sock.sendall(codec.encode_publish(topic, _payload(data), qos, packet_id))
        except OSError as exc:
            raise self._lost("write", exc.strerror or str(exc)) from exc
        if qos:
            self._wait_puback(packet_id)

    def publish_attributes(self, attributes: dict) -> None:
        self.publish(ATTRIBUTES_TOPIC, attributes, qos=1)

    def publish_telemetry(self, values: dict, ts_ms: int | None = None, qos: int = 1) -> None:
        self.publish(TELEMETRY_TOPIC, {"ts": ts_ms, "values": values} if ts_ms else values, qos)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.settimeout(0.5)
            sock.sendall(codec.encode_disconnect())
        except OSError:
            pass  # closing a dead socket must never raise
        sock.close()

    def __enter__(self) -> "DeviceSession":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AttributePublisher:
    """Client attributes for many devices from one asyncio loop (in its own thread), with the
    project's MQTT codec: per device connect → PUBLISH (QoS 1) → PUBACK → DISCONNECT, at most
    ``parallel`` sessions at once. Much lighter than a blocking session per device, and callers
    (REST worker threads) hand devices over as soon as they exist."""

    def __init__(self, host: str, port: int, *, parallel: int = 64, timeout_s: float = 10,
                 attempts: int = 3):
        self.host, self.port, self.timeout_s, self.attempts = host, port, timeout_s, attempts
        self._loop = asyncio.new_event_loop()
        self._sem: Any = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._sem = asyncio.Semaphore(parallel)
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="attribute-publisher", daemon=True)
        self._thread.start()
        ready.wait()

    def submit(self, token: str, attributes: dict) -> Any:
        """A concurrent.futures.Future that resolves once the PUBACK is in (or raises MqttError)."""
        return asyncio.run_coroutine_threadsafe(self._publish(token, attributes), self._loop)

    async def _publish(self, token: str, attributes: dict) -> None:
        async with self._sem:
            for attempt in range(self.attempts):
                try:
                    await asyncio.wait_for(self._session(token, _payload(attributes)),
                                           self.timeout_s)
                    return
                except client.ConnectRefusedError:
                    raise
                except (MqttError, OSError, asyncio.TimeoutError) as exc:
                    if attempt + 1 == self.attempts:
                        why = getattr(exc, "message", None) or exc.__class__.__name__
                        raise MqttError(f"could not publish client attributes to "
                                        f"{self.host}:{self.port} ({why})",
                                        "is the platform running? check TB_MQTT_HOST / "
                                        "TB_MQTT_PORT") from exc
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def _session(self, token: str, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        sock = await client.open_socket(await client.resolve(self.host, self.port))
        try:
            decoder, packets = await client.handshake(sock, username=token, keep_alive=60,
                                                      timeout_s=self.timeout_s, where=where)
            await loop.sock_sendall(sock, codec.encode_publish(ATTRIBUTES_TOPIC, payload, 1, 1))
            while not any(ptype == codec.PUBACK for ptype, _flags, _body in packets):
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise MqttError(f"{where} closed the session while waiting for PUBACK")
                packets = decoder.feed(data)
            await loop.sock_sendall(sock, codec.encode_disconnect())
        finally:
            sock.close()

    def close(self) -> None:
        async def cancel_pending() -> None:
            # Sessions nobody waits for any more (a caller gave up after an error) end here,
            # instead of being destroyed pending with the stopped loop.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(cancel_pending(), self._loop).result(5)
            except Exception:  # noqa: BLE001 - closing must never raise
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "AttributePublisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
