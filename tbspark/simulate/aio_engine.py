"""The fast publisher: every device connection on one asyncio event loop, driven through raw
non-blocking sockets (the loop's add_reader/add_writer and sock_connect, no Transport layer on
the hot path), packets built from the project's MQTT codec (tbspark.mqtt.codec.publish_prefix).

Per wake-up the engine takes the due feeds off the fleet's timing wheel and, for each, builds the
packet with one concatenation (prefix per payload length, cached for the wake-up; the message's
body drawn ahead in blocks) and hands it to the socket with one ``send()``. A socket that cannot
take everything keeps the rest in a per-connection buffer flushed when it turns writable (later
messages queue behind it, in order). Ground truth is counted inline and per zone in batches
(see Fleet.set_window).

Where the C extension is built and the fleet allows it (QoS 0; per message constant keys and at
most one random key: ``uniform_int``, or ``normal`` / ``uniform_float`` with ``decimals``; the exact
rules are ``native.stream_plan``), the whole per-message loop runs in C instead
(``_send_due_native``): one call per wake-up; the bytes a socket does not take come back here, into
the same per-connection buffer.
``TBSPARK_SIM_HOT_PATH=python`` forces the Python path. ("Engine" names the simulator's MQTT client,
``--engine asyncio`` or ``paho``; C or Python is this engine's hot path.)"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from typing import Any

from tbspark.errors import MqttError
from tbspark.mqtt import client, codec
from tbspark.simulate import native
from tbspark.mqtt.topics import TELEMETRY_TOPIC
from tbspark.simulate.fleet import MAX_BATCH, DevicePlan, Fleet

RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
MIN_SLEEP_S = 0.005
MAX_SLEEP_S = 0.05
CONNECT_GIVE_UP_S = 10.0  # after the ramp, a fleet with no device ever connected is an error
CLOSE_GRACE_S = 2.0  # waiting for the server to close the sessions we sent DISCONNECT on
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


class _Conn:
    """One device's MQTT 3.1.1 session on a non-blocking socket."""

    __slots__ = ("engine", "dev", "sock", "send", "fd", "loop", "connected", "was_connected",
                 "decoder", "inflight", "next_id", "pending", "closed", "dead")

    def __init__(self, engine: "AioEngine", dev: DevicePlan, sock: socket.socket,
                 loop: asyncio.AbstractEventLoop):
        self.engine, self.dev, self.sock, self.loop = engine, dev, sock, loop
        self.send = sock.send
        self.fd = sock.fileno()
        self.connected = False
        self.was_connected = False
        self.decoder = codec.StreamDecoder(client.MAX_PACKET_SIZE)
        self.inflight: dict[int, float | None] = {}
        self.next_id = 0
        self.pending = bytearray()  # bytes the socket did not take yet, in order
        self.closed = loop.create_future()
        self.dead = False

    def start(self) -> None:
        # The handshake stays event-driven (one reader from CONNECT to close: no extra epoll
        # registrations per connection while a fleet ramps up); the CONNACK is read by the shared
        # client.accepted.
        self.loop.add_reader(self.fd, self._readable)
        self.write(codec.encode_connect(f"tbspark-{self.dev.index}", username=self.dev.token,
                                        keep_alive=self.engine.fleet.cfg.keepalive_s))

    # ---- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Hand bytes to the connection in order; False when it is gone."""
        if self.dead:
            return False
        if self.pending:
            self.pending += data
            return True
        try:
            n = self.send(data)
        except _WOULD_BLOCK:
            n = 0
        except OSError as exc:
            self.lost(exc)
            return False
        if n != len(data):
            self.keep(data, n)
        return True

    def keep(self, data: bytes, n: int) -> None:
        """The socket took ``n`` bytes of ``data``: buffer the rest until it is writable."""
        self.pending += memoryview(data)[n:]
        self.loop.add_writer(self.fd, self._writable)
        self.engine.sync(self)

    def _writable(self) -> None:
        try:
            n = self.send(self.pending)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.lost(exc)
            return
        del self.pending[:n]
        if not self.pending:
            self.loop.remove_writer(self.fd)
        self.engine.sync(self)

    # ---- reading ---------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.lost(exc)
            return
        if not data:
            self.lost(None)
            return
        try:
            if self.connected:
                packets = self.decoder.feed(data)
            else:
                packets = client.accepted(self.decoder, data, self.engine.where)
                if packets is None:
                    return  # the CONNACK is not complete yet
                self.on_connected()
        except client.ConnectRefusedError as exc:
            self.engine.refuse(self.dev, exc)
            self.lost(None)
            return
        except codec.MqttProtocolError as exc:
            self.engine.error(f"{self.dev.name}: bad packet from the server ({exc.message})")
            self.lost(None)
            return
        self.handle(packets)

    def handle(self, packets: list) -> None:
        fleet = self.engine.fleet
        for ptype, _flags, body in packets:
            if ptype == codec.PUBACK:
                value = self.inflight.pop((body[0] << 8) | body[1], _MISSING)
                if value is not _MISSING:
                    fleet.record_acked(self.dev, value)  # type: ignore[arg-type]
            elif ptype == codec.DISCONNECT:
                self.lost(None)
                return
            if self.dead:
                return

    def on_connected(self) -> None:
        fleet = self.engine.fleet
        self.connected = self.was_connected = True
        fleet.stats.connected += 1
        fleet.set_conn(self.dev, self)
        self.engine.sync(self)
        self.engine.start_device(self.dev, time.monotonic())

    def lost(self, exc: Exception | None) -> None:
        if self.dead:
            return
        self.dead = True
        self.engine.sync(self)  # before the descriptor is closed (and its number reused)
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        engine = self.engine
        fleet = engine.fleet
        if self.connected:
            fleet.stats.connected -= 1
            fleet.set_conn(self.dev, None)
            if not engine.stopping:
                engine.error(f"{self.dev.name}: connection lost{f' ({exc})' if exc else ''}")
        self.connected = False
        # Messages still waiting for a PUBACK stay sent-but-unacknowledged in the record.
        self.inflight.clear()
        if not self.closed.done():
            self.closed.set_result(None)


