"""Device state as ThingsBoard's DefaultDeviceStateService keeps it: SERVER_SCOPE attributes ``active``,
``lastConnectTime``, ``lastActivityTime``, ``lastDisconnectTime``, ``inactivityAlarmTime``, and the
CONNECT / DISCONNECT / ACTIVITY / INACTIVITY events it sends into the device's rule chain.

Activity costs the MQTT ingest path nothing: a session already notes when it last read bytes
(``MqttSession.last_seen``), and gateway sub-devices are noted with one dict store. Every
``report_ms`` (ThingsBoard's ``transport.sessions.report_timeout``, 3 s) the newest activity per
device is reported, as ThingsBoard's transport does with its LAST strategy; inactivity is checked
every ``check_interval_s`` (``state.defaultStateCheckIntervalInSec``, 60 s). State writes and event
messages leave in order through one worker, all of a round in one store transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tbspark.platform import events
from tbspark.platform.rules.msg import TbMsg

log = logging.getLogger(__name__)

ACTIVE, LAST_CONNECT, LAST_ACTIVITY = "active", "lastConnectTime", "lastActivityTime"
LAST_DISCONNECT, INACTIVITY_ALARM, INACTIVITY_TIMEOUT = "lastDisconnectTime", "inactivityAlarmTime", "inactivityTimeout"
STATE_KEYS = (ACTIVE, LAST_CONNECT, LAST_ACTIVITY, LAST_DISCONNECT, INACTIVITY_ALARM, INACTIVITY_TIMEOUT)

# ThingsBoard's defaults (thingsboard.yml): state.defaultInactivityTimeoutInSec, .defaultStateCheckIntervalInSec,
# transport.sessions.report_timeout.
DEFAULT_INACTIVITY_TIMEOUT_S = 600
DEFAULT_STATE_CHECK_INTERVAL_S = 60
DEFAULT_ACTIVITY_REPORT_MS = 3000


@dataclass(slots=True)
class DeviceState:
    """ThingsBoard's DeviceState (its JSON field order is the event messages' data)."""
    active: bool = False
    last_connect: int = 0
    last_activity: int = 0
    last_disconnect: int = 0
    inactivity_alarm: int = 0
    timeout_ms: int = 0
    created: int = 0
    sessions: int = 0

    def as_json(self, with_active: bool = True) -> dict:
        out = {"active": self.active} if with_active else {}
        out.update(lastConnectTime=self.last_connect, lastActivityTime=self.last_activity,
                   lastDisconnectTime=self.last_disconnect, lastInactivityAlarmTime=self.inactivity_alarm,
                   inactivityTimeout=self.timeout_ms)
        return out


def _long(entry, default: int) -> int:
    if entry is None:
        return default
    try:
        return int(entry[1])
    except (TypeError, ValueError):
        return default


class DeviceStateService:
    def __init__(self, store, engine, *, inactivity_timeout_s: float = DEFAULT_INACTIVITY_TIMEOUT_S,
                 check_interval_s: float = DEFAULT_STATE_CHECK_INTERVAL_S,
                 report_ms: int = DEFAULT_ACTIVITY_REPORT_MS) -> None:
        self.store = store
        self.engine = engine
        self.default_timeout_ms = int(inactivity_timeout_s * 1000)
        self.check_interval_s = check_interval_s
        self.report_ms = report_ms
        self.mqtt = None  # MqttServer, whose sessions' last_seen is read each report round
        self._states: dict[str, DeviceState] = {}
        self._touched: dict[str, int] = {}   # device id → newest activity ms not yet reported (sub-devices)
        self._seen: dict[str, float] = {}    # device id → sessions' last_seen (monotonic) already reported
        self._ops: list[tuple[str, dict, TbMsg | None]] = []  # (device id, SERVER_SCOPE values, event)
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.events_sent = 0

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker()), loop.create_task(self._every(self.report_ms / 1000, self.report)),
                       loop.create_task(self._every(self.check_interval_s, self.check))]

    async def stop(self) -> None:
        """Report the last activity, then write what is queued (the engine is still running)."""
        for t in self._tasks[1:]:
            t.cancel()
        self.report()
        await self._drain()
        if self._tasks:
            self._tasks[0].cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def clear(self) -> None:
        """After a platform reset: every device is gone."""
        self._states.clear()
        self._touched.clear()
        self._seen.clear()
        self._ops.clear()

    async def _every(self, period_s: float, fn) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                fn()
            except Exception:  # noqa: BLE001 - one bad round must not end the periodic work
                log.exception("device state round failed")

    # ------------------------------------------------------------------------------ state

    def _state(self, device) -> DeviceState:
        st = self._states.get(device.id)
        if st is None:
            attrs = self.store.get_attributes("DEVICE", device.id, "SERVER_SCOPE", STATE_KEYS)
            timeout = _long(attrs.get(INACTIVITY_TIMEOUT), 0)
            active = attrs.get(ACTIVE)
            st = DeviceState(active=bool(active[1]) if active is not None else False,
                             last_connect=_long(attrs.get(LAST_CONNECT), 0),
                             last_activity=_long(attrs.get(LAST_ACTIVITY), 0),
                             last_disconnect=_long(attrs.get(LAST_DISCONNECT), 0),
                             inactivity_alarm=_long(attrs.get(INACTIVITY_ALARM), 0),
                             timeout_ms=timeout if timeout > 0 else self.default_timeout_ms,
                             created=device.created_time)
            self._states[device.id] = st
        return st

    def _queue(self, device, values: dict, msg_type: str | None, st: DeviceState) -> None:
        msg = None
        if msg_type is not None:
            data = st.as_json(with_active=msg_type != events.CONNECT_EVENT)
            msg = events.device_state_msg(device, msg_type, data)
        self._ops.append((device.id, values, msg))
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------------------ transport hooks

    def on_connect(self, device, now_ms: int | None = None) -> None:
        """A session of ``device`` opened (its first one → CONNECT_EVENT); opening is activity."""
        now = now_ms or _now()
        st = self._state(device)
        st.sessions += 1
        if st.sessions == 1 and now > st.last_connect:
            st.last_connect = now
            self._queue(device, {LAST_CONNECT: ("LONG", now)}, events.CONNECT_EVENT, st)
            self._check_one(device, st, now)
        self._activity(device, st, now)

    def on_disconnect(self, device, last_seen: float | None = None) -> None:
        """A session closed (``last_seen``: when it last read bytes, monotonic); the last one →
        lastDisconnectTime and DISCONNECT_EVENT (``active`` stays until the inactivity timeout, as on
        ThingsBoard)."""
        st = self._states.get(device.id)
        if st is None or st.sessions <= 0:
            return
        self._report_one(device.id, last_seen)
        st.sessions -= 1
        now = _now()
        if st.sessions == 0 and now > st.last_disconnect:
            st.last_disconnect = now
            self._queue(device, {LAST_DISCONNECT: ("LONG", now)}, events.DISCONNECT_EVENT, st)

    def touch(self, device_id: str, now_ms: int) -> None:
        """Activity of a device without a session of its own (a gateway's sub-device): O(1)."""
        self._touched[device_id] = now_ms

    def on_created(self, device, user=None, gateway_id: str | None = None) -> None:
        """A new device: ENTITY_CREATED into its chain, and ``active`` = false from creation on
        (ThingsBoard's initializeActivityState). ``user`` made it through the API, or ``gateway_id``."""
        from tbspark.platform.rest.devices import device_json  # the entity as the API shows it

        self.post(events.entity_created_msg("DEVICE", device, device_json(device), user, gateway_id))
        st = self._state(device)
        self._queue(device, {ACTIVE: ("BOOLEAN", st.active)}, None, st)

    def on_deleted(self, device_id: str) -> None:
        self._states.pop(device_id, None)
        self._touched.pop(device_id, None)
        self._seen.pop(device_id, None)

    def on_server_attributes(self, device, values: dict) -> None:
        """SERVER_SCOPE attributes saved through the API: ``inactivityTimeout`` (ms) takes effect now."""
        if INACTIVITY_TIMEOUT not in values:
            return
        st = self._state(device)
        timeout = _long(values[INACTIVITY_TIMEOUT], 0)
        st.timeout_ms = timeout if timeout > 0 else self.default_timeout_ms
        self._check_one(device, st, _now())

    def post(self, msg: TbMsg) -> None:
        """Any other event message (entity created, attributes/time series updated), in order."""
        self._ops.append(("", {}, msg))
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------------------ activity

    def _activity(self, device, st: DeviceState, ts: int) -> None:
        if ts <= st.last_activity:
            return
        st.last_activity = ts
        values = {LAST_ACTIVITY: ("LONG", ts)}
        if st.active:
            self._queue(device, values, None, st)
            return
        if ts <= st.inactivity_alarm:
            st.inactivity_alarm = 0
            values[INACTIVITY_ALARM] = ("LONG", 0)
        st.active = True
        values[ACTIVE] = ("BOOLEAN", True)
        self._queue(device, values, events.ACTIVITY_EVENT, st)

    def _report_one(self, device_id: str, last_seen: float | None = None) -> None:
        """Report ``device_id``'s newest activity now (its sessions, ``last_seen``, sub-device notes)."""
        ts = self._touched.pop(device_id, None)
        sessions = self.mqtt.by_device.get(device_id) if self.mqtt is not None else None
        seen = max(s.last_seen for s in sessions) if sessions else 0.0
        if last_seen is not None and last_seen > seen:
            seen = last_seen
        if seen > self._seen.get(device_id, 0.0):
            self._seen[device_id] = seen
            at = _now() - int((time.monotonic() - seen) * 1000)
            ts = at if ts is None else max(ts, at)
        if ts is not None:
            self._activity_of(device_id, ts)

    def _activity_of(self, device_id: str, ts: int) -> None:
        st = self._states.get(device_id)
        if st is not None and ts <= st.last_activity:
            return
        dev = self.store.device_by_id(device_id)
        if dev is not None:
            self._activity(dev, st or self._state(dev), ts)

    def report(self) -> None:
        """One reporting round: the newest activity of every device active since the last round.
        Costs one comparison per connected device that was silent."""
        wall, mono = _now(), time.monotonic()
        touched, self._touched = self._touched, {}
        reported = self._seen
        for device_id, sessions in (self.mqtt.by_device.items() if self.mqtt is not None else ()):
            seen = sessions[0].last_seen if len(sessions) == 1 else max(s.last_seen for s in sessions)
            if seen > reported.get(device_id, 0.0):
                reported[device_id] = seen
                at = wall - int((mono - seen) * 1000)
                sub = touched.pop(device_id, None)
                self._activity_of(device_id, at if sub is None or sub < at else sub)
        for device_id, ts in touched.items():
            self._activity_of(device_id, ts)

    # ------------------------------------------------------------------------------ inactivity

    def _check_one(self, device, st: DeviceState, now: int) -> None:
        if now < st.last_activity + st.timeout_ms:
            return  # still active by the clock
        if st.inactivity_alarm != 0 and st.inactivity_alarm > st.last_activity:
            return  # already reported for this silence
        if st.created + st.timeout_ms > now:
            return
        st.inactivity_alarm = now
        values = {INACTIVITY_ALARM: ("LONG", now)}
        st.active = False
        values[ACTIVE] = ("BOOLEAN", False)
        self._queue(device, values, events.INACTIVITY_EVENT, st)

    def check(self) -> None:
        """ThingsBoard's checkStates: every known device whose silence outlasted its timeout."""
        now = _now()
        for device in self._all_devices():
            self._check_one(device, self._state(device), now)

    def _all_devices(self):
        devices = getattr(self.store, "_devices", None)
        return list(devices.values()) if devices is not None else []

    # ------------------------------------------------------------------------------ writes + events

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except Exception:  # noqa: BLE001 - logged; the next round goes on
                log.exception("device state write failed")

    async def _drain(self) -> None:
        while self._ops:
            ops, self._ops = self._ops, []
            # Values of one device merge (later wins); all devices' writes share one transaction.
            merged: dict[str, dict] = {}
            for device_id, values, _msg in ops:
                if values:
                    merged.setdefault(device_id, {}).update(values)
            items = [("DEVICE", did, "SERVER_SCOPE", vals) for did, vals in merged.items()
                     if self.store.device_by_id(did) is not None]
            if items:
                try:
                    await self.store.save_attributes_many(items, _now())
                except Exception as exc:  # noqa: BLE001 - the events still go; the next round writes again
                    log.warning("device state of %d devices not saved: %s", len(items), exc)
            msgs = [m for _d, _v, m in ops if m is not None]
            if msgs and self.engine is not None:
                self.events_sent += len(msgs)
                await self.engine.process(msgs)

    def stats(self) -> dict:
        return {"devices": len(self._states), "active": sum(1 for s in self._states.values() if s.active),
                "events_sent": self.events_sent}


def _now() -> int:
    return int(time.time() * 1000)
