"""The lean publisher: every device connection on one asyncio loop, packets built with the
project's MQTT codec (tbspark.mqtt.codec), publishes batched per loop wake-up."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tbspark.errors import MqttError
from tbspark.mqtt import codec
from tbspark.simulate.fleet import TELEMETRY_TOPIC, DevicePlan, Fleet

RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
MIN_SLEEP_S = 0.002
MAX_SLEEP_S = 0.05
CONNECT_GIVE_UP_S = 10.0  # after the ramp, a fleet with no device ever connected is an error


class _DeviceConn(asyncio.Protocol):
    """One device's MQTT 3.1.1 session."""

    def __init__(self, engine: "AioEngine", dev: DevicePlan):
        self.engine, self.dev = engine, dev
        self.transport: asyncio.Transport | None = None
        self.connected = False
        self.was_connected = False
        self.decoder = codec.StreamDecoder()
        self.inflight: dict[int, float | None] = {}
        self.next_id = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(codec.encode_connect(client_id=f"tbspark-{self.dev.index}",
                                             username=self.dev.token,
                                             keep_alive=self.engine.fleet.cfg.keepalive_s))

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except codec.MqttProtocolError as exc:
            self.engine.error(f"{self.dev.name}: bad packet from the server ({exc.message})")
            self.transport.close()  # type: ignore[union-attr]
            return
        fleet = self.engine.fleet
        for ptype, _flags, body in packets:
            if ptype == codec.PUBACK:
                value = self.inflight.pop((body[0] << 8) | body[1], _MISSING)
                if value is not _MISSING:
                    fleet.record_acked(self.dev, value)  # type: ignore[arg-type]
            elif ptype == codec.CONNACK:
                self.on_connack(body[1])
            elif ptype == codec.DISCONNECT:
                self.transport.close()  # type: ignore[union-attr]

    def on_connack(self, rc: int) -> None:
        fleet = self.engine.fleet
        if rc != 0:
            # An unknown token is not a network fault: reconnecting would be refused again.
            fleet.stats.refused += 1
            self.engine.error(f"{self.dev.name}: the server refused its token (CONNACK {rc})")
            self.engine.refused.add(self.dev.index)
            fleet.drop_device(self.dev)
            self.transport.close()  # type: ignore[union-attr]
            return
        self.connected = self.was_connected = True
        fleet.stats.connected += 1
        fleet.start_device(self.dev, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        fleet = self.engine.fleet
        if self.connected:
            fleet.stats.connected -= 1
            if not self.engine.stopping:
                self.engine.error(f"{self.dev.name}: connection lost"
                                  f"{f' ({exc})' if exc else ''}")
        self.connected = False
        # Messages still waiting for a PUBACK stay sent-but-unacknowledged in the record.
        self.inflight.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def packet(self, payload: bytes, qos: int, value: float | None) -> bytes:
        pid = 0
        if qos:
            self.next_id = self.next_id % 65535 + 1
            pid = self.next_id
            self.inflight[pid] = value
        return codec.encode_publish(TELEMETRY_TOPIC, payload, qos, pid)


_MISSING = object()


class AioEngine:
    name = "asyncio"

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.conns: dict[int, _DeviceConn] = {}
        self.refused: set[int] = set()
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()

    def error(self, text: str) -> None:
        self.fleet.stats.errors += 1
        self.fleet.gt.errors += 1
        self.fleet.stats.last_error = text

    def run(self, stop: Any = None) -> None:
        asyncio.run(self._main(stop))

    async def _main(self, stop: Any) -> None:
        cfg = self.fleet.cfg
        t0 = time.monotonic()
        ramp_s = len(self.fleet.devices) / cfg.ramp_per_s
        # Hard stop: every stream's quota plus the ramp plus slack for reconnects.
        longest = max((st.period_s * self.fleet.quota(st) for d in self.fleet.devices
                       for st in d.streams), default=0.0)
        hard_deadline = t0 + ramp_s + longest + 30.0
        self._give_up_at = t0 + ramp_s + CONNECT_GIVE_UP_S
        opener = asyncio.create_task(self._open_all(t0))
        try:
            await self._publish_loop(stop, opener, hard_deadline)
        finally:
            self.stopping = True
            opener.cancel()
            await self._drain_acks()
            await self._close_all()

    async def _open_all(self, t0: float) -> None:
        ramp = self.fleet.cfg.ramp_per_s
        for i, dev in enumerate(self.fleet.devices):
            delay = t0 + i / ramp - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Keep a reference: the loop holds tasks only weakly.
            task = asyncio.create_task(self._keep_connected(dev))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _keep_connected(self, dev: DevicePlan) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.fleet.cfg
        attempt = 0
        while True:
            conn = _DeviceConn(self, dev)
            try:
                await loop.create_connection(lambda: conn, cfg.host, cfg.port)
            except OSError as exc:
                self.error(f"{dev.name}: cannot connect to {cfg.host}:{cfg.port} "
                           f"({os.strerror(exc.errno) if exc.errno else exc})")
            else:
                self.conns[dev.index] = conn
                await conn.closed
                if conn.was_connected:
                    attempt = 0  # it worked before: come back quickly
            if self.stopping or dev.index in self.refused:
                return
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
            attempt += 1
            self.fleet.stats.reconnects += 1

    async def _publish_loop(self, stop: Any, opener: asyncio.Task, hard_deadline: float) -> None:
        fleet, cfg = self.fleet, self.fleet.cfg
        qos = cfg.qos
        pinged = time.monotonic()
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                return
            if not fleet.stats.connected and opener.done() and \
                    now > self._give_up_at and not any(d.sent_per_stream for d in fleet.devices):
                raise MqttError(f"no device could connect to {cfg.host}:{cfg.port}: "
                                f"{fleet.stats.last_error}",
                                "is the platform running? check TB_MQTT_HOST / TB_MQTT_PORT "
                                "and run tbspark provision again if the tokens are stale")
            if now > hard_deadline:
                self.error("the run overran its schedule (server too slow or connections failing)")
                return
            if fleet.done and opener.done():
                started = sum(1 for d in fleet.devices if d.sent_per_stream)
                if started + len(self.refused) >= len(fleet.devices):
                    return
            # Everything due in this wake-up is written with one send per connection.
            batch: dict[_DeviceConn, list[bytes]] = {}
            for dev, s in fleet.pop_due(now):
                conn = self.conns.get(dev.index)
                if conn is None or not conn.connected or \
                        conn.transport.get_write_buffer_size() > cfg.max_write_buffer:  # type: ignore[union-attr]
                    fleet.stats.skipped += 1  # not sent, so not in the ground truth
                    continue
                payload, ts, value = fleet.message(dev, s, now)
                pkts = batch.get(conn)
                if pkts is None:
                    pkts = batch[conn] = []
                pkts.append(conn.packet(payload, qos, value))
                fleet.record_sent(dev, ts, value)
            for conn, pkts in batch.items():
                conn.transport.write(pkts[0] if len(pkts) == 1 else b"".join(pkts))  # type: ignore[union-attr]
            if now - pinged > cfg.keepalive_s / 2:
                pinged = now
                for conn in self.conns.values():
                    if conn.connected:
                        conn.transport.write(codec.encode_pingreq())  # type: ignore[union-attr]
            nxt = fleet.next_due()
            delay = MAX_SLEEP_S if nxt is None else nxt - time.monotonic()
            # A floor on the sleep lets due messages gather into one wake-up (they are at most
            # MIN_SLEEP_S late; the schedule itself is absolute, so nothing drifts).
            await asyncio.sleep(min(MAX_SLEEP_S, max(MIN_SLEEP_S, delay)))

    async def _drain_acks(self) -> None:
        if not self.fleet.cfg.qos:
            return
        deadline = time.monotonic() + self.fleet.cfg.ack_grace_s
        while time.monotonic() < deadline and any(c.inflight and c.connected
                                                  for c in self.conns.values()):
            await asyncio.sleep(0.02)

    async def _close_all(self) -> None:
        for conn in self.conns.values():
            if conn.transport is not None and not conn.transport.is_closing():
                if conn.connected:
                    conn.transport.write(codec.encode_disconnect())
                conn.transport.close()
        await asyncio.sleep(0)
        pending = [c.closed for c in self.conns.values() if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
