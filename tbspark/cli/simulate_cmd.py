"""`tbspark simulate SCENARIO [--duration 60s | --messages N] [--seed N]` with a live view."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import check_reachable, console, handle_errors, print_json
from tbspark.cli._options import (
    JsonOpt,
    KafkaBootstrap,
    MqttHost,
    MqttPort,
    StateDirOpt,
    TbUrl,
    conn_flags,
    parse_duration,
)
from tbspark.errors import KafkaError, UsageError
from tbspark.scenario import Scenario, load_scenario
from tbspark.settings import scenario_connection
from tbspark.simulate import simulate
from tbspark.simulate.fleet import Stats
from tbspark.simulate.run import SimulationReport, load_record
from tbspark.state import StateDir


def planned_seconds(scenario: Scenario, duration_s: float | None, messages: int | None) -> float | None:
    """How long the run should take: the duration, or N messages at the slowest stream's rate."""
    if duration_s is not None:
        return duration_s
    per_stream = messages if messages is not None else scenario.simulation.messages
    if per_stream is None:
        return scenario.simulation.duration_s
    rates = [gen.rate_hz for g in scenario.devices for gen in g.telemetry.values() if gen.rate_hz]
    return per_stream / min(rates) if rates else None


def _secs(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LiveView:
    """The live view, at most 80 columns wide: elapsed and remaining time, connections, counters;
    msg/s is measured over the last second of counters."""

    def __init__(self, expected_rate: float, planned_s: float | None):
        self.expected_rate = expected_rate
        self.planned_s = planned_s
        self.started = time.monotonic()
        self._t = self.started
        self._n = 0
        self._rate = 0.0

    def render(self, stats: Stats, now: float | None = None) -> Group:
        now = time.monotonic() if now is None else now
        if now - self._t >= 1.0:
            self._rate = (stats.sent - self._n) / (now - self._t)
            self._t, self._n = now, stats.sent
        elapsed = now - self.started
        left = "?" if self.planned_s is None else "~" + _secs(self.planned_s - elapsed)
        t = Table("elapsed", "left", "devices", "sent", "msg/s", "acked", "errors", box=None,
                  pad_edge=False)
        t.add_row(_secs(elapsed), left, f"{stats.connected:,}/{stats.devices:,}", f"{stats.sent:,}",
                  f"{self._rate:,.0f}", f"{stats.acked:,}", f"{stats.errors:,}")
        notes = [f"target {self.expected_rate:,.0f} msg/s"]
        if stats.skipped:
            notes.append(f"skipped {stats.skipped:,}")
        parts: list[Any] = [t, Text(" · ".join(notes), style="dim")]
        if stats.last_error:
            parts.append(Text(f"last error: {stats.last_error}"[:80], style="yellow"))
        return Group(*parts)


@app.command("simulate")
@handle_errors
def simulate_cmd(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (provisioned first).", show_default=False),
    duration: Optional[str] = typer.Option(None, "--duration", metavar="DURATION", help="How long, e.g. 60s, 500ms, 2m "
                                           "(default: the scenario's).", show_default=False),
    messages: Optional[int] = typer.Option(None, "--messages", min=1,
                                           help="Stop after N messages per device instead."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the value generators."),
    engine: Annotated[Optional[Literal["asyncio", "paho"]], typer.Option(
        "--engine", help="MQTT client engine (default: the scenario's, asyncio).")] = None,
    qos: Annotated[Optional[Literal["0", "1"]], typer.Option(
        "--qos", help="MQTT QoS (default: the scenario's).")] = None,
    state_dir: StateDirOpt = None,
    tb_url: TbUrl = None,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    kafka_bootstrap: KafkaBootstrap = None,
    as_json: JsonOpt = False,
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N",
                                        help="Run only shard I of N of the devices (N processes run the "
                                             "fleet); ground truth to groundtruth.shard-I-of-N.json."),
) -> None:
    """Publish the scenario's telemetry from every provisioned device (one MQTT connection
    each) and write groundtruth.json: what was sent and acknowledged."""
    if duration is not None and messages is not None:
        raise UsageError("--duration and --messages exclude each other", "pass only one of them")
    duration_s = parse_duration(duration) if duration is not None else None
    qos_n = None if qos is None else int(qos)
    from tbspark.simulate.groundtruth import parse_shard

    shard_in = parse_shard(shard) if shard is not None else None
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(tb_url, mqtt_host, mqtt_port, kafka_bootstrap))
    load_record(sc, state)  # a missing record is the first thing to fix: say so before connecting
    check_reachable(conn, state.root, rest=False, mqtt=True)
    expected = sc.expected_rate_hz()
    if as_json:
        report = simulate(sc, conn, state, duration_s, messages, seed, engine=engine, qos=qos_n, shard=shard_in)
        print_json({**report.__dict__, "msg_per_s": report.msg_per_s})
        _delivery_verdict(report)
        return
    view = LiveView(expected, planned_seconds(sc, duration_s, messages))
    with Live(view.render(Stats(devices=sc.device_count())), console=console,
              refresh_per_second=4, transient=True) as live:
        report = simulate(sc, conn, state, duration_s, messages, seed, engine=engine, qos=qos_n, shard=shard_in,
                          progress=lambda st: live.update(view.render(st)))
    console.print(f"simulate {sc.name} ({report.engine}, QoS {report.qos})", highlight=False, soft_wrap=True)
    table = Table(box=None, show_header=False, pad_edge=False)
    for _ in range(2):
        table.add_column(justify="left", style="dim")
        table.add_column(justify="right")
    table.add_row("devices", f"{report.devices:,}", "elapsed", f"{report.elapsed_s:.1f} s")
    table.add_row("sent", f"{report.sent:,}", "expected", f"{report.expected:,}")
    table.add_row("acked", f"{report.acked:,}" if report.qos else "n/a (QoS 0)",
                  "msg/s", f"{report.msg_per_s:,.0f}")
    table.add_row("errors", f"{report.errors:,}", "skipped", f"{report.skipped:,}")
    table.add_row("reconnects", f"{report.reconnects:,}", "CPU", f"{report.cpu_s:.1f} s")
    console.print(table)
    if report.last_error:
        console.print(f"[yellow]last error:[/yellow] {report.last_error}", highlight=False, soft_wrap=True)
    if report.groundtruth_path:
        console.print(f"[green]✓[/green] ground truth: {report.groundtruth_path}", highlight=False,
                      soft_wrap=True)
    if report.delivery and report.delivery["ok"]:
        console.print(f"[green]✓[/green] delivery: {report.delivery['detail']}")
    elif report.delivery and report.delivery["ok"] is None:
        console.print(f"[yellow]delivery not checked:[/yellow] {report.delivery['detail']}")
    _delivery_verdict(report)


def _delivery_verdict(report: SimulationReport) -> None:
    """A run whose acknowledged messages did not reach Kafka fails, in one line (exit code of
    KafkaError), after its summary was printed."""
    if report.delivery_failed:
        raise KafkaError(f"the platform acknowledged the messages, but {report.delivery['detail']}",
                         "its rule chain does not deliver: check the Kafka node's bootstrap "
                         "address (docs/thingsboard.md, 'Kafka address of the platform') and "
                         "the server's log")
