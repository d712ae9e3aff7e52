"""The Spark Structured Streaming job: Kafka source → parse → per-batch partial aggregates (Spark)
→ window state and watermark (``windows.WindowState``) → sink, all inside one foreachBatch, with
dead letters to ``<topic>.dlq``. Stops only between batches (see ``_Runner.stop``)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from tbspark import settings
from tbspark.aggregate.parse import (TS_KEY, ParseSpec, batch_partials, classify_groups, dead_letters,
                                     parse, parse_stable)
from tbspark.aggregate.location import location_uri
from tbspark.aggregate.sinks import (GatewaySink, RestSink, Sink, StopRequested, produce_letters,
                                     refusal_letters, write_until_done)
from tbspark.aggregate.store import WindowStore, open_store
from tbspark.aggregate.tuning import DEFAULT_TUNING, JobTuning
from tbspark.aggregate.windows import WindowState, ZoneWindow
from tbspark.errors import AggregationError, TbsparkError
from tbspark.settings import Connection
from tbspark.state import ProvisionRecord, StateDir

if TYPE_CHECKING:
    from tbspark.scenario import Scenario


# The job's tuning (driver JVM flags, session settings, source options, single-task batches, JIT
# priming) is ``tuning.JobTuning``, passed in; its defaults cite the measurements behind them.
# A file to append one JSON line per micro-batch to (diagnosis, e.g. bench/e2e.py's latency split):
# wall-clock start and end, records, rejects by reason, watermark, and each window written with its
# count so far. Read from the environment by tbspark.settings.
BATCH_LOG_ENV = settings.BATCH_LOG


@dataclass
class AggregateStatus:
    """What the status line shows; also the running totals of the report."""

    batches: int = 0
    records: int = 0
    dead_letters: int = 0
    late: int = 0
    windows_written: int = 0
    zones: set[str] = field(default_factory=set)
    records_per_s: float = 0.0
    lag: int | None = None  # records in Kafka not yet read
    watermark_ms: int | None = None
    waiting: str | None = None  # set while a write is being retried
    # the last batch's phases, seconds: Spark (parse + partial aggregates, collected), the sink
    phase_s: dict[str, float] = field(default_factory=dict)


@dataclass
class AggregateReport:
    scenario: str
    checkpoint: str  # the checkpoint's URI
    batches: int
    records: int
    dead_letters: int
    late: int
    windows_written: int
    zones: list[str]
    duration_s: float
    records_per_s: float
    stopped: str  # "caught up" (--once) | "stop requested"


def spark_properties(path: str | Path) -> dict[str, str]:
    """A Spark properties file (``key value`` lines, as spark-defaults.conf) as a dict: the one
    `tbspark stack up --spark-workers M` writes holds its cluster's shared secret."""
    conf: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = (re.split(r"\s*[=\s]\s*", line, maxsplit=1) + [""])[:2]
            conf[key] = value
    return conf


def cluster_conf(master: str | None, stack: dict | None) -> dict[str, str]:
    """Settings for a ``spark://`` master: the local stack's properties (secret, executor memory)
    when it is that stack's cluster, and a driver on loopback when the master is on loopback (the
    executors connect back to it; by default it would listen on the host's public address)."""
    if not master or not master.startswith("spark://"):
        return {}
    conf: dict[str, str] = {}
    sp = (stack or {}).get("spark") or {}
    if sp.get("master") == master and sp.get("conf"):
        conf.update(spark_properties(sp["conf"]))
    host = master[len("spark://"):].split(",")[0].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        conf.setdefault("spark.driver.host", "127.0.0.1")
        conf.setdefault("spark.driver.bindAddress", "127.0.0.1")
    return conf


