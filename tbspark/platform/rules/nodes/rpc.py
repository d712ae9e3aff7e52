"""RPC call request (TbSendRPCRequestNode): sends ``{"method", "params"}`` of the message to its
originator device through the platform's RPC service, completes the REST call that started it
(``requestUUID`` in the metadata), and passes the device's reply on Success (or ``{"error": ...}`` on
Failure), as ThingsBoard's node does. Without this node in the chain, server-side RPC goes nowhere and
the REST caller gets its time-out, as on ThingsBoard."""

from __future__ import annotations

import json
import time

from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, register


def _params(value):
    """ThingsBoard carries REST params as JSON text in the message; the device gets the value."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@register
class TbSendRPCRequestNode(Node):
    TYPE = PKG + "rpc.TbSendRPCRequestNode"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        timeout = self.config.get("timeoutInSeconds", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise NodeConfigError("timeoutInSeconds must be a whole number of seconds")
        self.timeout_s = timeout
        self.sent = 0

    def process(self, msgs):
        out = []
        rpc = getattr(self.engine, "rpc", None)
        for m in msgs:
            data = m.data
            if m.originator[0] != "DEVICE":
                out.append(_fail(m, "Message originator is not a device entity!"))
            elif not isinstance(data, dict) or "method" not in data:
                out.append(_fail(m, "Method is not present in the message!"))
            elif "params" not in data:
                out.append(_fail(m, "Params are not present in the message!"))
            elif rpc is None:
                out.append(_fail(m, "no MQTT transport is running to deliver RPC"))
            else:
                device = self.store.device_by_id(m.originator[1])
                if device is None:
                    out.append(_fail(m, "Device not found"))
                    continue
                md = m.metadata
                try:
                    expires = int(md["expirationTime"])
                except (KeyError, ValueError):
                    expires = int(time.time() * 1000) + self.timeout_s * 1000
                oneway = md.get("oneway", "").lower() == "true"
                rpc.start(device, str(data["method"]), _params(data["params"]), oneway, expires,
                          md.get("requestUUID"), lambda outcome, _m=m: self._done(_m, outcome))
                self.sent += 1
        return out

    def _done(self, m, outcome) -> None:
        if outcome.status == "OK":
            reply = outcome.reply
            try:
                m.data = json.loads(reply) if reply else {}
            except ValueError:
                m.data = reply.decode("utf-8", "replace")
            self.resume([("Success", m)])
        else:
            m.data = {"error": outcome.status}
            m.metadata["error"] = outcome.status
            self.resume([("Failure", m)])

    def counters(self) -> dict:
        return {"rpc_sent": self.sent}


def _fail(m, reason: str):
    m.metadata["error"] = f"RuntimeException: {reason}"
    return ("Failure", m)
