"""`tbspark stack up | down | status` — the local Kafka broker and embedded platform."""

from __future__ import annotations

import typer
from rich.table import Table

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.cli._options import JsonOpt, StateDirOpt
from tbspark.errors import EXIT_OK, EXIT_UNAVAILABLE, UsageError
from tbspark.stack.services import DEFAULT_TOPIC, stack_down, stack_status, stack_up

stack_app = typer.Typer(help="Start, stop and inspect the local Kafka broker and embedded platform.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
@handle_errors
def up(
    state_dir: StateDirOpt = None,
    kafka_port: int = typer.Option(9092, "--kafka-port", help="Kafka's port on 127.0.0.1 (0 = a free one)."),
    http_port: int = typer.Option(8080, "--http-port", help="Platform REST port (0 = a free one)."),
    mqtt_port: int = typer.Option(1883, "--mqtt-port", help="Platform MQTT port (0 = a free one)."),
    no_platform: bool = typer.Option(False, "--no-platform", help="Start Kafka only."),
    topic: str = typer.Option(DEFAULT_TOPIC, "--topic", help="Kafka topic to create."),
    partitions: int = typer.Option(1, "--partitions", help="Partitions of the topic."),
    kafka_brokers: int = typer.Option(1, "--kafka-brokers",
                                      help="1: one broker on --kafka-port; 3 or more: a KRaft cluster on free "
                                           "ports (replication 3, min.insync.replicas 2, ≥ 2 partitions a broker)."),
    spark_workers: int = typer.Option(0, "--spark-workers",
                                      help="Start a Spark standalone cluster with this many workers "
                                           "(0: none; the job runs in local mode)."),
    as_json: JsonOpt = False,
) -> None:
    """Start Kafka (KRaft: one node, or a cluster), the embedded platform and optionally a Spark
    standalone cluster; return when they answer."""
    for name, port in (("--kafka-port", kafka_port), ("--http-port", http_port), ("--mqtt-port", mqtt_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{name} {port} is not a port", "use 1-65535, or 0 for a free port")
    if partitions < 1:
        raise UsageError(f"--partitions {partitions} must be at least 1", "pass --partitions 1 or more")
    services = stack_up(settings.state_dir(state_dir), kafka_port=kafka_port, http_port=http_port,
                        mqtt_port=mqtt_port, platform=not no_platform, topic=topic, partitions=partitions,
                        kafka_brokers=kafka_brokers, spark_workers=spark_workers)
    if as_json:
        print_json(services)
        return
    k = services["kafka"]
    if len(k.get("brokers", [])) > 1:
        pids = ", ".join(str(b["pid"]) for b in k["brokers"])
        console.print(f"[green]✓[/green] Kafka      {k['bootstrap']}  ({len(k['brokers'])} brokers, pids {pids})")
    else:
        console.print(f"[green]✓[/green] Kafka      {k['bootstrap']}  (pid {k['pid']}, log {k['log']})")
    for name, count in k.get("topics", {}).items():
        console.print(f"  topic      {name} ({count} partition(s))")
    sp = services.get("spark")
    if sp:
        console.print(f"[green]✓[/green] Spark      {sp['master']}  (pid {sp['pid']}; {len(sp['workers'])} "
                      f"worker(s), pids {', '.join(str(w['pid']) for w in sp['workers'])}; "
                      f"spark-submit --properties-file {sp['conf']})")
    p = services.get("platform")
    if p:
        console.print(f"[green]✓[/green] Platform   {p['url']}  MQTT port {p['mqtt_port']}  (pid {p['pid']}, log {p['log']})")
        console.print(f"  live page  {p['ui_url']}  (log in as the tenant)", highlight=False)


@stack_app.command("down")
@handle_errors
def down(
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop what `stack up` started (SIGTERM, then SIGKILL after a timeout)."""
    result = stack_down(settings.state_dir(state_dir))
    if as_json:
        print_json(result)
        return
    stopped = False
    for name in ("platform", "spark", "kafka"):
        for pid, how in result.get(name, {}).get("pids", {}).items():
            stopped = True
            console.print(f"{name:<9} pid {pid}: {how}")
    if not stopped:
        console.print("Nothing was running.")


@stack_app.command("status")
@handle_errors
def status(
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what runs, on which ports, with which PIDs (and the platform's counters).
    Exit 0 only when every service it lists is up (running and answering); 3 otherwise, also
    when no stack is recorded."""
    st = stack_status(settings.state_dir(state_dir))
    k = st.get("kafka")
    p = st.get("platform")
    if k:
        k["up"] = bool(k["alive"] and k.get("answers") in (True, None))
    if p:
        p["up"] = bool(p["alive"] and p.get("stats") is not None)
    sp = st.get("spark")
    if sp:
        sp["up"] = bool(sp["alive"] and all(w["alive"] for w in sp.get("workers", [])))
    listed = [svc for svc in (k, p, sp) if svc]
    st["up"] = bool(listed) and all(svc["up"] for svc in listed)
    code = EXIT_OK if st["up"] else EXIT_UNAVAILABLE
    if as_json:
        print_json(st)
        raise typer.Exit(code)
    if not listed:
        console.print(f"No stack recorded in {st['state_dir']} — start one with `tbspark stack up`.",
                      highlight=False, soft_wrap=True)
    table = Table("service", "address", "pid", "state", box=None, pad_edge=False)
    if k:
        for b in k["brokers"]:
            answers = k.get("answers") if b["alive"] else None
            table.add_row("kafka", f"{b['bootstrap']} (controller :{b['controller_port']})", str(b["pid"]), _state(b["alive"], answers))
    if sp:
        table.add_row("spark", sp["master"], str(sp["pid"]), _state(sp["alive"], None))
        for w in sp.get("workers", []):
            table.add_row(f"  worker {w['id']}", f"127.0.0.1:{w['port']}", str(w["pid"]), _state(w["alive"], None))
    if p:
        state = _state(p["alive"], p.get("answers") if p["alive"] else None)
        table.add_row("platform", f"{p['url']} (MQTT :{p['mqtt_port']})", str(p["pid"]), state)
        table.add_row("live page", p.get("ui_url", ""), "", "")
    if k or p or sp:
        console.print(table)
    if p and p.get("stats"):
        console.print("platform counters: " + ", ".join(f"{key}={val}" for key, val in _flat(p["stats"])),
                      highlight=False, soft_wrap=True)
    for pid in st.get("orphans", []):
        console.print(f"[yellow]a broker of this state dir runs unrecorded: pid {pid}[/yellow] "
                      "— `tbspark stack down` stops it")
    if listed and not st["up"]:
        logs = ", ".join(svc["log"] for svc in listed if not svc["up"] and svc.get("log"))
        console.print(f"Not every service is up — restart with `tbspark stack down` then `tbspark stack up`"
                      f"{f'; see {logs}' if logs else ''}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _flat(stats: dict, prefix: str = "") -> list[tuple[str, object]]:
    """{"mqtt": {"connected": 3}} → [("mqtt.connected", 3)]: one line of counters, nested or not."""
    out: list[tuple[str, object]] = []
    for key, val in stats.items():
        if isinstance(val, dict):
            out += _flat(val, f"{prefix}{key}.")
        elif val is not None and not isinstance(val, list):
            out.append((f"{prefix}{key}", val))
    return out


def _state(alive: bool, answers: bool | None) -> str:
    if not alive:
        return "[red]dead[/red]"
    return "[green]running[/green]" if answers in (True, None) else "[yellow]running, not answering[/yellow]"