def build_session(master: str | None = "local[2]", shuffle_partitions: int | None = None,
                  jars: list[Path] | None = None, app_name: str = "tbspark-aggregate",
                  log_file: Path | None = None, conf: dict[str, str] | None = None,
                  tuning: JobTuning = DEFAULT_TUNING) -> Any:
    """A SparkSession for the job (or the running one): UI off, WARN logs, shuffle partitions sized
    to the cores (Spark's default 200 cannot keep up with a 10 s window at 50K rows/s). With
    ``log_file``, a JVM started here logs there and not to the terminal (see ``sparklog``).
    ``conf``: further settings (``cluster_conf`` for a standalone cluster); ``tuning``: the driver's
    JVM flags and session settings."""
    from pyspark.sql import SparkSession

    from tbspark.aggregate import sparklog

    # Only for a JVM we start (not spark-submit's, not a running session's), and not over a user's
    # own log4j configuration (SPARK_CONF_DIR).
    if (SparkSession.getActiveSession() is not None or settings.spark_conf_dir()
            or settings.under_spark_submit()):
        log_file = None

    builder = (SparkSession.builder.appName(app_name)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               # Streaming plans never use AQE; saying so up front spares a warning per query.
               .config("spark.sql.adaptive.enabled", "false"))
    if master:
        builder = builder.master(master)
    if jars is None and not settings.under_spark_submit():  # under spark-submit: --jars/--packages
        from tbspark.stack.jvm import spark_connector_jars

        jars = spark_connector_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    # A deeper thread stack on the driver: py4j callbacks of foreachBatch recurse deeply.
    log_opts = sparklog.java_options(log_file) if log_file else []
    builder = builder.config("spark.driver.extraJavaOptions", " ".join([*tuning.driver_java_options, *log_opts]))
    for key, value in {**tuning.session_conf, **(conf or {})}.items():
        builder = builder.config(key, value)
    # pyspark installs a SIGINT handler that cancels jobs over py4j from inside the signal handler,
    # which breaks a py4j call the main thread is in; keep the caller's handler (the CLI's clean stop).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    with sparklog.jvm_stderr_to(log_file):
        spark = builder.getOrCreate()
    if main and previous is not None:
        signal.signal(signal.SIGINT, previous)
    spark.sparkContext.setLogLevel("WARN")
    cores = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions or max(1, cores)))
    return spark


