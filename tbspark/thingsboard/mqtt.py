"""Device sessions on paho-mqtt 2.x (CallbackAPIVersion.VERSION2): connect with an access token,
publish and wait for the PUBACK, and publish client attributes for many devices in parallel."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tbspark.errors import MqttError

ATTRIBUTES_TOPIC = "v1/devices/me/attributes"
TELEMETRY_TOPIC = "v1/devices/me/telemetry"


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
            raise MqttError(f"{self.host}:{self.port} refused the device token "
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


def publish_attributes_many(host: str, port: int, items: Iterable[tuple[str, dict]], *,
                            parallel: int = 32, timeout_s: float = 10,
                            progress: Callable[[int], None] | None = None) -> int:
    """Publish client attributes for many devices, each over its own token's session, waiting
    for each PUBACK. Returns how many were acknowledged; the first failure is raised."""
    items = list(items)

    def one(token: str, attrs: dict) -> None:
        with DeviceSession(host, port, token, timeout_s=timeout_s) as session:
            session.publish_attributes(attrs)

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items) or 1))) as pool:
        futures = [pool.submit(one, tok, attrs) for tok, attrs in items]
        try:
            for fut in as_completed(futures):
                fut.result()
                done += 1
                if progress:
                    progress(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return done
