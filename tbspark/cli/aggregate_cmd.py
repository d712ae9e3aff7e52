"""`tbspark aggregate SCENARIO` — run the Spark job (Kafka → windowed zone aggregates → ThingsBoard)
with a live status line; the first Ctrl-C stops it cleanly between batches."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer
from rich.live import Live
from rich.text import Text

from tbspark.cli import app
from tbspark.cli._common import check_reachable, console, handle_errors, out, print_json
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

if TYPE_CHECKING:
    from tbspark.aggregate.job import AggregateStatus  # pulls pyspark: only when the command runs


def _status_text(st: AggregateStatus) -> Text:
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
    scenario: ScenarioArg,
    master: str = typer.Option("local[2]", "--master",
                               help="Spark master URL: local[N], or spark://HOST:PORT of a standalone "
                                    "cluster (`tbspark stack up --spark-workers M` starts one)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", show_default=False,
                                             help="Checkpoint location: a directory or a URI (file://, hdfs://, "
                                                  "s3a:// …; default: <state>/checkpoints/<scenario>)."),
    starting_offsets: Annotated[Literal["earliest", "latest"], typer.Option(
        "--starting-offsets", help="Where a new checkpoint starts reading.")] = "earliest",
    once: bool = typer.Option(False, "--once", help="Process the topic's backlog, then exit."),
    state_dir: StateDirOpt = None,
    tb_url: TbUrl = None,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    kafka_bootstrap: KafkaBootstrap = None,
    as_json: JsonOpt = False,
    nice: int = typer.Option(0, "--nice", min=0, max=19,
                             help="Lower the job's CPU priority (and its Spark JVM's) by this much: on a "
                                  "machine shared with the platform, ingest gets the CPU first."),
) -> None:
    """Aggregate SCENARIO's Kafka topic into per-zone windows (avg, count, min, max) on ThingsBoard.
    Spark's and the JVM's own log goes to <state>/logs/spark.log."""
    from tbspark import settings
    from tbspark.aggregate.job import aggregate, cluster_conf
    from tbspark.scenario import load_scenario
    from tbspark.settings import scenario_connection
    from tbspark.state import StateDir

    sc = load_scenario(scenario)
    state = StateDir(settings.state_dir(state_dir))
    conn = scenario_connection(sc, state, conn_flags(tb_url, mqtt_host, mqtt_port, kafka_bootstrap))
    check_reachable(conn, state.root, mqtt=sc.aggregation.sink == "gateway", local_only=True)
    spark_conf = cluster_conf(master, settings.read_stack_record(state))  # the stack's cluster secret
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: give up waiting for the batch
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        # With --json the live line goes to stderr: stdout carries exactly the one JSON document.
        with Live(Text("starting Spark…"), console=out(as_json), transient=as_json,
                  refresh_per_second=4) as live:
            report = aggregate(sc, conn, state, master=master, checkpoint=checkpoint,
                               starting_offsets=starting_offsets, once=once,
                               progress=lambda st: live.update(_status_text(st)), stop_event=stop,
                               nice=nice, spark_conf=spark_conf)
    finally:
        signal.signal(signal.SIGINT, previous)
    if as_json:
        print_json({**report.__dict__, "checkpoint": str(report.checkpoint)})
        return
    console.print(f"[green]✓[/green] {report.stopped}: {report.batches:,} batches, "
                  f"{report.records:,} records in {report.duration_s:.1f} s "
                  f"({report.records_per_s:,.0f}/s), {report.windows_written:,} windows written "
                  f"to {len(report.zones):,} zones, {report.dead_letters:,} dead letters "
                  f"({report.late:,} late); checkpoint {report.checkpoint}")
