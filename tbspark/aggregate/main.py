"""Plain entry point of the aggregation job for ``spark-submit``: master, jars and the driver's JVM
flags come from spark-submit; docs/scaling.md has the full command for a standalone cluster.

    spark-submit --master spark://HOST:7077 --driver-java-options -Xss16m \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd,)" \\
        tbspark/aggregate/main.py scenarios/wind-turbines.yaml \\
        --kafka-bootstrap HOST:9092 --tb-url http://HOST:8080 --checkpoint hdfs://nn:8020/tbspark/ckpt

Connection settings: these flags, or the environment (KAFKA_BOOTSTRAP, TB_URL, TB_MQTT_HOST,
TB_MQTT_PORT, TB_USERNAME, TB_PASSWORD) of the driver — in cluster deploy mode set them with
``--conf spark.yarn.appMasterEnv.TB_PASSWORD=…`` (YARN) or ``spark.kubernetes.driverEnv.…``
(Kubernetes). The password is never a flag (it would show in ``ps``): TB_PASSWORD or
``--password-file``. This module imports nothing of ``tbspark.stack`` (the local services).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

# The driver's thread stack: spark-submit starts the JVM before this file runs, so the job cannot set
# it; without it, deep py4j callbacks of foreachBatch can overflow.
NEEDED_JAVA_OPTION = "-Xss16m"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tbspark-aggregate", description=__doc__.splitlines()[0],
                                 allow_abbrev=False)  # "--password" must not mean --password-file
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint location: a path or a URI (file://, hdfs://, s3a:// …)")
    ap.add_argument("--starting-offsets", choices=("earliest", "latest"), default="earliest")
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--state-dir", type=Path, default=None)
    ap.add_argument("--kafka-bootstrap", default=None, help="Kafka bootstrap servers (host:port,…)")
    ap.add_argument("--tb-url", default=None, help="ThingsBoard's REST URL")
    ap.add_argument("--mqtt-host", default=None, help="ThingsBoard's MQTT host (gateway sink)")
    ap.add_argument("--mqtt-port", type=int, default=None, help="ThingsBoard's MQTT port (gateway sink)")
    ap.add_argument("--username", default=None, help="tenant administrator login")
    ap.add_argument("--password-file", type=Path, default=None,
                    help="a file holding the tenant administrator's password (else TB_PASSWORD)")
    return ap.parse_args(argv)


def connection_flags(args: argparse.Namespace) -> dict:
    """The flags as a layer for ``settings.resolve_connection`` (None: not given)."""
    flags = {"kafka_bootstrap": args.kafka_bootstrap, "tb_url": args.tb_url, "mqtt_host": args.mqtt_host,
             "mqtt_port": args.mqtt_port, "username": args.username}
    if args.password_file is not None:
        from tbspark.errors import UsageError

        try:
            flags["password"] = args.password_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --password-file {args.password_file} ({exc.strerror})",
                             "pass a readable file holding only the password") from exc
    return flags


def driver_java_options_warning(spark) -> str | None:
    """A warning when the driver JVM was started without the stack size the job needs."""
    opts = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions", "") or ""
    if NEEDED_JAVA_OPTION in opts.split():
        return None
    return (f"warning: the driver JVM runs without {NEEDED_JAVA_OPTION}; pass "
            f"`--driver-java-options {NEEDED_JAVA_OPTION}` to spark-submit (deep foreachBatch "
            "callbacks can overflow the default stack)")


def main(argv: list[str] | None = None) -> int:
    from tbspark import settings
    from tbspark.aggregate.job import aggregate, build_session
    from tbspark.errors import TbsparkError
    from tbspark.scenario import load_scenario
    from tbspark.state import StateDir

    args = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sc = load_scenario(args.scenario)
        state = StateDir(settings.state_dir(args.state_dir))
        conn = settings.scenario_connection(sc, state, flags=connection_flags(args))
        spark = build_session(master=None, shuffle_partitions=sc.aggregation.shuffle_partitions,
                              log_file=state.logs_dir / "spark.log")
        warning = driver_java_options_warning(spark)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        report = aggregate(sc, conn, state, master=None, checkpoint=args.checkpoint,
                           starting_offsets=args.starting_offsets, once=args.once,
                           stop_event=stop, spark=spark, progress=None)
    except TbsparkError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{report.stopped}: {report.batches} batches, {report.records} records, "
          f"{report.windows_written} windows written, {report.dead_letters} dead letters; "
          f"checkpoint {report.checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
