"""`tbspark verify` — read the zone aggregates back and judge them (see tbspark/verify.py)."""

from __future__ import annotations

from typing import Optional

import typer
from rich import box
from rich.table import Table

from tbspark.cli import app
from tbspark.cli._common import check_reachable, console, handle_errors, print_json
from tbspark.cli._options import (
    JsonOpt,
    KafkaBootstrap,
    MqttHost,
    MqttPort,
    ScenarioArg,
    StateDirOpt,
    TbUrl,
    conn_flags,
)
from tbspark.errors import EXIT_DOES_NOT_HOLD, EXIT_OK


def render_report(report, chart: bool = True, verdict: bool = True) -> None:
    """The verdict as a person reads it: one row per zone, the failing windows, a chart, and (unless
    ``verdict`` is False: the demo prints its own) the one verdict line."""
    from tbspark.verify import clock_utc

    table = Table(title=f"{report.scenario}: zone aggregates, {report.window_s:g}-second windows",
                  box=box.SIMPLE_HEAVY, pad_edge=False, collapse_padding=True)
    widest = max((len(z.zone) for z in report.zones), default=4)
    table.add_column("zone", no_wrap=True, min_width=min(widest, 40))
    for col in ("windows\nexpected", "\nfound", "\nmatching", "\nmessages", "\nmean",
                "expected\nmean", "\ndeviation"):
        table.add_column(col, justify="right", no_wrap=True)
    for z in report.zones:
        exp = "-" if z.expected_mean is None else f"{z.expected_mean:g} ± {z.tolerance:g}"
        dev = "-" if z.deviation is None else f"{z.deviation:+.3f}"
        if z.mean_ok is not None:
            dev = f"[{'green' if z.mean_ok else 'red'}]{dev}[/]"
        wins_ok = report.exact and z.windows_matching == z.windows_expected == z.windows_found
        table.add_row(
            z.zone, str(z.windows_expected) if report.exact else "-", str(z.windows_found),
            (f"[{'green' if wins_ok else 'red'}]{z.windows_matching}[/]" if report.exact else "-"),
            "-" if z.messages_found is None else str(z.messages_found),
            "-" if z.mean is None else f"{z.mean:.3f}", exp, dev)
    console.print(table)
    if report.mismatches:
        console.print(f"[red]{len(report.mismatches)} mismatching window(s):[/red]")
        for m in report.mismatches[:50]:
            console.print(f"  • {m.describe()}", highlight=False, soft_wrap=True)
        if len(report.mismatches) > 50:
            console.print(f"  … and {len(report.mismatches) - 50} more (see --json)")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]", highlight=False, soft_wrap=True)
    if chart and any(z.series for z in report.zones):
        console.print(zone_chart(report), highlight=False, markup=False)
    if not verdict:
        return
    when = f"run {clock_utc(report.started_ms)} – {clock_utc(report.ended_ms)} UTC" if report.started_ms else ""
    if report.holds:
        console.print(f"[bold green]HOLDS[/bold green] — {report.windows_verified} window(s) verified {when}",
                      soft_wrap=True)
    else:
        console.print(f"[bold red]DOES NOT HOLD[/bold red] {when}", soft_wrap=True)


# One plain-text marker per series, in the legend too: the chart is printed without colour (CI logs,
# piped output), so the marker is what tells the lines apart.
CHART_MARKERS = ("*", "o", "+", "x", "#", "@", "%", "=")


def zone_chart(report, width: int = 80, height: int = 15) -> str:
    """Zone averages over time as a terminal chart (plotext 6 figure API), plain text; each zone
    drawn with its own marker (``CHART_MARKERS``, cycled), named in the legend."""
    import plotext as plt

    fig = plt.figure
    fig.clear()
    fig.plot_size(width, height)
    t0 = min(ts for z in report.zones for ts, _ in z.series)
    drawn = [z for z in report.zones if z.series]
    for i, z in enumerate(drawn):
        marker = CHART_MARKERS[i % len(CHART_MARKERS)]
        sig = fig.signal([(ts - t0) / 1000 for ts, _ in z.series], [v for _, v in z.series], marker=marker)
        fig.draw(sig.label(z.zone).lines())
    fig.title("zone averages per window")
    fig.label("seconds since the first window", "x")
    # Colours are dropped: the chart must read the same in CI logs and piped output.
    return plt.uncolorize(str(fig.build()))


@app.command()
@handle_errors
def verify(
    scenario: ScenarioArg,
    since: Optional[str] = typer.Option(None, "--since", help="Judge only windows from this time "
                                        "(epoch ms or ISO-8601).", show_default=False),
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    tb_url: TbUrl = None,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    kafka_bootstrap: KafkaBootstrap = None,
) -> None:
    """Read the zone aggregates back and judge them: exit 0 when they hold, 1 when they do not
    (2: usage or scenario error, 3: ThingsBoard cannot be reached)."""
    from tbspark import settings
    from tbspark.scenario import load_scenario
    from tbspark.settings import scenario_connection
    from tbspark.state import StateDir
    from tbspark.verify import load_records, parse_since
    from tbspark.verify import verify as run_verify

    since_ms = parse_since(since) if since else None
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(tb_url, mqtt_host, mqtt_port, kafka_bootstrap))
    load_records(sc, state)  # a missing record is the first thing to fix: say so before connecting
    check_reachable(conn, state.root)
    report = run_verify(sc, conn, state, since_ms=since_ms)
    if as_json:
        print_json(report.to_dict())
    else:
        render_report(report)
    raise typer.Exit(EXIT_OK if report.holds else EXIT_DOES_NOT_HOLD)
