"""Server-side RPC (contract §6.2, §7.2): requests waiting for a device, delivered to its MQTT
sessions (``v1/devices/me/rpc/request/{id}``, or the v2 short topic it subscribed with) and to the
gateways that connected it (``v1/gateway/rpc``), and the replies that complete them.

It behaves like ThingsBoard's device actor for lightweight (non-persistent) RPC: request ids count
from 0 per device; a request nobody can receive yet stays pending until it expires and is sent as soon
as the device subscribes to RPC (or a gateway connects it); a one-way request is complete once sent;
at expiry the answer is TIMEOUT if it was sent and NO_ACTIVE_CONNECTION if it never was.
No socket code and no HTTP here: the REST layer (``rest/rpc.py``) turns outcomes into responses.

As on ThingsBoard, a REST call does not reach the device directly: ``call_via_chain`` posts an
``RPC_CALL_FROM_SERVER_TO_DEVICE`` message into the device's rule chain, whose RPC call request node
(rules/nodes/rpc.py) ``start``s the call; its outcome completes the REST call. A chain without that
node drops the request, and the caller gets its time-out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass

from tbspark.platform.rules.msg import TO_DEVICE_RPC, TbMsg
from tbspark.platform.transport import device_api as api

log = logging.getLogger(__name__)

OK, TIMEOUT, NO_ACTIVE_CONNECTION = "OK", "TIMEOUT", "NO_ACTIVE_CONNECTION"

GATEWAY_RPC_TOPIC = "v1/gateway/rpc"
# Subscription filter → the prefix requests are published under for that session (§6.2 v2 topics).
REQUEST_PREFIX_OF_FILTER = {
    "v1/devices/me/rpc/request/+": api.RPC_REQUEST_PREFIX,
    "v2/r/req/+": "v2/r/req/",
    "v2/r/req/j/+": "v2/r/req/j/",
}


@dataclass(frozen=True)
class Outcome:
    """How a call ended: ``OK`` with the device's reply (None: no reply body, e.g. one-way), or
    ``TIMEOUT`` / ``NO_ACTIVE_CONNECTION``."""

    status: str
    reply: bytes | None = None


@dataclass(eq=False)
class _Pending:
    device: object
    request_id: int
    method: str
    params: object
    oneway: bool
    future: asyncio.Future
    sent: bool = False

    def device_payload(self) -> bytes:
        return api.dumps({"method": self.method, "params": self.params})

    def gateway_payload(self) -> bytes:
        return api.dumps({"device": self.device.name,
                          "data": {"id": self.request_id, "method": self.method, "params": self.params}})


class RpcService:
    """One per MQTT server; ``await call(...)`` from the REST layer, the ``on_*`` hooks from the
    transport (all on the event loop)."""

    def __init__(self, server):
        self.server = server
        self._seq: dict[str, int] = {}                        # device id → next request id
        self._pending: dict[str, dict[int, _Pending]] = {}    # device id → request id → request
        self._prefix: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session → request topic prefix
        self.calls = 0
        self.replies = 0
        self.timeouts = 0
        # REST calls waiting on their rule chain: request UUID → Future of the Outcome; ``_taken``:
        # the UUIDs an RPC node has picked up (their outcome is on its way even at expiry).
        self._via_chain: dict[str, asyncio.Future] = {}
        self._taken: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        engine = getattr(server, "engine", None)
        if engine is not None:
            engine.rpc = self  # what the chain's RPC call request nodes deliver through

    def stats(self) -> dict:
        return {"calls": self.calls, "replies": self.replies, "timeouts": self.timeouts,
                "pending": sum(len(p) for p in self._pending.values())}

    # ---------------------------------------------------------------------------- REST side

    async def call_via_chain(self, engine, device, method: str, params, oneway: bool,
                             expires_at_ms: int) -> Outcome:
        """What ThingsBoard's RPC controller does: a message into the device's rule chain, then wait
        until an RPC call request node's call ends, or until ``expires_at_ms`` (TIMEOUT)."""
        uid = str(uuid.uuid4())
        fut = self._via_chain[uid] = asyncio.get_running_loop().create_future()
        now = int(time.time() * 1000)
        # ThingsBoard's message: params as JSON text, the call's settings in the metadata.
        data = {"method": method, "params": api.dumps(params).decode("utf-8"), "additionalInfo": None}
        md = {"requestUUID": uid, "originServiceId": "tbspark", "expirationTime": str(expires_at_ms),
              "oneway": "true" if oneway else "false", "persistent": "false",
              "deviceName": device.name, "deviceType": device.type}
        msg = TbMsg(TO_DEVICE_RPC, ("DEVICE", device.id), data, md, device.tenant_id,
                    device.customer_id, None, device.profile_id, now)
        try:
            await engine.process([msg])
            try:
                return await asyncio.wait_for(asyncio.shield(fut), max(0.0, (expires_at_ms - time.time() * 1000) / 1000))
            except asyncio.TimeoutError:
                if uid in self._taken:  # the node's call ends at the same expiry: its outcome decides
                    try:
                        return await asyncio.wait_for(asyncio.shield(fut), 2.0)
                    except asyncio.TimeoutError:
                        pass
                self.timeouts += 1
                return Outcome(TIMEOUT)
        finally:
            self._via_chain.pop(uid, None)
            self._taken.discard(uid)

    def start(self, device, method: str, params, oneway: bool, expires_at_ms: int,
              request_uuid: str | None, on_done) -> None:
        """An RPC call request node's call: runs in the background; ``on_done(outcome)`` after the REST
        call waiting on ``request_uuid`` (if any) got the same outcome."""
        if request_uuid in self._via_chain:
            self._taken.add(request_uuid)

        async def run() -> None:
            outcome = await self.call(device, method, params, oneway, expires_at_ms)
            fut = self._via_chain.get(request_uuid) if request_uuid else None
            if fut is not None and not fut.done():
                fut.set_result(outcome)
            on_done(outcome)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call(self, device, method: str, params, oneway: bool, expires_at_ms: int) -> Outcome:
        """Send ``{"method","params"}`` to ``device``; wait for its reply (two-way) or its delivery
        (one-way) until ``expires_at_ms`` (epoch ms)."""
        self.calls += 1
        rid = self._seq.get(device.id, 0)
        self._seq[device.id] = rid + 1
        p = _Pending(device, rid, method, params, oneway, asyncio.get_running_loop().create_future())
        self._send(p)
        if oneway and p.sent:
            return Outcome(OK)
        pending = self._pending.setdefault(device.id, {})
        pending[rid] = p
        try:
            delay = max(0.0, (expires_at_ms - time.time() * 1000) / 1000)
            return await asyncio.wait_for(asyncio.shield(p.future), delay)
        except asyncio.TimeoutError:
            self.timeouts += 1
            return Outcome(TIMEOUT if p.sent else NO_ACTIVE_CONNECTION)
        finally:
            self._forget(device.id, rid)

    def _forget(self, device_id: str, rid: int) -> None:
        pending = self._pending.get(device_id)
        if pending is not None:
            pending.pop(rid, None)
            if not pending:
                del self._pending[device_id]

    # ---------------------------------------------------------------------------- delivery

    def _send(self, p: _Pending, only=None) -> None:
        """Publish ``p`` to every session that can receive it (or just ``only``)."""
        dev_id = p.device.id
        server = self.server
        targets = [only] if only is not None else (
            [s for s in server.by_device.get(dev_id, ()) if s.subs & api.SUB_RPC_REQUEST]
            + list(server.gw_subdevices.get(dev_id, ())))
        for s in targets:
            if s.gateway is not None and dev_id != s.device.id:
                s.publish(GATEWAY_RPC_TOPIC, p.gateway_payload())
            else:
                s.publish(self._prefix.get(s, api.RPC_REQUEST_PREFIX) + str(p.request_id), p.device_payload())
            p.sent = True
        if p.sent and p.oneway and not p.future.done():
            p.future.set_result(Outcome(OK))

    def _send_waiting(self, device_id: str, session) -> None:
        for p in list(self._pending.get(device_id, {}).values()):
            if not p.sent:
                self._send(p, only=session)

    def on_subscribed(self, session, filters) -> None:
        """A device session subscribed: remember its request topic style; if it now receives RPC,
        send what was waiting for it."""
        for flt in filters:
            prefix = REQUEST_PREFIX_OF_FILTER.get(flt)
            if prefix is not None:
                self._prefix[session] = prefix
                self._send_waiting(session.device.id, session)

    def on_subdevice(self, gateway_session, device) -> None:
        """A gateway connected ``device``: it receives the device's RPC from now on."""
        self._send_waiting(device.id, gateway_session)

    # ---------------------------------------------------------------------------- replies

    def on_reply(self, device_id: str, request_id, payload: bytes) -> bool:
        """A device's (or gateway's) reply to request ``request_id``; False when nothing waits for it."""
        try:
            rid = int(request_id)
        except (TypeError, ValueError):
            return False
        p = self._pending.get(device_id, {}).get(rid)
        if p is None or p.future.done():
            return False
        self.replies += 1
        p.future.set_result(Outcome(OK, payload))
        return True
