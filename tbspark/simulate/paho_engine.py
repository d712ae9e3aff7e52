"""The paho-mqtt baseline engine: one paho client per device, all driven from one thread through
paho's external-loop API (loop_read/loop_write/loop_misc over a selector), no thread per client."""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tbspark.errors import MqttError
from tbspark.mqtt.topics import TELEMETRY_TOPIC
from tbspark.simulate.fleet import DevicePlan, Fleet

RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
MIN_SLEEP_S = 0.002
MAX_SLEEP_S = 0.05
CONNECT_GIVE_UP_S = 10.0


class _Dev:
    __slots__ = ("plan", "client", "connected", "was_connected", "inflight", "retry_at",
                 "attempt", "refused", "sock")

    def __init__(self, plan: DevicePlan):
        self.plan = plan
        self.client: paho.Client | None = None
        self.connected = False
        self.was_connected = False
        self.inflight: dict[int, float | None] = {}
        self.retry_at = 0.0
        self.attempt = 0
        self.refused = False
        self.sock: Any = None


class PahoEngine:
    name = "paho"

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.devs = [_Dev(p) for p in fleet.devices]
        self.sel = selectors.DefaultSelector()
        self._retry: list[_Dev] = []

    def error(self, text: str) -> None:
        self.fleet.stats.errors += 1
        self.fleet.gt.errors += 1
        self.fleet.stats.last_error = text

    # ---- paho callbacks (run inside loop_read on this thread) ------------------------------

    def _on_connect(self, client: Any, dev: _Dev, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            dev.refused = True
            self.fleet.stats.refused += 1
            self.error(f"{dev.plan.name}: the server refused its token (CONNACK: {reason})")
            self.fleet.drop_device(dev.plan)
            return
        dev.connected = dev.was_connected = True
        dev.attempt = 0
        self.fleet.stats.connected += 1
        self.fleet.start_device(dev.plan, time.monotonic())

    def _on_publish(self, client: Any, dev: _Dev, mid: int, reason: Any, props: Any) -> None:
        if mid in dev.inflight:
            self.fleet.record_acked(dev.plan, dev.inflight.pop(mid))

    # ---- connections -----------------------------------------------------------------------

    def _open(self, dev: _Dev) -> None:
        cfg = self.fleet.cfg
        if dev.client is None:
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tbspark-{dev.plan.index}",
                            protocol=paho.MQTTv311, userdata=dev)
            c.username_pw_set(dev.plan.token)
            c.on_connect = self._on_connect
            c.on_publish = self._on_publish
            dev.client = c
        try:
            if dev.was_connected or dev.attempt:
                dev.client.reconnect()
            else:
                dev.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except OSError as exc:
            self.error(f"{dev.plan.name}: cannot connect to {cfg.host}:{cfg.port} "
                       f"({exc.strerror or exc})")
            self._schedule_retry(dev)
            return
        dev.sock = dev.client.socket()
        try:
            # As asyncio does for its transports: small telemetry packets go out at once.
            dev.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sel.register(dev.sock, selectors.EVENT_READ, dev)

    def _lost(self, dev: _Dev, why: str) -> None:
        if dev.sock is not None:
            try:
                self.sel.unregister(dev.sock)
            except (KeyError, ValueError):
                pass
            dev.sock = None
        if dev.connected:
            self.fleet.stats.connected -= 1
            self.error(f"{dev.plan.name}: connection lost ({why})")
        dev.connected = False
        dev.inflight.clear()  # unacknowledged messages stay sent-but-not-acked
        if not dev.refused:
            self._schedule_retry(dev)

    def _schedule_retry(self, dev: _Dev) -> None:
        dev.retry_at = time.monotonic() + RECONNECT_BACKOFF_S[min(dev.attempt,
                                                                  len(RECONNECT_BACKOFF_S) - 1)]
        dev.attempt += 1
        self._retry.append(dev)

    def _reconnect_due(self, now: float) -> None:
        due = [d for d in self._retry if d.retry_at <= now]
        if not due:
            return
        self._retry = [d for d in self._retry if d.retry_at > now]
        for dev in due:
            if not dev.refused and dev.sock is None:
                self.fleet.stats.reconnects += 1
                self._open(dev)

    # ---- the loop --------------------------------------------------------------------------

    def run(self, stop: Any = None) -> None:
        fleet, cfg = self.fleet, self.fleet.cfg
        t0 = time.monotonic()
        n = len(self.devs)
        ramp_s = n / cfg.ramp_per_s
        longest = max((st.period_s * fleet.quota(st) for d in fleet.devices
                       for st in d.streams), default=0.0)
        hard_deadline = t0 + ramp_s + longest + 30.0
        opened = 0
        misc_at = t0
        try:
            while True:
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    break
                while opened < n and t0 + opened / cfg.ramp_per_s <= now:
                    self._open(self.devs[opened])
                    opened += 1
                for key, _ in self.sel.select(0):
                    dev = key.data
                    rc = dev.client.loop_read()
                    if rc != paho.MQTT_ERR_SUCCESS or dev.refused:
                        self._lost(dev, paho.error_string(rc))
                self._publish_due(now)
                if self._retry:
                    self._reconnect_due(now)
                if now - misc_at > 1.0:
                    misc_at = now
                    self._misc(now)
                if opened == n and fleet.done and all(d.plan.sent_per_stream or d.refused
                                                      for d in self.devs):
                    break
                if now > hard_deadline:
                    self.error("the run overran its schedule")
                    break
                if opened == n and not fleet.stats.connected and now > t0 + ramp_s + \
                        CONNECT_GIVE_UP_S and not any(d.was_connected for d in self.devs) \
                        and not all(d.refused for d in self.devs):
                    raise MqttError(f"no device could connect to {cfg.host}:{cfg.port}: "
                                    f"{fleet.stats.last_error}",
                                    "is the platform running? check TB_MQTT_HOST / TB_MQTT_PORT")
                nxt = fleet.next_due()
                delay = MAX_SLEEP_S if nxt is None else nxt - time.monotonic()
                if opened < n:
                    delay = min(delay, t0 + opened / cfg.ramp_per_s - time.monotonic())
                self.sel.select(min(MAX_SLEEP_S, max(MIN_SLEEP_S, delay)))
            self._drain_acks()
        finally:
            for dev in self.devs:
                if dev.client is not None:
                    try:
                        if dev.connected:
                            dev.client.disconnect()
                        if dev.sock is not None:
                            dev.sock.close()
                    except Exception:  # noqa: BLE001 - shutting down a dead socket
                        pass
            self.sel.close()

    def _publish_due(self, now: float) -> None:
        fleet, qos = self.fleet, self.fleet.cfg.qos
        for feed in fleet.pop_due(now):
            plan = feed.dev
            dev = self.devs[plan.index]
            if not dev.connected:
                fleet.stats.skipped += 1
                continue
            payload, ts, value = fleet.message(feed, now)
            info = dev.client.publish(TELEMETRY_TOPIC, payload, qos=qos)  # type: ignore[union-attr]
            if info.rc != paho.MQTT_ERR_SUCCESS:
                fleet.stats.skipped += 1
                self._lost(dev, paho.error_string(info.rc))
                continue
            if qos:
                dev.inflight[info.mid] = value
            fleet.record_sent(feed, ts, value)
            if dev.client.want_write():  # type: ignore[union-attr]
                dev.client.loop_write()  # type: ignore[union-attr]

    def _misc(self, now: float) -> None:
        """Keep-alive pings for every live session (paho's loop_misc)."""
        for dev in self.devs:
            if dev.connected:
                if dev.client.loop_misc() != paho.MQTT_ERR_SUCCESS:  # type: ignore[union-attr]
                    self._lost(dev, "keep-alive")
                elif dev.client.want_write():  # type: ignore[union-attr]
                    dev.client.loop_write()  # type: ignore[union-attr]

    def _drain_acks(self) -> None:
        if not self.fleet.cfg.qos:
            return
        deadline = time.monotonic() + self.fleet.cfg.ack_grace_s
        while time.monotonic() < deadline and any(d.inflight and d.connected for d in self.devs):
            for key, _ in self.sel.select(0.02):
                dev = key.data
                if dev.client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    self._lost(dev, "closed")
