"""What every differential exchange uses: the target it talks to, the transcript it writes, the
normalisation that makes two servers' answers comparable, an MQTT device on paho, and a wait helper.

A transcript is a list of steps ``{"step": name, ...fields}``; everything in it is JSON. Normalised:
UUIDs → ``<uuid>`` (the nil UUID ThingsBoard uses for "no customer" → ``<nil-uuid>``), epoch-ms
instants within a day of now → ``<now>``, JWTs → ``<jwt>``, this run's unique tag → ``<u>``. The
exchanges record identity explicitly (``"same_id": true``) where it matters, and sort lists whose
order ThingsBoard does not define.
"""

from __future__ import annotations

import json
import queue
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

NIL_UUID = "13814000-1dd2-11b2-8080-808080808080"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
DAY_MS = 86_400_000
WAIT_S = 20.0  # real ThingsBoard stores a little after it acknowledges: reads wait for the data
T0 = 1_700_000_000_000  # a fixed past instant, so history ranges are exact


@dataclass
class Target:
    """One server: ``name`` is "embedded" or "thingsboard"."""

    name: str
    url: str
    mqtt_host: str
    mqtt_port: int
    username: str = "tenant@thingsboard.org"
    password: str = "tenant"
    kafka_bootstrap: str | None = None  # a broker the server's Kafka rule node can reach (chain exchanges)
    _token: str | None = field(default=None, repr=False)

    def session(self) -> requests.Session:
        s = requests.Session()
        if self._token is None:
            r = s.post(f"{self.url}/api/auth/login", json={"username": self.username, "password": self.password},
                       timeout=30)
            r.raise_for_status()
            self._token = r.json()["token"]
        s.headers["X-Authorization"] = "Bearer " + self._token
        return s


class Transcript:
    """The normalised record of one exchange against one target."""

    def __init__(self, unique: str) -> None:
        self.unique = unique
        self.steps: list[dict] = []

    def norm(self, value: Any) -> Any:
        return normalise(value, self.unique)

    def add(self, step: str, **fields: Any) -> None:
        self.steps.append({"step": step, **{k: self.norm(v) for k, v in fields.items()}})

    def http(self, step: str, resp: requests.Response, body: Callable[[Any], Any] | None = None, **extra: Any) -> Any:
        """Record status and (normalised) body; ``body`` picks what of a JSON body matters."""
        parsed = response_body(resp)
        shown = body(parsed) if body is not None and resp.ok else parsed
        self.add(step, status=resp.status_code, body=shown, **extra)
        return parsed


def response_body(resp: requests.Response) -> Any:
    """JSON when the body is JSON, else its text ('' when empty). An error body's ``timestamp`` is
    always the server's clock: kept as its type."""
    text = resp.text
    if not text:
        return ""
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


def normalise(value: Any, unique: str) -> Any:
    now = int(time.time() * 1000)
    if isinstance(value, dict):
        return {k: normalise(v, unique) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v, unique) for v in value]
    if isinstance(value, str):
        value = value.replace(unique, "<u>")
        value = _JWT.sub("<jwt>", value)
        value = value.replace(NIL_UUID, "<nil-uuid>")
        return _UUID.sub("<uuid>", value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value - now) < DAY_MS:
        return "<now>"
    return value


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy (data readable, a message arrived)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return value  # the transcript shows what was there: the comparison fails, not a hang
        time.sleep(0.1)


def new_unique() -> str:
    return uuid.uuid4().hex[:8]


# -- MQTT --------------------------------------------------------------------------------------------

class MqttDevice:
    """A paho client as a device (or gateway) would run it: connect with the access token as
    username, publish at QoS 1 (waiting for the PUBACK), collect what the server publishes."""

    def __init__(self, t: Target, token: str, level: int = 4, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        protocol = mqtt.MQTTv5 if level == 5 else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"tbdiff-{new_unique()}",
                                  protocol=protocol)
        self.client.username_pw_set(token)
        self.messages: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.disconnected = False
        self.backlog: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda c, u, f, rc, p=None: self.connack.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_disconnect = self._on_disconnect
        self.t = t

    def _on_disconnect(self, *args) -> None:
        self.disconnected = True

    def connect(self) -> str:
        """'accepted', or the refusal as paho names it."""
        self.client.connect(self.t.mqtt_host, self.t.mqtt_port, keepalive=30)
        self.client.loop_start()
        try:
            rc = self.connack.get(timeout=WAIT_S)
        except queue.Empty:
            return "no CONNACK"
        return "accepted" if not rc.is_failure else str(rc)

    def subscribe(self, topic: str) -> None:
        done: queue.Queue = queue.Queue()
        self.client.on_subscribe = lambda *a: done.put(True)
        self.client.subscribe(topic, qos=1)
        done.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> bool:
        """True when the server acknowledged (PUBACK) within the wait, False when it closed instead."""
        info = self.client.publish(topic, payload, qos=qos)
        # Either the PUBACK arrives or the server closes the session (ThingsBoard's answer to some input).
        wait_for(lambda: info.is_published() or not self.client.is_connected(), "a PUBACK or the close")
        return info.is_published()

    def next_message(self, topic: str | None = None, timeout_s: float = WAIT_S) -> tuple[str, Any] | None:
        """The next message (on ``topic``, or whose topic starts with it when it ends in '/'), decoded
        as JSON when it is; others arriving meanwhile are kept for later calls. None after the wait."""
        def wanted(t: str) -> bool:
            return topic is None or t == topic or (topic.endswith("/") and t.startswith(topic))

        for i, (t, payload) in enumerate(self.backlog):
            if wanted(t):
                del self.backlog[i]
                return t, _decoded(payload)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                t, payload = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if wanted(t):
                return t, _decoded(payload)
            self.backlog.append((t, payload))

    def connected(self) -> bool:
        return self.client.is_connected()

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def _decoded(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")
