"""`tbspark demo` — the tutorial end to end on a fresh local stack (see tbspark/demo.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.cli._options import JsonOpt, parse_duration
from tbspark.errors import EXIT_DOES_NOT_HOLD, EXIT_OK


@app.command()
@handle_errors
def demo(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML (default: the tutorial's, "
                                              "scenarios/wind-turbines.yaml).", show_default=False),
    duration: str = typer.Option("30s", "--duration", metavar="DURATION", help="How long to simulate (30s, 500ms, 2m)."),
    keep: bool = typer.Option(False, "--keep", help="Leave Kafka and the platform running afterwards."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the value generators "
                                       "(default: the scenario's)."),
    json_out: JsonOpt = False,
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", show_default=False,
                                             help="State directory of the demo's own stack: a new or empty "
                                                  "directory (default: a fresh ./.tbspark/demo-<time>)."),
) -> None:
    """Run the pipeline end to end — stack, provision, Spark, simulate, verify — then tear it down.
    Exit 0 when the verdict holds, 1 when it does not, 3 when a service failed."""
    from tbspark.cli.verify_cmd import render_report
    from tbspark.demo import demo as run_demo
    from tbspark.scenario import load_scenario, packaged_scenario

    seconds = parse_duration(duration)
    sc = load_scenario(scenario or packaged_scenario("wind-turbines"))
    t0 = time.monotonic()
    out = console if not json_out else None

    def progress(phase: str, message: str) -> None:
        if out is not None:
            out.print(f"[dim][{time.monotonic() - t0:6.1f} s][/dim] [bold]{phase}[/bold]: {message}",
                      highlight=False, soft_wrap=True)

    report = run_demo(sc, state_dir=state_dir, duration_s=seconds, keep=keep, seed=seed,
                      progress=progress)
    if json_out:
        print_json(report.to_dict())
        raise typer.Exit(EXIT_OK if report.holds else EXIT_DOES_NOT_HOLD)
    if report.verify is not None:
        render_report(report.verify, verdict=False)  # the one verdict line is the demo's, below
    if report.problem:
        console.print(f"[red]{report.problem}[/red]", highlight=False)
    lat = "-" if report.latency_s is None else f"{report.latency_s:.1f} s"
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in report.phases.items())
    console.print(
        f"{'' if report.verify is not None else chr(10)}"  # the report ends with a blank line already
        f"[bold]{'[green]HOLDS[/green]' if report.holds else '[red]DOES NOT HOLD[/red]'}[/bold] "
        f"— {report.sent} messages sent, {report.acked} acknowledged, {report.errors} errors; "
        f"{report.windows_verified} windows verified; end-to-end latency {lat}; "
        f"verdict after {report.verdict_s:.1f} s\n"
        f"phases: {phases}\nstate directory: {report.state_dir}", highlight=False, soft_wrap=True)
    if report.kept:
        console.print(
            f"The stack is still running:\n"
            f"  live page   {report.platform_url}/tbspark/ui\n"
            f"  REST API    {report.platform_url}/api  (tenant@thingsboard.org / tenant)\n"
            f"  Kafka       {report.kafka_bootstrap}\n"
            f"  verify      tbspark verify {sc.source} --state-dir {report.state_dir}\n"
            f"  stop it     tbspark stack down --state-dir {report.state_dir}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if report.holds else EXIT_DOES_NOT_HOLD)
