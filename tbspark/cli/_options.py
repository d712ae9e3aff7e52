"""Options shared by the verbs, declared once (sqlite-utils' shared option decorators are the model;
Typer spells them as ``Annotated`` aliases). A verb that connects takes all of ``TbUrl``,
``MqttHost``, ``MqttPort``, ``KafkaBootstrap`` and ``PlatformKafkaBootstrap``; credentials come from
the environment (TB_USERNAME / TB_PASSWORD) or the scenario, never from a flag (they would show in
``ps``). Every duration option goes through ``parse_duration``.

    def verb(scenario: ScenarioArg, state_dir: StateDirOpt = None, as_json: JsonOpt = False,
             tb_url: TbUrl = None, ...) -> None:
        flags = conn_flags(tb_url=tb_url, ...)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from tbspark.errors import UsageError

CONNECTION_PANEL = "Connection (flags > environment > scenario > the local stack)"

STATE_DIR_HELP = ("State directory: the local stack's addresses and the provision record "
                  "(default: $TBSPARK_STATE_DIR or ./.tbspark).")

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario YAML file.", show_default=False)]
StateDirOpt = Annotated[Optional[Path], typer.Option("--state-dir", help=STATE_DIR_HELP, metavar="DIR",
                                                     show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout "
                                       "(progress goes to stderr).")]

TbUrl = Annotated[Optional[str], typer.Option(
    "--tb-url", metavar="URL", help="ThingsBoard's REST base URL, e.g. http://localhost:8080 (overrides TB_URL).",
    rich_help_panel=CONNECTION_PANEL, show_default=False)]
MqttHost = Annotated[Optional[str], typer.Option(
    "--mqtt-host", metavar="HOST", help="ThingsBoard's MQTT host (overrides TB_MQTT_HOST; default: --tb-url's host).",
    rich_help_panel=CONNECTION_PANEL, show_default=False)]
MqttPort = Annotated[Optional[int], typer.Option(
    "--mqtt-port", metavar="PORT", min=1, max=65535, help="ThingsBoard's MQTT port (overrides TB_MQTT_PORT; default 1883).",
    rich_help_panel=CONNECTION_PANEL, show_default=False)]
KafkaBootstrap = Annotated[Optional[str], typer.Option(
    "--kafka-bootstrap", metavar="HOST:PORT", help="Kafka as tbspark reaches it, host:port[,…] (overrides KAFKA_BOOTSTRAP).",
    rich_help_panel=CONNECTION_PANEL, show_default=False)]
PlatformKafkaBootstrap = Annotated[Optional[str], typer.Option(
    "--platform-kafka-bootstrap", metavar="HOST:PORT",
    help="Kafka as ThingsBoard's rule node reaches it, written into the rule chain (overrides "
         "TB_KAFKA_BOOTSTRAP and the scenario's kafka.bootstrap_for_platform; default: the Kafka "
         "tbspark uses). Under docker-compose: kafka:19092.",
    rich_help_panel=CONNECTION_PANEL, show_default=False)]


def conn_flags(tb_url: str | None = None, mqtt_host: str | None = None, mqtt_port: int | None = None,
               kafka_bootstrap: str | None = None, platform_kafka_bootstrap: str | None = None) -> dict:
    """The connection flags as the top layer of ``settings.resolve_connection``."""
    return {"tb_url": tb_url, "mqtt_host": mqtt_host, "mqtt_port": mqtt_port,
            "kafka_bootstrap": kafka_bootstrap, "platform_kafka_bootstrap": platform_kafka_bootstrap}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNIT_S = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 366 * 24 * 3600.0  # a year: anything longer is a typo, not a plan


def parse_duration(text: str, flag: str = "--duration") -> float:
    """The one duration syntax of every option: a positive decimal number with an optional unit
    ms, s, m or h (``500ms``, ``30s``, ``1.5m``, ``2h``; a bare number is seconds). No exponents,
    no ``inf``: what a person types, bounded. Returns seconds; a UsageError names ``flag``."""
    m = _DURATION.fullmatch((text or "").strip().lower())
    value = float(m.group(1)) * _UNIT_S[m.group(2)] if m else math.nan
    if not 0 < value <= MAX_DURATION_S:
        raise UsageError(f"{flag} {text!r} is not a duration",
                         f"a positive number with ms, s, m or h, e.g. {flag} 30s, 500ms, 2m")
    return value

