"""`tbspark provision SCENARIO` and `tbspark rulechain export SCENARIO -o FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.errors import UsageError
from tbspark.provision import KINDS, provision
from tbspark.scenario import load_scenario
from tbspark.state import StateDir
from tbspark.settings import connection_for as scenario_connection
from tbspark.thingsboard.rulechain import build_rule_chain, platform_bootstrap

STATE_DIR_HELP = "State directory (default: $TBSPARK_STATE_DIR or ./.tbspark)."

rulechain_app = typer.Typer(help="The Kafka forwarding rule chain.", no_args_is_help=True)
app.add_typer(rulechain_app, name="rulechain")


def conn_flags(tb_url: str | None, mqtt_host: str | None, mqtt_port: int | None,
               kafka_bootstrap: str | None) -> dict:
    if mqtt_port is not None and not 0 < mqtt_port < 65536:
        raise UsageError(f"--mqtt-port {mqtt_port} is not a port", "use 1-65535")
    return {"tb_url": tb_url, "mqtt_host": mqtt_host, "mqtt_port": mqtt_port,
            "kafka_bootstrap": kafka_bootstrap}


@app.command("provision")
@handle_errors
def provision_cmd(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    state_dir: Path = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    tb_url: str = typer.Option(None, "--tb-url", help="ThingsBoard REST URL (overrides TB_URL)."),
    mqtt_host: str = typer.Option(None, "--mqtt-host", help="MQTT host (overrides TB_MQTT_HOST)."),
    mqtt_port: int = typer.Option(None, "--mqtt-port", help="MQTT port (overrides TB_MQTT_PORT)."),
    kafka_bootstrap: str = typer.Option(None, "--kafka-bootstrap",
                                        help="Kafka as tbspark sees it (overrides KAFKA_BOOTSTRAP)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    check_delivery: bool = typer.Option(None, "--check-delivery/--no-check-delivery",
                                        help="Send a probe message through the chain and look for "
                                             "it in Kafka (default: on for a real ThingsBoard)."),
) -> None:
    """Create the scenario's rule chain, device profiles, devices (with tokens and client
    attributes), zone assets and gateway; idempotent. Writes provision.json."""
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(tb_url, mqtt_host, mqtt_port, kafka_bootstrap))
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=as_json) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        report = provision(sc, conn, state, dry_run=dry_run, progress=progress,
                           check_delivery=check_delivery)
    if as_json:
        print_json({**report.__dict__, "changed": report.changed})
        return
    if dry_run:
        console.print(f"Plan for [bold]{sc.name}[/bold] on {report.tb_url} (dry run, nothing changed):")
        for line in report.plan or ["nothing to do: everything already exists"]:
            console.print(f"  • {line}")
        return
    table = Table("", "created", "existing", "updated", box=None)
    for kind in KINDS:
        if report.created[kind] or report.existing[kind] or report.updated[kind]:
            table.add_row(kind.replace("_", " "), str(report.created[kind]),
                          str(report.existing[kind]), str(report.updated[kind]))
    console.print(table)
    if report.delivery and report.delivery["ok"]:
        console.print(f"[green]✓[/green] delivery: {report.delivery['detail']}")
    elif report.delivery:
        console.print(f"[yellow]delivery not checked:[/yellow] {report.delivery['detail']}")
    if report.changed:
        console.print(f"[green]✓[/green] provisioned {sc.name} on {report.tb_url} in "
                      f"{report.elapsed_s:.1f} s; record: {report.record_path}")
    else:
        console.print(f"[green]✓[/green] nothing changed: {sc.name} was already provisioned on "
                      f"{report.tb_url}; record: {report.record_path}")


@rulechain_app.command("export")
@handle_errors
def export(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the JSON."),
    state_dir: Path = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    kafka_bootstrap: str = typer.Option(None, "--kafka-bootstrap",
                                        help="Kafka address written into the chain (default: the "
                                             "scenario's kafka.bootstrap_for_platform, else the "
                                             "resolved bootstrap)."),
) -> None:
    """Write the forwarding chain as ThingsBoard's import JSON ({"ruleChain", "metadata"})."""
    sc = load_scenario(scenario)
    conn = scenario_connection(sc, StateDir(settings.state_dir(state_dir)))
    bootstrap = kafka_bootstrap or platform_bootstrap(sc, conn.kafka_bootstrap)
    chain = build_rule_chain(sc, bootstrap)
    try:
        output.write_text(json.dumps(chain, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write {output} ({exc.strerror})", "choose a writable path") from exc
    console.print(f"[green]✓[/green] wrote rule chain {chain['ruleChain']['name']!r} "
                  f"(Kafka {bootstrap}) to {output}")
