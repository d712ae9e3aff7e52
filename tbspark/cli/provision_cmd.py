"""`tbspark provision SCENARIO` and `tbspark rulechain export SCENARIO -o FILE`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import check_reachable, console, handle_errors, out, print_json
from tbspark.cli._options import (
    JsonOpt,
    KafkaBootstrap,
    MqttHost,
    MqttPort,
    PlatformKafkaBootstrap,
    ScenarioArg,
    StateDirOpt,
    TbUrl,
    conn_flags,
)
from tbspark.errors import UsageError
from tbspark.provision import KINDS, provision
from tbspark.scenario import load_scenario
from tbspark.settings import scenario_connection
from tbspark.state import StateDir
from tbspark.thingsboard.rulechain import build_rule_chain

rulechain_app = typer.Typer(help="The Kafka forwarding rule chain.", no_args_is_help=True)
app.add_typer(rulechain_app, name="rulechain")


@app.command("provision")
@handle_errors
def provision_cmd(
    scenario: ScenarioArg,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    state_dir: StateDirOpt = None,
    tb_url: TbUrl = None,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    kafka_bootstrap: KafkaBootstrap = None,
    platform_kafka_bootstrap: PlatformKafkaBootstrap = None,
    as_json: JsonOpt = False,
    check_delivery: bool = typer.Option(None, "--check-delivery/--no-check-delivery",
                                        help="Send a probe message through the chain and look for "
                                             "it in Kafka (default: on for a real ThingsBoard)."),
) -> None:
    """Create the scenario's rule chain, device profiles, devices (with tokens and client
    attributes), zone assets and gateway; idempotent. Writes provision.json."""
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(tb_url, mqtt_host, mqtt_port, kafka_bootstrap,
                                                platform_kafka_bootstrap))
    check_reachable(conn, state.root)
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out(as_json), transient=True,
                  disable=as_json) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        report = provision(sc, conn, state, dry_run=dry_run, progress=progress,
                           check_delivery=check_delivery)
    if as_json:
        print_json({**report.__dict__, "changed": report.changed,
                    "platform_kafka_bootstrap": conn.kafka_bootstrap_for_platform})
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
                      f"{report.elapsed_s:.1f} s (rule chain → Kafka {conn.kafka_bootstrap_for_platform}); "
                      f"record: {report.record_path}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[green]✓[/green] nothing changed: {sc.name} was already provisioned on "
                      f"{report.tb_url}; record: {report.record_path}", highlight=False, soft_wrap=True)


@rulechain_app.command("export")
@handle_errors
def export(
    scenario: ScenarioArg,
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the JSON; - for stdout."),
    state_dir: StateDirOpt = None,
    kafka_bootstrap: KafkaBootstrap = None,
    platform_kafka_bootstrap: PlatformKafkaBootstrap = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the forwarding chain as ThingsBoard's import JSON ({"ruleChain", "metadata"}).
    With -o - the chain itself is the one JSON document on stdout."""
    sc = load_scenario(scenario)
    conn = scenario_connection(sc, StateDir(settings.state_dir(state_dir)),
                          conn_flags(kafka_bootstrap=kafka_bootstrap,
                                     platform_kafka_bootstrap=platform_kafka_bootstrap))
    bootstrap = conn.kafka_bootstrap_for_platform
    chain = build_rule_chain(sc, bootstrap)
    text = json.dumps(chain, indent=2) + "\n"
    to_stdout = str(output) == "-"
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output} ({exc.strerror})", "choose a writable path") from exc
    if as_json and not to_stdout:
        print_json({"scenario": sc.name, "rule_chain": chain["ruleChain"]["name"], "output": str(output),
                    "platform_kafka_bootstrap": bootstrap})
        return
    out(as_json or to_stdout).print(
        f"[green]✓[/green] wrote rule chain {chain['ruleChain']['name']!r} (Kafka {bootstrap}) to "
        f"{'stdout' if to_stdout else output}", highlight=False, soft_wrap=True)
