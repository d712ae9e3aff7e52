"""The platform's MQTT transport: listens, tracks sessions, batches engine-bound messages of all
sessions into one ``engine.process`` call, writes each session's PUBACKs in one go once the batch is
stored, enforces keep-alive (1.5 × the client's value), a CONNECT deadline and a cap on sockets not
yet CONNECTed, and pushes shared-attribute changes to subscribed devices."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections import OrderedDict

from tbspark.errors import PortInUseError
from tbspark.platform import values
from tbspark.platform.limits import Limits
from tbspark.platform.rpc import RpcService
from tbspark.platform.transport import device_api as api
from tbspark.platform.transport.session import CONNECTED, MqttSession

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
PAUSE_ABOVE = 20_000       # queued messages above which sessions stop being read (backpressure)
MAX_BATCH = 4_000          # messages per engine.process call: bounds how long one batch holds the loop
RESUME_PER_BATCH = 300     # paused sessions resumed per processed batch (all at once would flood the queue)
# Ingest allocates a few short-lived objects per message; with tens of thousands queued, CPython's
# default gen-0 threshold (700) runs the cyclic collector thousands of times a second over them.
# 100,000 rather than 20,000: a 4,000-message batch allocates ~60,000 tracked objects, all alive until
# the batch ends; at 20,000 they were scanned and promoted 3 times per batch (≈ 2–3 µs per message
# measured in-process, 12 % of the engine side).
GC_THRESHOLDS = (100_000, 20, 50)


class MqttServer:
    def __init__(self, store, engine, host: str, port: int, max_packet_size: int = 65536,
                 limits: Limits | None = None):
        self.store = store
        self.engine = engine
        self.host = host
        self.port = port
        self.max_packet_size = max_packet_size
        self.sessions: set[MqttSession] = set()
        limits = limits or Limits()
        self.connect_timeout_s = limits.mqtt_connect_timeout_s
        self.max_half_open = limits.half_open()
        # Accepted sockets that have not CONNECTed yet → accept time, oldest first: the deadline and
        # the cap look at the front only.
        self._half_open: OrderedDict[MqttSession, float] = OrderedDict()
        self.by_device: dict[str, list[MqttSession]] = {}      # device id → connected sessions
        self.gw_subdevices: dict[str, list[MqttSession]] = {}  # sub-device id → gateway sessions
        self._server: asyncio.AbstractServer | None = None
        self._queue: list = []    # (session, msgs, ack | None) in arrival order
        self._queued = 0          # messages in _queue
        self._paused: list[MqttSession] = []  # sessions not read while the queue is long
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self.connections_total = 0
        self.messages = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0
        self.rejected = 0
        self.malformed = 0
        self.unknown_topic = 0
        self.batches = 0
        self.connect_timeouts = 0  # sockets closed for not CONNECTing in time
        self.half_open_evicted = 0  # sockets closed to keep the half-open ones under the cap
        self.unstored_batches = 0  # batches not acknowledged because a store write failed
        self.rpc = RpcService(self)  # server-side RPC waiting for devices (platform/rpc.py)
        self.devstate = None  # DeviceStateService (platform/devstate.py): told of connects and disconnects

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind and serve; returns the bound port (``port=0`` picks a free one)."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if gc.get_threshold()[0] < GC_THRESHOLDS[0]:  # process-wide, measured in bench/platform_mqtt.py
            gc.freeze()  # what exists now (entity caches, modules) is long-lived: out of every collection
            gc.set_threshold(*GC_THRESHOLDS)
        try:
            self._server = await loop.create_server(lambda: MqttSession(self), self.host, self.port,
                                                    backlog=4096, reuse_address=True)
        except OSError as exc:
            raise PortInUseError(self.port, "--mqtt-port", self.host) from exc
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sock.getsockname()[1]
        self._worker = asyncio.ensure_future(self._work())
        self._sweeper = asyncio.ensure_future(self._sweep())
        add = getattr(self.store, "add_attribute_listener", None)
        if add is not None:
            add(self._on_attributes)
        return self.port

    async def stop(self) -> None:
        """Stop accepting, acknowledge what is already queued, close every session."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._drain()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for s in list(self.sessions):
            s.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def stats(self) -> dict:
        return {"connections": sum(1 for s in self.sessions if s.state == CONNECTED),
                "sockets": len(self.sessions), "connections_total": self.connections_total,
                "messages": self.messages, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "errors": self.errors, "rejected_connects": self.rejected, "malformed": self.malformed,
                "unknown_topic": self.unknown_topic, "batches": self.batches,
                "queued": self._queued, "half_open": len(self._half_open),
                "connect_timeouts": self.connect_timeouts, "half_open_evicted": self.half_open_evicted,
                "unstored_batches": self.unstored_batches, "rpc": self.rpc.stats()}

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------ sessions

    def on_open(self, s: MqttSession) -> None:
        self.sessions.add(s)
        self.connections_total += 1
        half_open = self._half_open
        half_open[s] = s.last_seen
        if len(half_open) > self.max_half_open:
            # The oldest one goes: a real device CONNECTs in its first write, so what waits longest
            # is the likeliest to be idle or trickling; established sessions are never touched.
            oldest, _t = half_open.popitem(last=False)
            self.half_open_evicted += 1
            oldest.close()
        sock = s.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def on_connected(self, s: MqttSession) -> None:
        self._half_open.pop(s, None)
        self.by_device.setdefault(s.device.id, []).append(s)
        if self.devstate is not None:
            self.devstate.on_connect(s.device)

    def on_close(self, s: MqttSession) -> None:
        self.sessions.discard(s)
        self._half_open.pop(s, None)
        if s.device is not None:
            lst = self.by_device.get(s.device.id)
            if lst and s in lst:
                lst.remove(s)
                if not lst:
                    del self.by_device[s.device.id]
                if self.devstate is not None:
                    self.devstate.on_disconnect(s.device, s.last_seen)
        if s.gateway is not None:
            s.gateway.detach_all()

    def on_subdevice(self, s: MqttSession, dev, attached: bool) -> None:
        lst = self.gw_subdevices.setdefault(dev.id, [])
        if attached and s not in lst:
            lst.append(s)
            self.rpc.on_subdevice(s, dev)
            if self.devstate is not None:  # a sub-device's session opens (ThingsBoard: one per device)
                self.devstate.on_connect(dev)
        elif not attached and s in lst:
            lst.remove(s)
            if self.devstate is not None:
                self.devstate.on_disconnect(dev)
        if not lst:
            del self.gw_subdevices[dev.id]

    async def _sweep(self) -> None:
        """Keep-alive: a session silent for 1.5 × its keep-alive is closed (§3.1.2.10 of MQTT)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            late, last = now - last - SWEEP_INTERVAL_S, now
            if late > SWEEP_INTERVAL_S:
                # The loop itself was held up: bytes may sit unread in socket buffers, so silence
                # proves nothing this round. Give every session the stall back.
                for s in self.sessions:
                    s.last_seen += late
                continue
            # CONNECT deadline, counted from accept (bytes trickling in do not extend it).
            half_open, limit = self._half_open, now - self.connect_timeout_s
            while half_open:
                s, opened = next(iter(half_open.items()))
                if opened > limit:
                    break
                del half_open[s]
                self.connect_timeouts += 1
                s.close()
            for s in list(self.sessions):
                if s.state == CONNECTED and s.keep_alive and now - s.last_seen > 1.5 * s.keep_alive:
                    log.info("keep-alive expired for %s", s.device.name)
                    s.close(0x8D)

    # ------------------------------------------------------------------------------ batching

    def submit(self, s: MqttSession, msgs: list, ack: bytes | None) -> None:
        """Queue engine-bound messages; ``ack`` (a PUBACK) is written once they are processed."""
        self._queue.append((s, msgs, ack))
        self._queued += len(msgs)
        if self._queued > PAUSE_ABOVE and s.transport is not None and not s.transport.is_closing():
            s.transport.pause_reading()
            self._paused.append(s)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()
            if self._paused and not self._queue:
                self._resume_some()
                self._wake.set()
                await asyncio.sleep(0)  # let the resumed sessions be read before looking again

    def _resume_some(self) -> None:
        resume, self._paused = self._paused[:RESUME_PER_BATCH], self._paused[RESUME_PER_BATCH:]
        for s in resume:
            if s.transport is not None and not s.transport.is_closing():
                s.transport.resume_reading()

    async def _drain(self) -> None:
        while self._queue:
            if self._queued <= MAX_BATCH:  # all of it (the usual case): no walk over the entries
                entries, self._queue, n = self._queue, [], self._queued
            else:
                n, take = 0, 0
                for entry in self._queue:
                    n += len(entry[1])
                    take += 1
                    if n >= MAX_BATCH:
                        break
                entries, self._queue = self._queue[:take], self._queue[take:]
            self._queued -= n
            msgs = [m for e in entries for m in e[1]]
            self.batches += 1
            ok = True
            # Acknowledged means stored: a write of this batch that failed (disk full, database
            # locked) shows as a change of the store's failure count, and then nobody in the batch
            # is acknowledged. (A REST write failing meanwhile also counts: a spurious resend, never
            # a loss.)
            failures = getattr(self.store, "write_failures", 0)
            try:
                await self.engine.process(msgs)
            except Exception:  # noqa: BLE001 - not acknowledged: the devices will resend
                log.exception("rule engine failed on a batch of %d messages", len(msgs))
                self.errors += 1
                ok = False
            else:
                if getattr(self.store, "write_failures", 0) != failures:
                    self.unstored_batches += 1
                    ok = False
            per: dict[MqttSession, list] = {}
            for s, _msgs, ack in entries:
                if not ok:
                    # As ThingsBoard's PubAck callback onError: no PUBACK, close (MQTT 5: DISCONNECT
                    # 0x83); the device resends what it has not seen acknowledged.
                    s.close(0x83)
                elif ack is not None:
                    per.setdefault(s, []).append(ack)
            for s, parts in per.items():
                s.write(b"".join(parts) if len(parts) > 1 else parts[0])
            if self._paused and self._queued <= PAUSE_ABOVE // 2:
                self._resume_some()

    # ------------------------------------------------------------------------------ pushes

    def _on_attributes(self, entity_type: str, entity_id: str, scope: str, changed: dict) -> None:
        """Shared-attribute change → ``v1/devices/me/attributes`` (device sessions subscribed to it)
        and ``v1/gateway/attributes`` (gateways that connected the device)."""
        if entity_type != "DEVICE" or scope != "SHARED_SCOPE":
            return
        data, deleted = {}, []
        for k, v in changed.items():
            kind, value = (v[0], v[1]) if isinstance(v, tuple) else (None, v)
            if value is None:
                deleted.append(k)
            else:
                data[k] = values.render_typed(kind, value) if kind else value
        payload = api.dumps(data) if data else None
        gone = api.dumps({"deleted": deleted}) if deleted else None
        for s in self.by_device.get(entity_id, ()):
            if s.subs & api.SUB_ATTRIBUTES:
                for p in (payload, gone):
                    if p is not None:
                        s.publish("v1/devices/me/attributes", p)
        # ThingsBoard subscribes a connected sub-device to its attribute updates itself: its gateway gets
        # them whether or not it subscribed to v1/gateway/attributes (checked live, tests/differential).
        for s in self.gw_subdevices.get(entity_id, ()):
            dev = self.store.device_by_id(entity_id)
            name = dev.name if dev else entity_id
            if data:
                s.publish("v1/gateway/attributes", api.dumps({"device": name, "data": data}))
            if deleted:  # as JsonConverter.getJsonObjectForGateway
                s.publish("v1/gateway/attributes", api.dumps({"device": name, "data": {"deleted": deleted}}))
