"""Plain entry point of the aggregation job for ``spark-submit`` (master and jars come from
spark-submit, e.g. ``--packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0``).

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 \\
        tbspark/aggregate/main.py scenarios/wind-turbines.yaml [--once] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from tbspark import settings
    from tbspark.aggregate.job import aggregate, build_session
    from tbspark.errors import TbsparkError
    from tbspark.scenario import load_scenario
    from tbspark.state import StateDir
    from tbspark.settings import connection_for as scenario_connection

    ap = argparse.ArgumentParser(prog="tbspark-aggregate", description=__doc__.splitlines()[0])
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--starting-offsets", choices=("earliest", "latest"), default="earliest")
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--state-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sc = load_scenario(args.scenario)
        state = StateDir(settings.state_dir(args.state_dir))
        conn = scenario_connection(sc, state)
        spark = build_session(master=None, shuffle_partitions=sc.aggregation.shuffle_partitions,
                              log_file=state.logs_dir / "spark.log")
        report = aggregate(sc, conn, state, checkpoint=args.checkpoint,
                           starting_offsets=args.starting_offsets, once=args.once,
                           stop_event=stop, spark=spark,
                           progress=None)
    except TbsparkError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{report.stopped}: {report.batches} batches, {report.records} records, "
          f"{report.windows_written} windows written, {report.dead_letters} dead letters", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
