"""Server-side RPC (contract §6.2, §7.2): requests waiting for a device, delivered to its MQTT
sessions (``v1/devices/me/rpc/request/{id}``, or the v2 short topic it subscribed with) and to the
gateways that connected it (``v1/gateway/rpc``), and the replies that complete them.

It behaves like ThingsBoard's device actor for lightweight (non-persistent) RPC: request ids count
from 0 per device; a request nobody can receive yet stays pending until it expires and is sent as soon
as the device subscribes to RPC (or a gateway connects it); a one-way request is complete once sent;
at expiry the answer is TIMEOUT if it was sent and NO_ACTIVE_CONNECTION if it never was.
No socket code and no HTTP here: the REST layer (``rest/rpc.py``) turns outcomes into responses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass

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

    def stats(self) -> dict:
        return {"calls": self.calls, "replies": self.replies, "timeouts": self.timeouts,
                "pending": sum(len(p) for p in self._pending.values())}

    # ---------------------------------------------------------------------------- REST side

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
