"""How provision and simulate find ThingsBoard for a scenario: the scenario's platform section,
the running local stack (services.json) when the platform is embedded, the environment, flags."""

from __future__ import annotations

import json
from typing import Any

from tbspark.settings import Connection, resolve_connection
from tbspark.state import StateDir


def scenario_connection(scenario: Any, state: StateDir, flags: dict | None = None,
                        environ: dict[str, str] | None = None) -> Connection:
    p = scenario.platform
    scen = {"tb_url": p.url, "mqtt_host": p.mqtt_host, "mqtt_port": p.mqtt_port,
            "username": p.username, "password": p.password,
            "kafka_bootstrap": scenario.kafka.bootstrap}
    stack = None
    if p.kind == "embedded":
        stack = _read(state.services_file) or {}
        if not stack.get("platform"):
            # `tbspark platform serve` alone (no stack) leaves only its endpoint file.
            endpoint = _read(state.platform_dir / "endpoint.json")
            if endpoint:
                stack["platform"] = endpoint
    return resolve_connection(scen, stack, flags, environ)


def _read(path: Any) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or half-written: the other layers decide
    return data if isinstance(data, dict) else None
