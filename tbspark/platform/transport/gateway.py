"""Gateway API (contract §7) for sessions of devices flagged ``additionalInfo.gateway``: sub-devices
are found or created by name, and their telemetry/attributes enter the rule engine as their own."""

from __future__ import annotations

import asyncio
import logging

from tbspark.mqtt import codec as c
from tbspark.platform import values
from tbspark.platform.transport import device_api as api

log = logging.getLogger(__name__)


class GatewayStructureError(ValueError):
    """Valid JSON of the wrong shape for a gateway topic: PUBACK 0x83 and disconnect (§7.2)."""


class GatewayHandler:
    __slots__ = ("session", "devices", "__weakref__")

    def __init__(self, session):
        self.session = session
        self.devices: dict[str, object] = {}  # connected sub-devices by name

    # -------------------------------------------------------------------------- devices

    def _known(self, name: str):
        dev = self.devices.get(name)
        if dev is None:
            gw = self.session.device
            dev = self.session.server.store.device_by_name(gw.tenant_id, name)
            if dev is not None:
                self._attach(name, dev)
        return dev

    def _attach(self, name: str, dev) -> None:
        self.devices[name] = dev
        self.session.server.on_subdevice(self.session, dev, True)

    async def _ensure(self, name: str, dev_type: str | None):
        dev = self._known(name)
        if dev is None:
            values.check_name(name)  # a device ThingsBoard would refuse to create
            gw = self.session.device
            store = self.session.server.store
            # get_or_create_device blocks on a store commit: keep it off the event loop.
            dev, created = await asyncio.to_thread(
                store.get_or_create_device, gw.tenant_id, name, dev_type or "default",
                {"lastConnectedGateway": gw.id})
            devstate = self.session.server.devstate
            if created and devstate is not None:
                devstate.on_created(dev, gateway_id=gw.id)
            self._attach(name, dev)
        return dev

    def detach_all(self) -> None:
        for dev in self.devices.values():
            self.session.server.on_subdevice(self.session, dev, False)
        self.devices.clear()

    # -------------------------------------------------------------------------- publishes

    def on_publish(self, pub, now_ms: int, out: list) -> None:
        session = self.session
        try:
            body = values.loads(pub.payload)
        except ValueError as exc:
            session.malformed(pub, out, exc)
            return
        topic = pub.topic
        if topic == "v1/gateway/rpc":
            self._rpc_reply(body)
        if topic == "v1/gateway/rpc" or topic == "v1/gateway/claim":
            ack = session.ack(pub)
            if ack:
                out.append(ack)
            return
        handler = {"v1/gateway/connect": self._connect, "v1/gateway/disconnect": self._disconnect,
                   "v1/gateway/telemetry": self._telemetry, "v1/gateway/attributes": self._attributes,
                   "v1/gateway/attributes/request": self._attr_request}.get(topic)
        if handler is None:
            session.server.unknown_topic += 1
            if pub.qos:
                out.append(session.ack(pub, c.RC_TOPIC_NAME_INVALID if session.level == 5 else 0))
            return
        # Device lookups/creation may need the store: run as a task; acks follow its completion.
        session.server.spawn(self._run(handler, body, pub, now_ms))

    async def _run(self, handler, body, pub, now_ms: int) -> None:
        session = self.session
        try:
            await handler(body, pub, now_ms)
        except GatewayStructureError as exc:
            log.info("gateway %s: %s", session.device.name, exc)
            session.server.malformed += 1
            if pub.qos:
                session.write(session.ack(pub, c.RC_IMPLEMENTATION_ERROR))
            session.close(c.RC_IMPLEMENTATION_ERROR)
        except ValueError as exc:  # payload typing errors
            out: list = []
            session.malformed(pub, out, exc)
            if out:
                session.write(b"".join(out))
        except Exception as exc:  # noqa: BLE001 - e.g. the store could not create the device
            log.warning("gateway %s: %s not processed (%s: %s)", session.device.name, pub.topic,
                        type(exc).__name__, exc)
            session.server.errors += 1
            session.close(c.RC_IMPLEMENTATION_ERROR)  # unacknowledged: the gateway resends

    def _rpc_reply(self, body) -> None:
        """``{"device": name, "id": n, "data": result}`` answers server-side RPC ``n`` of that device
        (§7.2); the reply is acknowledged whatever it holds."""
        if not isinstance(body, dict) or not isinstance(body.get("device"), str) or "id" not in body:
            log.info("gateway %s sent an RPC reply without \"device\" and \"id\"", self.session.device.name)
            return
        dev = self._known(body["device"])
        if dev is None:
            return
        data = body.get("data")
        self.session.server.rpc.on_reply(dev.id, body["id"], b"" if data is None else api.dumps(data))

    def _ack_now(self, pub) -> None:
        ack = self.session.ack(pub)
        if ack:
            self.session.write(ack)

    async def _connect(self, body, pub, now_ms) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("device"), str) or not body["device"]:
            raise GatewayStructureError("connect needs {\"device\": name}")
        dtype = body.get("type")
        await self._ensure(body["device"], dtype if isinstance(dtype, str) and dtype else None)
        self._ack_now(pub)

    async def _disconnect(self, body, pub, now_ms) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("device"), str):
            raise GatewayStructureError("disconnect needs {\"device\": name}")
        dev = self.devices.pop(body["device"], None)
        if dev is not None:
            self.session.server.on_subdevice(self.session, dev, False)
        self._ack_now(pub)

    async def _telemetry(self, body, pub, now_ms) -> None:
        if not isinstance(body, dict):
            raise GatewayStructureError("telemetry must be an object of device name → array")
        good = {name: v for name, v in body.items() if isinstance(v, list)}
        if not good:
            raise GatewayStructureError("no device entry holds an array of telemetry")
        msgs = []
        for name, elements in good.items():
            dev = await self._ensure(name, None)
            # Gateway statistics ride in a "metadata" field of an element: not telemetry.
            cleaned = [{k: v for k, v in e.items() if k != "metadata"} if isinstance(e, dict) else e
                       for e in elements]
            msgs += api.telemetry_msgs(dev, api.dumps(cleaned), now_ms)
        self._submit(msgs, pub)

    async def _attributes(self, body, pub, now_ms) -> None:
        if not isinstance(body, dict):
            raise GatewayStructureError("attributes must be an object of device name → object")
        good = {name: v for name, v in body.items() if isinstance(v, dict)}
        if not good:
            raise GatewayStructureError("no device entry holds an object of attributes")
        msgs = []
        for name, attrs in good.items():
            dev = await self._ensure(name, None)
            msg = api.attributes_msg(dev, api.dumps(attrs), now_ms)
            if msg is not None:
                msgs.append(msg)
        self._submit(msgs, pub)

    def _submit(self, msgs, pub) -> None:
        devstate = self.session.server.devstate
        if devstate is not None:  # a sub-device's message is its activity
            for m in msgs:
                devstate.touch(m.originator[1], m.ts)
        if msgs:
            self.session.server.submit(self.session, msgs, self.session.ack(pub))
        else:
            self._ack_now(pub)

    async def _attr_request(self, body, pub, now_ms) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("device"), str):
            raise GatewayStructureError("attribute request needs {\"id\", \"device\", \"key\"|\"keys\"}")
        dev = await self._ensure(body["device"], None)
        store = self.session.server.store
        keys = {str(body["key"])} if "key" in body else {str(k) for k in (body.get("keys") or [])}
        if keys:
            scope = "CLIENT_SCOPE" if body.get("client") else "SHARED_SCOPE"
            found = [store.get_attributes("DEVICE", dev.id, scope, sorted(keys))]
        else:  # no key named: ThingsBoard answers with every client and shared attribute
            found = [store.get_attributes("DEVICE", dev.id, s) for s in ("CLIENT_SCOPE", "SHARED_SCOPE")]
        answer = {"id": body.get("id"), "device": body["device"]}
        for attrs in found:
            _add_values(answer, attrs, len(keys) > 1)
        self._ack_now(pub)
        self.session.publish("v1/gateway/attributes/response", api.dumps(answer))


def _add_values(answer: dict, attrs: dict, several_requested: bool) -> None:
    """ThingsBoard's JsonConverter.addValues: one key requested and found → ``"value"``; several keys
    requested → ``"values"`` with those found (even one); nothing found → neither."""
    if not attrs:
        return
    if len(attrs) == 1 and not several_requested:
        entry = next(iter(attrs.values()))
        answer["value"] = values.render_typed(entry[0], entry[1])
    else:
        out = answer.setdefault("values", {})
        for k, e in attrs.items():
            out[k] = values.render_typed(e[0], e[1])