class _Batcher:
    """The foreachBatch function. Holds ``lock`` while it runs, so a stop can wait for it."""

    def __init__(self, spec: ParseSpec, store: WindowStore, sink: Sink, bootstrap: str, topic: str,
                 dlq_topic: str, output_mode: str, status: AggregateStatus, single_task_below: int = 0,
                 batch_log: str | None = None):
        self.spec, self.store, self.sink, self.status = spec, store, sink, status
        self.bootstrap, self.topic, self.dlq_topic = bootstrap, topic, dlq_topic
        self.output_mode = output_mode
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.last_state: WindowState | None = None
        self.single_task_below = single_task_below  # JobTuning.single_task_below
        self.batch_log = batch_log
        self.last_records: int | None = None  # records of the previous batch (None: none yet)

    def __call__(self, df: Any, batch_id: int) -> None:
        with self.lock:
            if self.stopping.is_set():
                raise StopRequested()  # not committed: a restart replays this batch
            try:
                self._run(df, batch_id)
            except StopRequested:
                raise
            except BaseException as exc:
                self.error = exc
                raise

    def _run(self, df: Any, batch_id: int) -> None:
        started = time.monotonic()
        started_wall = time.time()
        state = self.store.before(batch_id)
        now_ms = int(time.time() * 1000)
        # One Spark job per batch: the batch's (zone, window, reason) groups, collected. The plan has
        # no per-batch literal, so its generated code is compiled once, not in every batch.
        prev = self.last_records
        if self.single_task_below and prev is not None and prev < self.single_task_below:
            df = df.coalesce(1)  # a single partition needs no exchange before the aggregation
        rows = batch_partials(parse_stable(df, self.spec)).collect()
        groups = classify_groups(rows, self.spec, state.watermark_ms, now_ms)
        parsed = None
        if groups is None:  # a window straddles the future-ts limit, or a zone may be no string
            parsed = parse(df, self.spec, state.watermark_ms, now_ms)
            groups = classify_groups(batch_partials(parsed).collect(), self.spec, state.watermark_ms,
                                     now_ms, exact=True)
        collected = time.monotonic()
        partials, rejected, max_event, total = (groups.partials, groups.rejected, groups.max_event_ms,
                                                groups.total)
        if rejected:
            # A second pass over the batch, only when there is something to reject (rare), with the
            # same clock and watermark, so it rejects exactly the records counted above.
            if parsed is None:
                parsed = parse(df, self.spec, state.watermark_ms, now_ms)
            # acks=all and idempotence (the Java client's defaults, said here): on a replicated
            # topic a dead letter is on min.insync.replicas brokers before the batch commits.
            (dead_letters(parsed, self.topic).write.format("kafka")
             .option("kafka.bootstrap.servers", self.bootstrap).option("kafka.acks", "all")
             .option("kafka.enable.idempotence", "true").option("topic", self.dlq_topic).save())
        new_state, out = state.apply(batch_id, partials, max_event, self.output_mode)
        self.store.save(new_state)
        before_write = time.monotonic()
        written = self._write(out)
        self.last_state = new_state
        self.status.phase_s = {"spark": round(collected - started, 3),
                               "write": round(time.monotonic() - before_write, 3)}
        st = self.status
        st.batches += 1
        st.records += total
        self.last_records = total
        late = rejected.get(self.spec.reason_texts()["late"], 0)
        st.late += late
        st.dead_letters += sum(rejected.values())
        st.windows_written += written
        st.zones.update(w.zone for w in out)
        st.watermark_ms = new_state.watermark_ms
        elapsed = time.monotonic() - started
        st.records_per_s = total / elapsed if elapsed > 0 else 0.0
        if self.batch_log:
            self._log_batch(batch_id, started_wall, total, rejected, max_event, new_state, out)

    def _log_batch(self, batch_id: int, started: float, total: int, rejected: dict[str, int],
                   max_event: int | None, state: WindowState, out: list[ZoneWindow]) -> None:
        line = {"batch": batch_id, "started": round(started, 3), "ended": round(time.time(), 3),
                "records": total, "rejected": rejected, "max_event_ms": max_event,
                "watermark_ms": state.watermark_ms, **self.status.phase_s,
                "windows": [[w.zone, w.start_ms, w.agg.count] for w in out]}
        with open(self.batch_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")

    def _write(self, out: list[ZoneWindow]) -> int:
        if not out:
            return 0

        def waiting(exc: Exception, delay: float) -> None:
            self.status.waiting = f"{exc} (retrying in {delay:g} s)"

        def refused(refusals: list) -> None:  # stored before the batch commits: at least once
            letters = refusal_letters(refusals)
            produce_letters(self.bootstrap, self.dlq_topic, letters)
            self.status.dead_letters += len(letters)

        written = write_until_done(self.sink, out, self.stopping.is_set, waiting, refused)
        self.status.waiting = None
        return written

    def flush_open(self) -> int:
        """Append mode, --once: write the windows no watermark closed (the stream has ended)."""
        if self.output_mode != "append" or self.last_state is None:
            return 0
        return self._write(self.last_state.flush())


def make_sink(scenario: Scenario, conn: Connection, state: StateDir) -> Sink:
    agg = scenario.aggregation
    keys = {"avg": agg.metrics.avg, "count": agg.metrics.count, "min": agg.metrics.min,
            "max": agg.metrics.max}
    if agg.sink == "gateway":
        gateway = ProvisionRecord.for_scenario(state, scenario).require_gateway(scenario)
        return GatewaySink(conn, {"name": gateway.name, "id": gateway.id, "token": gateway.token},
                           agg.asset_type, keys)
    return RestSink(conn, agg.asset_type, keys)


def aggregate(scenario: Scenario, conn: Connection, state: StateDir, master: str | None = "local[2]",
              checkpoint: str | Path | None = None, starting_offsets: str = "earliest", once: bool = False,
              progress: Callable[[AggregateStatus], None] | None = None,
              stop_event: threading.Event | None = None, *, sink: Sink | None = None,
              spark: Any = None, nice: int = 0, spark_conf: dict[str, str] | None = None,
              tuning: JobTuning = DEFAULT_TUNING) -> AggregateReport:
    """Run the aggregation job until ``stop_event`` is set (or, with ``once``, until the topic's
    backlog is processed). ``progress`` is called about twice a second with the running status.
    ``nice`` > 0 lowers the CPU priority of this process and of the Spark JVM it starts (children
    inherit it): on a machine shared with the platform, ingest gets the CPU first and the job's
    micro-batches catch up between triggers. ``tuning``: how the session, query and batches are built
    (``JobTuning``; the session's part only applies to a session built here)."""
    if starting_offsets not in ("earliest", "latest"):
        raise AggregationError(f"unknown starting offsets {starting_offsets!r}",
                               "use --starting-offsets earliest or latest")
    if not 0 <= nice <= 19:
        raise AggregationError(f"nice must be between 0 and 19, not {nice}",
                               "pass --nice 10 to let the platform have the CPU first, or 0")
    agg = scenario.aggregation
    window_ms = int(round(agg.window_s * 1000))
    # A URI (file://, hdfs://, s3a:// …) or a plain local path; Spark and the window store both
    # reach it through Hadoop's FileSystem, so a driver elsewhere finds the same state.
    checkpoint_uri = location_uri(checkpoint or state.checkpoint_dir(scenario.name))
    spec = ParseSpec(agg.zone_key, agg.value_key, window_ms, agg.mode == "event_time",
                     agg.value_range.min, agg.value_range.max)
    from tbspark.kafka_topics import ensure_topic

    # Up front: a broker that is down fails here in seconds with a clear line, and the dead-letter
    # topic exists even where the broker does not auto-create topics.
    ensure_topic(conn.kafka_bootstrap, scenario.kafka.dlq_topic, 1, timeout_s=15)
    status = AggregateStatus()
    own_sink = sink is None
    sink = sink or make_sink(scenario, conn, state)
    if nice:
        os.nice(nice)  # before the JVM starts, so that it inherits the priority
    spark = spark or build_session(master, agg.shuffle_partitions, log_file=state.logs_dir / "spark.log",
                                   conf=spark_conf, tuning=tuning)
    store = open_store(spark, checkpoint_uri, window_ms, int(round(agg.watermark_s * 1000)))
    store.before(1 << 62)  # fail now, not in the first batch, on a checkpoint of other settings
    batcher = _Batcher(spec, store, sink, conn.kafka_bootstrap, scenario.kafka.topic,
                       scenario.kafka.dlq_topic, agg.output_mode, status, tuning.single_task_below,
                       settings.aggregate_batch_log())
    started = time.monotonic()
    try:
        # (a --once run is one backlog: it warms the JVM up itself)
        if not once and scenario.expected_rate_hz() >= tuning.prime_from_rate:
            prime(spark, spec, tuning.prime_records, tuning.prime_rounds, stop_event=stop_event)
        query = _start(spark, scenario, conn, checkpoint_uri, starting_offsets, once, batcher,
                       tuning.source_options)
        stopped = _watch(query, batcher, status, progress, stop_event, once)
        if once and stopped == "caught up":
            status.windows_written += batcher.flush_open()
    finally:
        if own_sink:
            sink.close()
    duration = time.monotonic() - started
    return AggregateReport(scenario.name, checkpoint_uri, status.batches, status.records,
                           status.dead_letters, status.late, status.windows_written,
                           sorted(status.zones), duration,
                           status.records / duration if duration > 0 else 0.0, stopped)


_PRIMED: set[str] = set()  # the Spark applications (JVMs) already primed


def prime(spark: Any, spec: ParseSpec, records: int | None = None, rounds: int | None = None,
          stop_event: threading.Event | None = None) -> int:
    """Run the batch's query (``batch_partials(parse_stable(...)).collect()``) ``rounds`` times over
    ``records`` synthetic Kafka rows in the forwarding chain's format, built in the JVM (no Python per
    record). Nothing is written anywhere: this only leaves the JVM's JIT-compiled code behind. The
    first round spreads over the cores (a large batch's plan: a shuffle), the others run in one
    partition (a small batch's plan). Returns the records that parsed as usable (all of them), 0 when
    this JVM was primed already."""
    from pyspark.sql import functions as F

    records = DEFAULT_TUNING.prime_records if records is None else records
    rounds = DEFAULT_TUNING.prime_rounds if rounds is None else rounds
    app = spark.sparkContext.applicationId
    if records <= 0 or rounds <= 0 or app in _PRIMED:
        return 0
    _PRIMED.add(app)  # once per JVM: a later job on the same session finds the code compiled
    now_ms = int(time.time() * 1000)
    i = F.col("id")

    def text(col: Any) -> Any:
        return col.cast("string")

    # {"windSpeed":42.7,"geoZone":"Zone 07","ts":"<ms>"} with the scenario's key names
    value = F.concat(F.lit("{" + json.dumps(spec.value_key) + ":"), text(F.lit(30) + i % 31), F.lit("."),
                     text(i % 10), F.lit("," + json.dumps(spec.zone_key) + ':"Zone '),
                     F.lpad(text(i % 50), 2, "0"), F.lit('",' + json.dumps(TS_KEY) + ':"'),
                     text(F.lit(now_ms) + i % 10_000), F.lit('"}'))
    cores = max(1, spark.sparkContext.defaultParallelism)
    done = 0
    for n in range(rounds):
        if stop_event is not None and stop_event.is_set():
            break  # a stop asked for while priming: the query starts and stops at once
        df = spark.range(records, numPartitions=cores if n == 0 else 1).select(
            F.concat(F.lit("Turbine "), text(i % 3000)).cast("binary").alias("key"),
            value.cast("binary").alias("value"), (i % 4).cast("int").alias("partition"),
            i.alias("offset"), F.current_timestamp().alias("timestamp"))
        rows = batch_partials(parse_stable(df, spec)).collect()
        done += sum(r["n"] for r in rows if r["reason"] is None)
    return done


def _start(spark: Any, scenario: Scenario, conn: Connection, checkpoint: str, starting_offsets: str,
           once: bool, batcher: _Batcher, source_options: Mapping[str, str] | None = None) -> Any:
    agg = scenario.aggregation
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", conn.kafka_bootstrap)
              .option("subscribe", scenario.kafka.topic)
              .option("startingOffsets", starting_offsets)
              # Records deleted by retention before we read them are gone either way; say so in the
              # log instead of stopping the job.
              .option("failOnDataLoss", "false")
              # Split a partition's range over the cores, so a one-partition topic uses both.
              .option("minPartitions", str(spark.sparkContext.defaultParallelism)))
    if agg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(agg.max_offsets_per_trigger))
    for key, value in (source_options or {}).items():
        reader = reader.option(key, value)
    writer = (reader.load().writeStream.foreachBatch(batcher)
              .option("checkpointLocation", checkpoint)
              .queryName(f"tbspark-{scenario.name}"))
    writer = writer.trigger(availableNow=True) if once else writer.trigger(
        processingTime=f"{int(agg.trigger_s * 1000)} milliseconds")
    try:
        return writer.start()
    except Exception as exc:  # noqa: BLE001 - py4j/analysis errors become one clear line
        raise AggregationError(f"the Spark job did not start ({_first_line(exc)})",
                               "check KAFKA_BOOTSTRAP and the connector jars (`make jars`)") from exc


