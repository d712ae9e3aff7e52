"""The platform's connection limits: how long a client may take to say who it is (MQTT CONNECT,
HTTP headers, an HTTP body) and how many may be half-way there at once. Defaults below; the
environment overrides them through tbspark/settings.py (``platform_limits``)."""

from __future__ import annotations

import resource
from dataclasses import dataclass, fields, replace

from tbspark.errors import StackError

# ThingsBoard's MQTT transport answers within transport.mqtt.timeout (10 s); its netty pipeline has
# no CONNECT deadline of its own, so a socket that never CONNECTs is held. 10 s from accept here.
CONNECT_TIMEOUT_S = 10.0
# Tomcat's stock connectionTimeout (server.xml) is 20 s: the request line and headers must arrive
# within it. A body gets 60 s (16 MB on loopback takes well under a second).
HTTP_HEADER_TIMEOUT_S = 20.0
HTTP_BODY_TIMEOUT_S = 60.0


def default_max_half_open() -> int:
    """A quarter of the process's descriptor limit (64..1024): accepted sockets that have not sent
    their CONNECT yet can never take the descriptors established sessions and REST need."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(64, min(1024, soft // 4))


@dataclass(frozen=True)
class Limits:
    mqtt_connect_timeout_s: float = CONNECT_TIMEOUT_S
    mqtt_max_half_open: int = 0  # 0: default_max_half_open() when the server starts
    http_header_timeout_s: float = HTTP_HEADER_TIMEOUT_S
    http_body_timeout_s: float = HTTP_BODY_TIMEOUT_S

    @classmethod
    def from_overrides(cls, overrides: dict[str, str]) -> Limits:
        """Defaults with ``{field name: text}`` applied (from the environment); a bad value is a
        StackError naming it."""
        out = cls()
        kinds = {f.name: f.type for f in fields(cls)}
        for name, text in overrides.items():
            if name not in kinds:
                raise StackError(f"unknown platform limit {name!r}", f"use one of {', '.join(kinds)}")
            try:
                value = int(text) if name == "mqtt_max_half_open" else float(text)
            except ValueError:
                value = -1
            if not value > 0:
                raise StackError(f"platform limit {name}={text!r} is not a positive number",
                                 "set it to a number > 0 or unset it")
            out = replace(out, **{name: value})
        return out

    def half_open(self) -> int:
        return self.mqtt_max_half_open or default_max_half_open()
