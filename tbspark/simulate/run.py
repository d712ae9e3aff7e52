"""`tbspark simulate`: drive the provisioned fleet with the scenario's generators through one of
the engines, then write the ground truth (what was really sent and acknowledged)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tbspark.delivery import DeliveryCheck, TopicCounter
from tbspark.errors import MqttError, UsageError
from tbspark.settings import Connection
from tbspark.simulate.fleet import Fleet, RunConfig, Stats, build_devices
from tbspark.simulate.groundtruth import GroundTruth, shard_file, shard_of
from tbspark.state import ProvisionRecord, StateDir

if TYPE_CHECKING:
    from tbspark.scenario import Scenario

ENGINES = ("asyncio", "paho")


@dataclass
class SimulationReport:
    scenario: str
    engine: str
    devices: int
    qos: int
    sent: int
    acked: int
    errors: int
    skipped: int
    reconnects: int
    refused: int
    elapsed_s: float
    cpu_s: float
    expected: int
    groundtruth_path: str | None
    last_error: str = ""
    hot_path: str = ""  # the asyncio engine's per-message loop: "c", or "python (why)"
    delivery: dict | None = None  # DeliveryCheck.as_dict(): did the acked messages reach Kafka

    @property
    def delivery_failed(self) -> bool:
        return bool(self.delivery) and self.delivery.get("ok") is False

    @property
    def msg_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def load_record(scenario: Scenario, state: StateDir) -> ProvisionRecord:
    """The provision record of ``scenario``, holding every one of its devices (else StateError)."""
    record = ProvisionRecord.for_scenario(state, scenario)
    record.require_devices(scenario)
    return record


def simulate(scenario: Scenario, conn: Connection, state: StateDir, duration_s: float | None = None,
             messages: int | None = None, seed: int | None = None,
             progress: Callable[[Stats], None] | None = None, engine: str | None = None,
             qos: int | None = None, stop: threading.Event | None = None,
             check_delivery: bool = True,
             shard: tuple[int, int] | None = None) -> SimulationReport:
    """Run the fleet; ``progress`` is called about 4 times a second with the live counters
    (from a helper thread). ``stop`` ends the run early (Ctrl-C). ``check_delivery``: count the
    records that reach the scenario's Kafka topic during the run (tbspark/delivery.py) and report
    when fewer arrive than the chain was given (with shards running at once this is a lower bound:
    the other shards' records count too). ``shard`` (I, N): run only shard I of N of the devices
    (``groundtruth.shard_of``) and write the ground truth to groundtruth.shard-I-of-N.json; N such
    processes, on one machine or several, run the fleet."""
    sim = scenario.simulation
    engine = engine or sim.engine
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if duration_s is not None and duration_s <= 0:
        raise UsageError("--duration must be > 0", "e.g. --duration 60s")
    if messages is not None and messages <= 0:
        raise UsageError("--messages must be > 0", "e.g. --messages 100")
    record = load_record(scenario, state)
    agg = scenario.aggregation
    per_stream = messages if messages is not None else (None if duration_s is not None
                                                        else sim.messages)
    cfg = RunConfig(host=conn.mqtt_host, port=conn.mqtt_port,
                    qos=sim.qos if qos is None else qos, timestamps=sim.timestamps,
                    ramp_per_s=sim.ramp_per_s, per_stream=per_stream,
                    duration_s=duration_s if duration_s is not None else sim.duration_s)
    specs = scenario.expand_devices()
    if shard is not None:
        index, count = shard
        if not 1 <= index <= count:
            raise UsageError(f"shard {index}/{count} does not exist", "use --shard I/N with 1 <= I <= N")
        specs = shard_of(specs, index, count)
        if not specs:
            raise UsageError(f"shard {index}/{count} of a fleet of {len(scenario.expand_devices())} "
                             "devices has no device", "use at most as many shards as devices")
    gt_file = shard_file(state.root, *shard) if shard else state.groundtruth_file
    gt = GroundTruth(scenario.name, agg.window_s, sim.timestamps, agg.value_key)
    for spec in specs:
        gt.add_device(spec.name, spec.zone)
    stats = Stats()
    fleet = Fleet(build_devices(specs, record.tokens(), agg.value_key,
                                seed if seed is not None else sim.seed), cfg, gt, stats)
    expected = sum(fleet.quota(st) for d in fleet.devices for st in d.streams)
    if engine == "paho":
        from tbspark.simulate.paho_engine import PahoEngine as Engine
    else:
        from tbspark.simulate.aio_engine import AioEngine as Engine  # type: ignore[assignment]
    runner = Engine(fleet)
    ticker_stop = threading.Event()
    ticker = None
    if progress:
        def tick() -> None:
            while not ticker_stop.wait(0.25):
                progress(stats)
        ticker = threading.Thread(target=tick, name="simulate-progress", daemon=True)
        ticker.start()
    counter = TopicCounter(conn.kafka_bootstrap, scenario.kafka.topic) if check_delivery else None
    if counter:
        counter.start()
    gt.started_ms = int(time.time() * 1000)
    t0, c0 = time.monotonic(), time.process_time()
    try:
        runner.run(stop)
    finally:
        ticker_stop.set()
        if ticker:
            ticker.join()
        elapsed, cpu = time.monotonic() - t0, time.process_time() - c0
        fleet.flush()  # values an engine batched per zone go into the windows now
        gt.ended_ms = int(time.time() * 1000)
        if gt.sent:
            # Whatever happened, the record says exactly what went out and what was acknowledged.
            state.ensure()
            gt.write(gt_file)
    if progress:
        progress(stats)
    if not gt.sent and stats.refused:
        raise MqttError(f"the server refused the tokens of {stats.refused} devices "
                        f"({stats.last_error})",
                        f"run: tbspark provision {scenario.source or scenario.name}")
    check: DeliveryCheck | None = None
    if counter and gt.sent:
        check = counter.settle(expected_in_kafka(gt, cfg.qos))
    return SimulationReport(scenario.name, engine, len(specs), cfg.qos, gt.sent, gt.acked,
                            stats.errors, stats.skipped, stats.reconnects, stats.refused,
                            elapsed, cpu, expected,
                            str(gt_file) if gt.sent else None, stats.last_error,
                            stats.hot_path, check.as_dict() if check else None)


def expected_in_kafka(gt: GroundTruth, qos: int) -> int:
    """How many records the forwarding chain must at least have produced: acknowledged messages
    (QoS 0: every message sent, the platform acknowledges none) that carry the value key (the
    chain's check node drops the others). The ground truth counts acknowledgements per device, and
    value-carrying messages per window as sent, so this is a lower bound — exact when every
    message carries the value key, as in the shipped scenarios."""
    carried = sum(w.count for zone in gt.windows.values() for w in zone.values())
    delivered = gt.acked if qos else gt.sent
    return max(0, delivered - (gt.sent - carried))
