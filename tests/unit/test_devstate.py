"""DeviceStateService (platform/devstate.py) and the event messages (platform/events.py) without
services: which state values are written and which messages reach the chain, in which order."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from tbspark.platform import events
from tbspark.platform.devstate import DeviceStateService

NULL = "13814000-1dd2-11b2-8080-808080808080"


def device(name="d1", created=None, label=None):
    return SimpleNamespace(id=f"id-{name}", name=name, type="thermostat", label=label, tenant_id="t",
                           customer_id=NULL, profile_id="p", created_time=created or int(time.time() * 1000))


class FakeStore:
    def __init__(self, *devices):
        self._devices = {d.id: d for d in devices}
        self.saved: list[tuple[str, dict]] = []

    def device_by_id(self, device_id):
        return self._devices.get(device_id)

    def get_attributes(self, entity_type, entity_id, scope, keys=None):
        return {}

    async def save_attributes_many(self, items, ts):
        self.saved += [(entity_id, vals) for _t, entity_id, _s, vals in items]


class FakeEngine:
    def __init__(self):
        self.msgs = []

    async def process(self, msgs):
        self.msgs += msgs


def run(svc, fn):
    async def go():
        fn()
        await svc._drain()
    asyncio.run(go())


def test_connect_then_activity_then_disconnect_events_in_order():
    d = device(label="roof")
    store, engine = FakeStore(d), FakeEngine()
    svc = DeviceStateService(store, engine)
    run(svc, lambda: svc.on_connect(d))
    assert [m.type for m in engine.msgs] == ["CONNECT_EVENT", "ACTIVITY_EVENT"]
    connect, activity = engine.msgs
    assert "active" not in connect.data and activity.data["active"] is True  # as ThingsBoard's JSON
    assert list(activity.data) == ["active", "lastConnectTime", "lastActivityTime", "lastDisconnectTime",
                                   "lastInactivityAlarmTime", "inactivityTimeout"]
    assert connect.metadata == {"deviceName": "d1", "deviceType": "thermostat", "deviceLabel": "roof",
                                "scope": "SERVER_SCOPE"}
    assert connect.profile_id == "p" and connect.customer_id is None  # the device profile's chain
    written = {k: v for _id, vals in store.saved for k, v in vals.items()}
    assert written["active"] == ("BOOLEAN", True) and written["lastConnectTime"][0] == "LONG"
    # A second session of the same device is no new connect; closing one of two is no disconnect.
    run(svc, lambda: svc.on_connect(d))
    run(svc, lambda: svc.on_disconnect(d))
    assert [m.type for m in engine.msgs] == ["CONNECT_EVENT", "ACTIVITY_EVENT"]
    run(svc, lambda: svc.on_disconnect(d))
    assert engine.msgs[-1].type == "DISCONNECT_EVENT" and engine.msgs[-1].data["active"] is True


def test_inactivity_once_per_silence_and_for_devices_never_seen():
    now = int(time.time() * 1000)
    seen, never = device("seen", created=now - 10_000), device("never", created=now - 10_000)
    store, engine = FakeStore(seen, never), FakeEngine()
    svc = DeviceStateService(store, engine, inactivity_timeout_s=5)
    run(svc, lambda: svc._activity(seen, svc._state(seen), now - 6000))
    run(svc, svc.check)
    kinds = [(m.type, m.originator[1]) for m in engine.msgs]
    # Silent for 6 s > 5 s; and a device created 10 s ago that never showed activity (ThingsBoard too).
    assert ("INACTIVITY_EVENT", "id-seen") in kinds and ("INACTIVITY_EVENT", "id-never") in kinds
    assert svc._states["id-seen"].inactivity_alarm >= now
    n = len(engine.msgs)
    run(svc, svc.check)
    assert len(engine.msgs) == n  # reported once for this silence
    run(svc, lambda: svc.touch("id-seen", now + 100))
    run(svc, svc.report)
    assert engine.msgs[-1].type == "ACTIVITY_EVENT" and engine.msgs[-1].originator[1] == "id-seen"


def test_inactivity_timeout_attribute_overrides_the_default():
    d = device(created=int(time.time() * 1000) - 60_000)
    store, engine = FakeStore(d), FakeEngine()
    svc = DeviceStateService(store, engine)  # default 600 s
    run(svc, lambda: svc._activity(d, svc._state(d), int(time.time() * 1000) - 3000))
    run(svc, svc.check)
    assert [m.type for m in engine.msgs] == ["ACTIVITY_EVENT"]
    run(svc, lambda: svc.on_server_attributes(d, {"inactivityTimeout": ("LONG", 2000)}))
    assert engine.msgs[-1].type == "INACTIVITY_EVENT" and engine.msgs[-1].data["inactivityTimeout"] == 2000


def test_entity_action_messages_as_thingsboard_builds_them():
    d = device()
    user = SimpleNamespace(id="u1", email="tenant@thingsboard.org", first_name=None, last_name="Admin")
    m = events.attributes_updated_msg("DEVICE", d, "SHARED_SCOPE", {"mode": ("STRING", "eco"), "n": ("LONG", 3)}, user)
    assert (m.type, m.data) == ("ATTRIBUTES_UPDATED", {"mode": "eco", "n": 3})
    assert m.metadata == {"userId": "u1", "userName": "tenant@thingsboard.org", "userEmail": "tenant@thingsboard.org",
                          "userLastName": "Admin", "scope": "SHARED_SCOPE"}
    m = events.timeseries_updated_msg("DEVICE", d, [(1, "a", "LONG", 1), (1, "b", "DOUBLE", 2.5), (2, "a", "LONG", 3)])
    assert m.data == {"timeseries": [{"ts": 1, "values": {"a": 1, "b": 2.5}}, {"ts": 2, "values": {"a": 3}}]}
    m = events.entity_created_msg("DEVICE", d, {"name": "d1"}, gateway_id="gw")
    assert (m.type, m.metadata, m.data) == ("ENTITY_CREATED", {"gatewayId": "gw"}, {"name": "d1"})
    m = events.entity_created_msg("DEVICE", d, {"name": "d1"}, user)
    assert m.metadata["entityName"] == "d1" and m.metadata["entityType"] == "DEVICE"