_MISSING = object()


class AioEngine:
    name = "asyncio"

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        # The C hot path when it can drive this fleet (and TBSPARK_SIM_HOT_PATH allows it).
        self.native = native.choose(fleet)
        self.hot = self.native.hot if self.native is not None else None
        self.conns: dict[int, _Conn] = {}
        self.refused: set[int] = set()
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._addr: tuple | None = None
        self.where = f"{fleet.cfg.host}:{fleet.cfg.port}"

    # ---- the schedule, on whichever path drives it ------------------------------------------

    def start_device(self, dev: DevicePlan, now: float) -> None:
        if self.native is not None:
            self.native.start_device(dev, now)
        else:
            self.fleet.start_device(dev, now)

    def drop_device(self, dev: DevicePlan) -> None:
        self.fleet.drop_device(dev)
        if self.hot is not None:
            self.hot.drop(dev.index)

    def done(self) -> bool:
        return self.hot.done() if self.hot is not None else self.fleet.done

    def next_due(self) -> float | None:
        return self.hot.next_due() if self.hot is not None else self.fleet.next_due()

    def sync(self, conn: _Conn) -> None:
        """Tell the C path how the connection's device sends now: skipped (down, or more than
        max_write_buffer waiting), straight to the socket, or through the pending buffer."""
        hot = self.hot
        owner = conn.dev.conn
        if hot is None or (owner is not conn and owner is not None):
            return  # not the device's current connection
        if conn.dead or not conn.connected:
            hot.set_state(conn.dev.index, -1, 0)
        elif conn.pending:
            hot.set_state(conn.dev.index, conn.fd,
                          2 if len(conn.pending) <= self.fleet.cfg.max_write_buffer else 0)
        else:
            hot.set_state(conn.dev.index, conn.fd, 1)

    def error(self, text: str) -> None:
        self.fleet.stats.errors += 1
        self.fleet.gt.errors += 1
        self.fleet.stats.last_error = text

    def run(self, stop: Any = None) -> None:
        # What exists now (scenario, fleet, generators, ground truth) lives through the run: keep
        # it out of the cyclic collector's passes, which would otherwise walk it over and over
        # (about a tenth of the run's user CPU before).
        frozen = gc.get_freeze_count() == 0
        if frozen:
            gc.freeze()
        try:
            asyncio.run(self._main(stop))
        finally:
            if frozen:
                gc.unfreeze()
            self.fleet.flush()

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
        devices = self.fleet.devices
        i = 0
        while i < len(devices):
            # Every device whose turn has come, then sleep at least MIN_SLEEP_S: the ramp holds
            # on average without one wake-up per device (each costs ~0.1 ms of CPU).
            now = time.monotonic()
            while i < len(devices) and t0 + i / ramp <= now:
                # Keep a reference: the loop holds tasks only weakly.
                task = asyncio.create_task(self._keep_connected(devices[i]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                i += 1
            if i < len(devices):
                await asyncio.sleep(max(MIN_SLEEP_S, t0 + i / ramp - time.monotonic()))

    async def _connect(self, dev: DevicePlan) -> _Conn:
        if self._addr is None:
            self._addr = await client.resolve(self.fleet.cfg.host, self.fleet.cfg.port)
        conn = _Conn(self, dev, await client.open_socket(self._addr), asyncio.get_running_loop())
        conn.start()
        return conn

    def refuse(self, dev: DevicePlan, exc: client.ConnectRefusedError) -> None:
        """An unknown token is not a network fault: reconnecting would be refused again."""
        self.fleet.stats.refused += 1
        self.error(f"{dev.name}: the server refused its token "
                   f"({client.REFUSALS.get(exc.code, 'refused')}, CONNACK {exc.code})")
        self.refused.add(dev.index)
        self.drop_device(dev)

    async def _keep_connected(self, dev: DevicePlan) -> None:
        cfg = self.fleet.cfg
        attempt = 0
        while True:
            try:
                conn = await self._connect(dev)
            except OSError as exc:
                # sock_connect words errors "Connect call failed (addr)": name the errno instead.
                why = os.strerror(exc.errno) if exc.errno and not isinstance(
                    exc, socket.gaierror) else (exc.strerror or str(exc))
                self.error(f"{dev.name}: cannot connect to {cfg.host}:{cfg.port} ({why})")
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
        pinged = time.monotonic()
        ping = codec.encode_pingreq()
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
            if self.done() and opener.done():
                started = sum(1 for d in fleet.devices if d.sent_per_stream)
                if started + len(self.refused) >= len(fleet.devices):
                    return
            self._send_due(now)
            if now - pinged > cfg.keepalive_s / 2:
                pinged = now
                for conn in list(self.conns.values()):
                    if conn.connected:
                        conn.write(ping)
            nxt = self.next_due()
            delay = MAX_SLEEP_S if nxt is None else nxt - time.monotonic()
            # A floor on the sleep lets due messages gather into one wake-up (they are at most
            # MIN_SLEEP_S late; the schedule itself is absolute, so nothing drifts).
            await asyncio.sleep(min(MAX_SLEEP_S, max(MIN_SLEEP_S, delay)))

    def _send_due(self, now: float) -> None:
        """Send every due message: the hot path, one PUBLISH and one send() per message."""
        if self.hot is not None:
            self._send_due_native(now)
            return
        fleet = self.fleet
        feeds = fleet.pop_due(now)
        if not feeds:
            return
        qos = fleet.cfg.qos
        max_buf = fleet.cfg.max_write_buffer
        ts = fleet.timestamp(now)
        fleet.set_window(fleet.window_key(ts))
        device_ts = fleet._device_ts
        head = b'{"ts":%d,"values":{' % ts if device_ts else b"{"
        hlen = len(head)
        # Per payload length, the packet up to the message body (for QoS 0 the head included).
        prefixes: dict[int, bytes] = {}
        prefix = codec.publish_prefix
        sent = skipped = 0
        for f in feeds:
            c = f.conn
            if c is None or (c.pending and len(c.pending) > max_buf):
                skipped += 1  # not sent, so not in the ground truth
                continue
            i = f.i
            if i == f.n:
                fleet.refill(f, now)
                i = 0
            f.i = i + 1
            body = f.bodies[i]
            d = f.dev
            if ts > d.last_ts_ms and not qos:
                d.last_ts_ms = t = ts
                n = hlen + len(body)
                pre = prefixes.get(n)
                if pre is None:
                    pre = prefixes[n] = prefix(TELEMETRY_TOPIC, n, 0) + head
                pkt = pre + body
            else:
                # Strictly increasing per device: the platform keeps one point per (key, ts).
                t = ts if ts > d.last_ts_ms else d.last_ts_ms + 1
                d.last_ts_ms = t
                payload = (b'{"ts":%d,"values":{' % t if device_ts else head) + body
                if qos:
                    c.next_id = pid = c.next_id % 65535 + 1
                    c.inflight[pid] = f.nums[i]
                    pkt = b"".join((prefix(TELEMETRY_TOPIC, len(payload), qos),
                                    pid.to_bytes(2, "big"), payload))
                else:
                    pkt = prefix(TELEMETRY_TOPIC, len(payload), 0) + payload
            # _Conn.write, inlined: one method call per message is measurable on this path
            if c.pending:
                c.pending += pkt
            else:
                try:
                    k = c.send(pkt)
                except _WOULD_BLOCK:
                    k = 0
                except OSError as exc:
                    c.lost(exc)
                    skipped += 1
                    continue
                if k != len(pkt):
                    c.keep(pkt, k)
            sent += 1
            ds = f.ds
            ds.sent += 1
            v = f.nums[i]
            if v is not None:
                ds.sum += v
                if t == ts:
                    f.zbuf.append(v)
                else:
                    start, near = fleet.window_key(t)
                    fleet.gt.add_window_values(ds.zone, start, [v], near)
        stats = fleet.stats
        stats.sent += sent
        stats.skipped += skipped

    def _send_due_native(self, now: float) -> None:
        """The same, in C: one call for every due message; what a socket did not take (or could
        not, while its buffer is not empty) comes back for the connection's pending buffer."""
        fleet = self.fleet
        sent, skipped, back = self.hot.send_due(now, fleet.timestamp(now), MAX_BATCH)
        if back is not None:
            devices = fleet.devices
            touched = {}
            for i, kind, data in back:
                c = devices[i].conn
                if kind == 2:
                    if c is not None:
                        c.lost(OSError(data, os.strerror(data)))
                elif kind == 0:
                    c.keep(data, 0)
                    touched[i] = c
                else:
                    c.pending += data
                    touched[i] = c
            for c in touched.values():
                self.sync(c)  # more than max_write_buffer waiting: later messages are skipped
        stats = fleet.stats
        stats.sent += sent
        stats.skipped += skipped

    async def _drain_acks(self) -> None:
        if not self.fleet.cfg.qos:
            return
        deadline = time.monotonic() + self.fleet.cfg.ack_grace_s
        while time.monotonic() < deadline and any(c.inflight and c.connected
                                                  for c in self.conns.values()):
            await asyncio.sleep(0.02)

    async def _close_all(self) -> None:
        """DISCONNECT every session and wait (a little) for the server to close it, so that
        buffered messages go out before the socket does."""
        disconnect = codec.encode_disconnect()
        for conn in list(self.conns.values()):
            if conn.connected:
                conn.write(disconnect)
            elif not conn.dead:
                conn.lost(None)
        pending = [c.closed for c in self.conns.values() if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE_S)
        for conn in list(self.conns.values()):
            conn.lost(None)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
