"""`tbspark aggregate SCENARIO` — run the Spark job (Kafka → windowed zone aggregates → ThingsBoard)
with a live status line; the first Ctrl-C stops it cleanly between batches."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.text import Text

from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.errors import UsageError


def _status_text(st: Any) -> Text:
    lag = "?" if st.lag is None else f"{st.lag:,}"
    line = (f"batches {st.batches:,} · records {st.records:,} ({st.records_per_s:,.0f}/s last batch) · "
            f"windows written {st.windows_written:,} · zones {len(st.zones):,} · "
            f"dead letters {st.dead_letters:,} (late {st.late:,}) · lag {lag}")
    text = Text(line)
    if st.waiting:
        text.append(f"\nwaiting for ThingsBoard: {st.waiting}", style="yellow")
    return text


@app.command("aggregate")
@handle_errors
def aggregate_cmd(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    master: str = typer.Option("local[2]", "--master",
                               help="Spark master URL: local[N], or spark://HOST:PORT of a standalone "
                                    "cluster (`tbspark stack up --spark-workers M` starts one)."),
    checkpoint: str | None = typer.Option(None, "--checkpoint",
                                          help="Checkpoint location: a directory or a URI (file://, hdfs://, "
                                               "s3a:// …; default: <state>/checkpoints/<scenario>)."),
    starting_offsets: str = typer.Option("earliest", "--starting-offsets",
                                         help="Where a new checkpoint starts reading: earliest or latest."),
    once: bool = typer.Option(False, "--once", help="Process the topic's backlog, then exit."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory (default .tbspark)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
    nice: int = typer.Option(0, "--nice", min=0, max=19,
                             help="Lower the job's CPU priority (and its Spark JVM's) by this much: on a "
                                  "machine shared with the platform, ingest gets the CPU first."),
) -> None:
    """Aggregate SCENARIO's Kafka topic into per-zone windows (avg, count, min, max) on ThingsBoard."""
    from tbspark import settings
    from tbspark.aggregate.job import aggregate, cluster_conf
    from tbspark.scenario import load_scenario
    from tbspark.state import StateDir
    from tbspark.settings import connection_for as scenario_connection

    if starting_offsets not in ("earliest", "latest"):
        raise UsageError(f"--starting-offsets must be earliest or latest, not {starting_offsets!r}",
                         "pass --starting-offsets earliest (the default) or latest")
    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state)
    spark_conf = cluster_conf(master, settings.read_stack_record(state))  # the stack's cluster secret
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: give up waiting for the batch
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with Live(Text("starting Spark…"), console=console, transient=False,
                  refresh_per_second=4) as live:
            report = aggregate(sc, conn, state, master=master, checkpoint=checkpoint,
                               starting_offsets=starting_offsets, once=once,
                               progress=lambda st: live.update(_status_text(st)), stop_event=stop,
                               nice=nice, spark_conf=spark_conf)
    finally:
        signal.signal(signal.SIGINT, previous)
    if as_json:
        print_json(report.__dict__)
        return
    console.print(f"[green]✓[/green] {report.stopped}: {report.batches:,} batches, "
                  f"{report.records:,} records in {report.duration_s:.1f} s "
                  f"({report.records_per_s:,.0f}/s), {report.windows_written:,} windows written "
                  f"to {len(report.zones):,} zones, {report.dead_letters:,} dead letters "
                  f"({report.late:,} late); checkpoint {report.checkpoint}")
