"""`tbspark demo`: the whole pipeline in one call — stack up on free ports, provision, the Spark job,
simulate, wait for the last window, verify — and everything torn down again, also on Ctrl-C.

The Spark job runs in a thread of this process: its JVM is our child, so it cannot outlive us, and
its ~8 s start overlaps with starting Kafka and the platform and with provisioning.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tbspark.errors import AggregationError, MqttError, StateError, TbsparkError, UsageError
from tbspark.state import StateDir

if TYPE_CHECKING:
    from tbspark.aggregate.job import AggregateStatus
    from tbspark.scenario import Scenario
    from tbspark.settings import Connection
    from tbspark.verify import VerifyReport

Progress = Callable[[str, str], None]  # (phase, message)
FINAL_WINDOW_EXTRA_S = 120.0  # beyond window + watermark: the first batch on a 2-core machine under load
FINAL_WINDOW_MAX_S = 300.0  # even while batches still complete, give up after this
SPARK_READY_TIMEOUT_S = 300.0  # the thread's death is noticed at once; this bounds a hang
POLL_S = 0.2


@dataclass
class DemoReport:
    scenario: str
    state_dir: str
    holds: bool = False
    sent: int = 0
    acked: int = 0
    errors: int = 0
    windows_verified: int = 0
    latency_s: float | None = None      # last message sent -> its window readable on the zone asset
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds (spark overlaps others)
    verdict_s: float = 0.0              # start to verdict (what `make demo` users wait for)
    total_s: float = 0.0                # including teardown
    kept: bool = False
    platform_url: str | None = None
    kafka_bootstrap: str | None = None
    verify: VerifyReport | None = None
    problem: str | None = None          # why the run did not reach a verdict that holds

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "verify"}
        d["verify"] = self.verify.to_dict() if self.verify is not None else None
        return d


def default_state_dir(base: Path | None = None) -> Path:
    from tbspark import settings

    root = Path(base) if base else settings.state_dir(None)
    return root / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')[:-3]}"


def _fresh(path: Path) -> StateDir:
    if path.exists() and any(path.iterdir()):
        raise UsageError(f"the state directory {path} is not empty",
                         "pass a new directory to --state-dir (or leave it out for a fresh one)")
    return StateDir(path).ensure()


class _SparkJob:
    """The aggregation job in a background thread: session first, then the query once Kafka and the
    platform are known. ``error`` holds what killed it."""

    def __init__(self, scenario: Scenario, state: StateDir) -> None:
        self.scenario, self.state = scenario, state
        self.session_ready = threading.Event()
        self.running = threading.Event()
        self.go = threading.Event()
        self.stop = threading.Event()
        self.conn: Connection | None = None
        self.spark: Any = None
        self.own_session = True
        self.error: BaseException | None = None
        self.session_s = 0.0
        self.status: AggregateStatus | None = None
        self.thread = threading.Thread(target=self._run, name="tbspark-demo-spark", daemon=True)

    def _run(self) -> None:
        try:
            from pyspark.sql import SparkSession

            from tbspark.aggregate.job import aggregate, build_session

            t0 = time.monotonic()
            self.own_session = SparkSession.getActiveSession() is None
            self.spark = build_session("local[2]", self.scenario.aggregation.shuffle_partitions,
                                       log_file=self.state.logs_dir / "spark.log")
            self.session_s = time.monotonic() - t0
            self.session_ready.set()
            while not self.go.wait(0.1):
                if self.stop.is_set():
                    return

            def progress(status: AggregateStatus) -> None:
                self.status = status
                self.running.set()

            assert self.conn is not None  # set before ``go``
            aggregate(self.scenario, self.conn, self.state, starting_offsets="earliest",
                      progress=progress, stop_event=self.stop, spark=self.spark)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            if isinstance(self.error, TbsparkError):
                raise self.error
            raise AggregationError(f"the aggregation job failed: {self.error}",
                                   f"see {self.state.logs_dir / 'spark.log'}") from self.error

    def wait(self, event: threading.Event, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not event.wait(POLL_S):
            self.check()
            if not self.thread.is_alive():
                raise AggregationError(f"the aggregation job ended before {what}",
                                       f"see {self.state.logs_dir / 'spark.log'}")
            if time.monotonic() > deadline:
                raise AggregationError(f"the aggregation job was not {what} after {timeout_s:.0f} s",
                                       f"is the machine overloaded? see {self.state.logs_dir}/spark.log")

    def shutdown(self) -> None:
        """Stop the query between batches, then the session and its JVM (when we started it)."""
        self.stop.set()
        if not self.session_ready.is_set() and self.own_session:
            # Interrupted while the session was still starting: nothing to stop gracefully, and
            # waiting for the JVM to finish starting would only delay Ctrl-C. Its thread then
            # fails on the closed gateway and ends.
            _stop_jvm()
        self.thread.join(timeout=60)
        if self.thread.is_alive() or (self.spark is None and self.own_session):
            _stop_jvm()  # the gateway may have come up after the first attempt
        if self.spark is None or not self.own_session:
            return
        try:
            self.spark.stop()
        except Exception:  # noqa: BLE001 - a JVM already gone (Ctrl-C reaches it too)
            pass
        _stop_jvm()


def _stop_jvm() -> None:
    """Shut down PySpark's gateway JVM now instead of at interpreter exit, and reset PySpark's
    class-level handles so a later session in this process starts a new one."""
    try:
        from pyspark import SparkContext

        gw = SparkContext._gateway
        if gw is None:
            return
        proc = getattr(gw, "proc", None)
        try:
            gw.shutdown()
        except Exception:  # noqa: BLE001
            pass
        if proc is not None:
            from tbspark.stack import procs

            procs.terminate(proc.pid, 10.0, proc)
        SparkContext._gateway = None
        SparkContext._jvm = None
    except ImportError:
        pass


def _wait_final_window(scenario: Scenario, conn: Connection, state: StateDir, job: _SparkJob,
                       timeout_s: float) -> float | None:
    """Poll the zones' entities (verify's: assets, or the gateway sink's devices) until every zone's
    message count equals the ground truth; return the wall-clock time (epoch s) it first did, or
    None at the timeout."""
    from tbspark.thingsboard.rest import TbRestClient
    from tbspark.verify import (MetricKeys, load_records, metric_keys, read_points, run_range,
                                zone_entity_type, zone_ids)

    prov, gt = load_records(scenario, state)
    if gt is None:
        raise StateError(f"the simulator left no ground truth in {state.root}",
                         "see the simulate phase above; the demo has nothing to wait for")
    expected = {z: sum(w.count for w in wins.values()) for z, wins in gt.windows.items()}
    keys = metric_keys(scenario)
    count_only = MetricKeys(avg=keys.count or keys.avg, count=None, min=None, max=None)
    start, end = run_range(scenario.aggregation.window_s, prov, gt)
    entity_type = zone_entity_type(scenario)
    deadline = time.monotonic() + timeout_s
    hard_deadline = time.monotonic() + FINAL_WINDOW_MAX_S
    last_batches = None
    with TbRestClient(conn.tb_url, conn.username, conn.password) as tb:
        ids: dict[str, str] = {}
        while True:
            job.check()
            batches = getattr(job.status, "batches", None)
            if batches != last_batches:
                # A job that is still completing batches is slow, not stuck: give it more time.
                last_batches = batches
                deadline = min(hard_deadline, max(deadline, time.monotonic() + timeout_s))
            if len(ids) < len(expected):
                ids.update(zone_ids(scenario, tb, prov, [z for z in expected if z not in ids]))
            if len(ids) == len(expected):
                pts = read_points(lambda i, k, s, e: tb.get_timeseries(entity_type, i, k, s, e),
                                  ids, count_only, start, end)
                found = {z: int(sum(v for _, v in pts[z]["avg"])) for z in ids}
                if all(found[z] >= expected[z] for z in expected):
                    return time.time()
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)  # poll interval: the latency figure's resolution


def _stack_up_fresh(state: StateDir, scenario: Scenario, say: Progress) -> dict:
    """stack_up on free ports, retried once: a free port picked for Kafka can be taken by another
    process before the broker binds it (seen on a busy machine). The demo's state dir is its own,
    so a half-written broker directory can simply be removed."""
    import shutil

    from tbspark.errors import StackError
    from tbspark.stack.services import stack_up

    for attempt in (1, 2):
        try:
            return stack_up(state.root, kafka_port=0, http_port=0, mqtt_port=0,
                            topic=scenario.kafka.topic, partitions=scenario.kafka.partitions)
        except StackError as exc:
            if attempt == 2:
                raise
            say("stack", f"did not start ({exc.message}); retrying once on new ports")
            shutil.rmtree(state.kafka_dir, ignore_errors=True)
            shutil.rmtree(state.platform_dir, ignore_errors=True)
    raise AssertionError("unreachable")


def demo(scenario: Scenario, state_dir: Path | None = None, duration_s: float = 30.0, keep: bool = False,
         seed: int | None = None, progress: Progress | None = None) -> DemoReport:
    """Run the scenario end to end on a fresh local stack and return the verdict with timings."""
    from tbspark.provision import provision
    from tbspark.simulate.run import simulate
    from tbspark.stack.services import stack_down
    from tbspark.settings import scenario_connection
    from tbspark.verify import verify

    if scenario.platform.kind != "embedded":
        raise UsageError(f"tbspark demo runs on the embedded platform; {scenario.source} targets "
                         f"{scenario.platform.kind}", "use the provision/simulate/aggregate/verify "
                         "commands against a real ThingsBoard (docs/thingsboard.md)")
    if duration_s <= 0:
        raise UsageError("--duration must be > 0", "e.g. --duration 30s")
    say = progress or (lambda phase, msg: None)
    state = _fresh(Path(state_dir) if state_dir else default_state_dir())
    report = DemoReport(scenario.name, str(state.root))
    t_start = time.monotonic()
    agg = scenario.aggregation
    job = _SparkJob(scenario, state)
    stack_started = False
    try:
        job.thread.start()
        say("spark", "starting the Spark session in the background")
        t = time.monotonic()
        services = _stack_up_fresh(state, scenario, say)
        stack_started = True
        report.phases["stack"] = time.monotonic() - t
        report.platform_url = services["platform"]["url"]
        report.kafka_bootstrap = services["kafka"]["bootstrap"]
        say("stack", f"Kafka {report.kafka_bootstrap}, platform {report.platform_url} "
                     f"({report.phases['stack']:.1f} s)")
        conn = scenario_connection(scenario, state)

        t = time.monotonic()
        prov = provision(scenario, conn, state)
        report.phases["provision"] = time.monotonic() - t
        say("provision", f"{sum(prov.created.values())} entities created ({report.phases['provision']:.1f} s)")

        t = time.monotonic()
        job.conn = conn
        job.wait(job.session_ready, SPARK_READY_TIMEOUT_S, "ready")
        report.phases["spark"] = job.session_s
        job.go.set()
        job.wait(job.running, SPARK_READY_TIMEOUT_S, "running")
        report.phases["aggregate_start"] = time.monotonic() - t
        say("spark", f"session started in {job.session_s:.1f} s (in parallel); the job consumes "
                     f"{scenario.kafka.topic} (waited {report.phases['aggregate_start']:.1f} s more)")

        t = time.monotonic()
        say("simulate", f"{len(scenario.expand_devices())} devices for {duration_s:g} s")
        sim = simulate(scenario, conn, state, duration_s=duration_s, seed=seed)
        report.phases["simulation"] = time.monotonic() - t
        report.sent, report.acked, report.errors = sim.sent, sim.acked, sim.errors
        say("simulate", f"{sim.sent} messages sent, {sim.acked} acknowledged, {sim.errors} errors "
                        f"({report.phases['simulation']:.1f} s)")

        t = time.monotonic()
        timeout = agg.window_s + agg.watermark_s + FINAL_WINDOW_EXTRA_S
        if sim.sent == 0:
            raise MqttError("the simulator sent no message", sim.last_error or "see the platform's log")
        arrived = _wait_final_window(scenario, conn, state, job, timeout)
        report.phases["final_window"] = time.monotonic() - t
        if arrived is None:
            report.problem = (f"the last window's aggregates had not all reached the zone assets "
                              f"{report.phases['final_window']:.0f} s after the end of the simulation "
                              f"(see {state.logs_dir / 'spark.log'}; verify shows which windows are short)")
            say("final window", report.problem)
        else:
            from tbspark.verify import load_records

            gt = load_records(scenario, state)[1]
            assert gt is not None  # _wait_final_window found it
            report.latency_s = max(0.0, arrived - gt.ended_ms / 1000)
            say("final window", f"written {report.latency_s:.1f} s after the last message was sent")

        t = time.monotonic()
        vr = verify(scenario, conn, state)
        report.phases["verify"] = time.monotonic() - t
        report.verify = vr
        report.windows_verified = vr.windows_verified
        report.holds = vr.holds and report.problem is None
        report.verdict_s = time.monotonic() - t_start
        say("verify", f"{'holds' if vr.holds else 'does NOT hold'}: {vr.windows_verified} windows "
                      f"verified ({report.phases['verify']:.1f} s)")
    finally:
        t = time.monotonic()
        job.shutdown()
        if not (keep and stack_started):
            stack_down(state.root)  # by PID; harmless when stack_up failed and already cleaned up
        report.kept = keep and stack_started
        report.phases["teardown"] = time.monotonic() - t
        report.total_s = time.monotonic() - t_start
        say("teardown", ("Spark stopped; stack kept running" if report.kept else "all stopped")
                        + f" ({report.phases['teardown']:.1f} s)")
    return report
