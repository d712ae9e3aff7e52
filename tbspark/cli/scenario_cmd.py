"""`tbspark scenario check FILE` — validate a scenario and summarise it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.cli._options import JsonOpt
from tbspark.scenario import load_scenario, summarize

scenario_app = typer.Typer(help="Work with YAML scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("check")
@handle_errors
def check(
    file: Path = typer.Argument(..., help="Scenario YAML file.", show_default=False),
    as_json: JsonOpt = False,
) -> None:
    """Validate FILE strictly; print devices, zones and the expected message rate. Exit 2 if invalid."""
    summary = summarize(load_scenario(file))
    # `scenario` names the scenario in every verb's JSON
    summary = {"scenario": summary.pop("name"), **summary}
    if as_json:
        print_json(summary)
        return
    console.print(f"[green]✓[/green] {file} is a valid scenario: [bold]{summary['scenario']}[/bold]")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("devices", f"{summary['devices']:,} in {summary['device_groups']} group(s), types: {', '.join(summary['device_types'])}")
    zones = summary["zones"]
    shown = ", ".join(zones[:8]) + (f", … ({len(zones)} in all)" if len(zones) > 8 else "")
    table.add_row("zones", shown)
    table.add_row("expected rate", f"{summary['expected_msg_per_s']:,.1f} msg/s")
    table.add_row("kafka topic", f"{summary['topic']} ({summary['partitions']} partition(s))")
    table.add_row("windows", f"{summary['window_s']:g} s, watermark {summary['watermark_s']:g} s, sink {summary['sink']}")
    table.add_row("simulation", f"{summary['duration_s']:g} s, QoS {summary['qos']}, {summary['timestamps']} timestamps")
    console.print(table)