def _watch(query: Any, batcher: _Batcher, status: AggregateStatus,
           progress: Callable[[AggregateStatus], None] | None, stop_event: threading.Event | None,
           once: bool) -> str:
    """Wait for the query, reporting progress; stop it between batches when asked."""
    try:
        while query.isActive:
            if stop_event is not None and stop_event.is_set():
                _stop(query, batcher)
                return "stop requested"
            query.awaitTermination(0.5)
            _lag(query, status)
            if progress:
                progress(status)
        query.awaitTermination()  # re-raises the query's error, if any
        return "caught up" if once else "stopped"
    except TbsparkError:
        raise
    except Exception as exc:  # noqa: BLE001 - StreamingQueryException or py4j errors
        if batcher.stopping.is_set():
            return "stop requested"
        if isinstance(batcher.error, TbsparkError):
            raise batcher.error from exc
        cause = batcher.error or exc
        raise AggregationError(f"the Spark job failed: {_first_line(cause)}",
                               "see the log above; the checkpoint lets a restart resume") from exc
    except KeyboardInterrupt:
        _stop(query, batcher)
        raise


def _stop(query: Any, batcher: _Batcher) -> None:
    """Stop between batches: ``query.stop()`` during a foreachBatch threw StackOverflowError in our
    measurements. After ``stopping`` is set, a batch in Python finishes (a write being retried gives
    up within 0.1 s, uncommitted) and one that starts fails at once, uncommitted — a restart replays
    it. The lock is only waited on, not held over ``stop()``: a batch blocked on it would keep the
    query thread, and so ``stop()``, waiting forever."""
    batcher.stopping.set()
    with batcher.lock:
        pass
    try:
        query.stop()
    except Exception:  # noqa: BLE001 - already terminated (e.g. by the uncommitted batch)
        pass


def _lag(query: Any, status: AggregateStatus) -> None:
    p = query.lastProgress
    if not p:
        return
    for src in p.get("sources") or []:
        behind = (src.get("metrics") or {}).get("maxOffsetsBehindLatest")
        if behind is not None:
            status.lag = int(float(behind))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
