"""Device-side MQTT: a device session on paho-mqtt 2.x (CallbackAPIVersion.VERSION2) — connect
with an access token, publish and wait for the PUBACK — and AttributePublisher, which publishes
client attributes for thousands of devices from one asyncio loop (provision uses it)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tbspark.errors import MqttError
from tbspark.mqtt.topics import ATTRIBUTES_TOPIC, TELEMETRY_TOPIC



class TokenRefusedError(MqttError):
    """The server answered CONNACK with a refusal: retrying the same token cannot help."""


def _payload(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, separators=(",", ":")).encode()


class DeviceSession:
    """One device's MQTT session, driven from the calling thread (no paho background thread,
    so thousands of short sessions can run from a small thread pool)."""

    def __init__(self, host: str, port: int, token: str, *, client_id: str = "",
                 keepalive_s: int = 60, timeout_s: float = 10, mqtt5: bool = False):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._keepalive_s = keepalive_s
        protocol = paho.MQTTv5 if mqtt5 else paho.MQTTv311
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=protocol)
        self._client.username_pw_set(token)
        self._connack: Any = None
        self._acked: set[int] = set()
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = reason

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked.add(mid)

    def _pump(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise MqttError(f"no {what} from {self.host}:{self.port} within {self.timeout_s:g} s",
                                "the platform is overloaded or not an MQTT server")
            rc = self._client.loop(timeout=0.05)
            if rc != paho.MQTT_ERR_SUCCESS and not done():
                raise MqttError(f"connection to {self.host}:{self.port} lost while waiting for "
                                f"{what} ({paho.error_string(rc)})",
                                "check the platform's log; it may have dropped the session")

    def connect(self) -> "DeviceSession":
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive_s)
        except OSError as exc:
            raise MqttError(f"cannot connect to MQTT at {self.host}:{self.port} ({exc.strerror or exc})",
                            "is the platform running? check TB_MQTT_HOST / TB_MQTT_PORT") from exc
        try:
            self._pump(lambda: self._connack is not None, "CONNACK")
        except MqttError:
            if self._connack is None:
                raise
        if self._connack.is_failure:
            raise TokenRefusedError(f"{self.host}:{self.port} refused the device token "
                            f"(CONNACK: {self._connack})",
                            "provision the devices again (tbspark provision) or check the token")
        return self

    def publish(self, topic: str, data: Any, qos: int = 1) -> None:
        """Publish; with QoS 1, return only once the PUBACK is in."""
        info = self._client.publish(topic, _payload(data), qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed ({paho.error_string(info.rc)})",
                            "the session is not connected")
        if qos:
            self._pump(lambda: info.mid in self._acked, "PUBACK")
        else:
            self._pump(lambda: not self._client.want_write(), "write")

    def publish_attributes(self, attributes: dict) -> None:
        self.publish(ATTRIBUTES_TOPIC, attributes, qos=1)

    def publish_telemetry(self, values: dict, ts_ms: int | None = None, qos: int = 1) -> None:
        self.publish(TELEMETRY_TOPIC, {"ts": ts_ms, "values": values} if ts_ms else values, qos)

    def close(self) -> None:
        try:
            self._client.disconnect()
            self._client.loop(timeout=0.01)
        except Exception:  # noqa: BLE001 - closing a dead socket must never raise
            pass
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> "DeviceSession":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AttributePublisher:
    """Client attributes for many devices from one asyncio loop (in its own thread), with the
    project's MQTT codec: per device connect → PUBLISH (QoS 1) → PUBACK → DISCONNECT, at most
    ``parallel`` sessions at once. Much lighter than a paho client per device, and callers
    (REST worker threads) hand devices over as soon as they exist."""

    def __init__(self, host: str, port: int, *, parallel: int = 64, timeout_s: float = 10,
                 attempts: int = 3):
        import asyncio
        import threading

        self.host, self.port, self.timeout_s, self.attempts = host, port, timeout_s, attempts
        self._loop = asyncio.new_event_loop()
        self._sem: Any = None
        self._parallel = parallel
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
        import asyncio

        return asyncio.run_coroutine_threadsafe(self._publish(token, attributes), self._loop)

    async def _publish(self, token: str, attributes: dict) -> None:
        import asyncio

        async with self._sem:
            for attempt in range(self.attempts):
                try:
                    await asyncio.wait_for(self._session(token, _payload(attributes)),
                                           self.timeout_s)
                    return
                except TokenRefusedError:
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
        import asyncio

        from tbspark.mqtt import codec

        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(codec.encode_connect(username=token, keep_alive=60))
            decoder = codec.StreamDecoder()
            state = "connack"
            while True:
                data = await reader.read(4096)
                if not data:
                    raise MqttError(f"{self.host}:{self.port} closed the session while waiting "
                                    f"for {state.upper()}")
                for ptype, _flags, body in decoder.feed(data):
                    if ptype == codec.CONNACK:
                        if body[1] != 0:
                            raise TokenRefusedError(
                                f"{self.host}:{self.port} refused the device token "
                                f"(CONNACK {body[1]})",
                                "provision the devices again (tbspark provision) or check the token")
                        writer.write(codec.encode_publish(ATTRIBUTES_TOPIC, payload, 1, 1))
                        state = "puback"
                    elif ptype == codec.PUBACK and state == "puback":
                        writer.write(codec.encode_disconnect())
                        await writer.drain()
                        return
        finally:
            writer.close()

    def close(self) -> None:
        import asyncio

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
