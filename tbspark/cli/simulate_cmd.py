"""`tbspark simulate SCENARIO [--duration 60s | --messages N] [--seed N]` with a live view."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.cli.provision_cmd import STATE_DIR_HELP, conn_flags
from tbspark.errors import UsageError
from tbspark.scenario import load_scenario
from tbspark.simulate import simulate
from tbspark.simulate.fleet import Stats
from tbspark.state import StateDir
from tbspark.settings import connection_for as scenario_connection

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "ms": 0.001}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--duration {text!r} is not a duration", "e.g. --duration 60s, 90, 2m")
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


class _LiveView:
    """The live table; msg/s is measured over the last second of counters."""

    def __init__(self, expected_rate: float):
        self.expected_rate = expected_rate
        self._t = time.monotonic()
        self._n = 0
        self._rate = 0.0

    def table(self, stats: Stats) -> Table:
        now = time.monotonic()
        if now - self._t >= 1.0:
            self._rate = (stats.sent - self._n) / (now - self._t)
            self._t, self._n = now, stats.sent
        t = Table("devices connected", "sent", "msg/s", "acked", "errors", "skipped", box=None)
        t.add_row(f"{stats.connected:,}/{stats.devices:,}", f"{stats.sent:,}",
                  f"{self._rate:,.0f} (target {self.expected_rate:,.0f})", f"{stats.acked:,}",
                  f"{stats.errors:,}", f"{stats.skipped:,}")
        if stats.last_error:
            t.caption = f"last error: {stats.last_error}"
        return t


@app.command("simulate")
@handle_errors
def simulate_cmd(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (provisioned first)."),
    duration: str = typer.Option(None, "--duration", help="How long, e.g. 60s, 2m (default: the scenario's)."),
    messages: int = typer.Option(None, "--messages", help="Stop after N messages per device instead."),
    seed: int = typer.Option(None, "--seed", help="Seed of the value generators."),
    engine: str = typer.Option(None, "--engine", help="asyncio (default) or paho."),
    qos: int = typer.Option(None, "--qos", help="MQTT QoS 0 or 1 (default: the scenario's)."),
    state_dir: Path = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    mqtt_host: str = typer.Option(None, "--mqtt-host", help="MQTT host (overrides TB_MQTT_HOST)."),
    mqtt_port: int = typer.Option(None, "--mqtt-port", help="MQTT port (overrides TB_MQTT_PORT)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no live view)."),
    shard: str = typer.Option(None, "--shard", help="I/N: run only shard I of N of the devices (N processes "
                                                    "run the fleet); ground truth to groundtruth.shard-I-of-N.json."),
) -> None:
    """Publish the scenario's telemetry from every provisioned device (one MQTT connection
    each) and write groundtruth.json: what was sent and acknowledged."""
    if duration is not None and messages is not None:
        raise UsageError("--duration and --messages exclude each other", "pass only one of them")
    if qos is not None and qos not in (0, 1):
        raise UsageError(f"--qos {qos} is not supported", "use 0 or 1")
    duration_s = parse_duration(duration) if duration is not None else None
    from tbspark.simulate.groundtruth import parse_shard

    shard_in = parse_shard(shard) if shard is not None else None
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(None, mqtt_host, mqtt_port, None))
    expected = sc.expected_rate_hz()
    if as_json:
        report = simulate(sc, conn, state, duration_s, messages, seed, engine=engine, qos=qos, shard=shard_in)
        print_json({**report.__dict__, "msg_per_s": report.msg_per_s})
        return
    view = _LiveView(expected)
    with Live(view.table(Stats(devices=sc.device_count())), console=console,
              refresh_per_second=4, transient=True) as live:
        report = simulate(sc, conn, state, duration_s, messages, seed, engine=engine, qos=qos,
                          shard=shard_in, progress=lambda st: live.update(view.table(st)))
    table = Table(title=f"simulate {sc.name} ({report.engine}, QoS {report.qos})", box=None)
    for col in ("devices", "sent", "expected", "acked", "errors", "skipped", "reconnects",
                "msg/s", "elapsed", "CPU"):
        table.add_column(col, justify="right")
    table.add_row(f"{report.devices:,}", f"{report.sent:,}", f"{report.expected:,}",
                  f"{report.acked:,}" if report.qos else "n/a (QoS 0)", f"{report.errors:,}",
                  f"{report.skipped:,}", f"{report.reconnects:,}", f"{report.msg_per_s:,.0f}",
                  f"{report.elapsed_s:.1f} s", f"{report.cpu_s:.1f} s")
    console.print(table)
    if report.last_error:
        console.print(f"[yellow]last error:[/yellow] {report.last_error}")
    if report.groundtruth_path:
        console.print(f"[green]✓[/green] ground truth: {report.groundtruth_path}")
