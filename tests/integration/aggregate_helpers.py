"""Helpers shared by the aggregation tests: scenarios aimed at a test topic, producing known records,
reading dead letters back, and a sink that records what the job wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

from tbspark.aggregate.windows import ZoneWindow
from tbspark.scenario import parse_scenario

KEYS = {"avg": "windSpeed", "count": "windSpeedCount", "min": "windSpeedMin", "max": "windSpeedMax"}
T0 = 1_700_000_000_000  # a window start in the past (brokers refuse timestamps >1 h ahead)


def scenario_for(topic: str, name: str, sink: str = "rest", extra: str = "") -> object:
    text = f"""
name: {name}
platform: {{kind: embedded}}
kafka: {{topic: {topic}}}
devices:
  - name: Wind Turbine 1
    type: WeatherStation
    zone: Zone A
    telemetry:
      windSpeed: {{kind: uniform_int, min: 30, max: 35, rate_hz: 10}}
aggregation:
  window_s: 10
  watermark_s: 5
  sink: {sink}
  trigger_s: 0.5
{extra}
"""
    return parse_scenario(text)


def produce(bootstrap: str, topic: str, values: list, timestamps_ms: list[int | None] | None = None) -> None:
    """Produce raw records in order; dicts are JSON-encoded, str/bytes sent as they are."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failed: list = []

    def done(err, msg) -> None:
        if err is not None:
            failed.append(err)

    for i, v in enumerate(values):
        body = json.dumps(v).encode() if isinstance(v, dict) else (v.encode() if isinstance(v, str) else v)
        ts = timestamps_ms[i] if timestamps_ms else None
        if ts is not None:
            p.produce(topic, body, timestamp=ts, on_delivery=done)
        else:
            p.produce(topic, body, on_delivery=done)
    if p.flush(30) != 0 or failed:
        raise RuntimeError(f"records not delivered to Kafka: {failed[:3]}")


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list[dict]:
    """Read a topic from the start until ``expected`` records arrived (then a short grace for extras)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                if len(out) >= expected:
                    break  # a quiet poll after the expected count: no extras are coming
                continue
            out.append(json.loads(msg.value()))
    finally:
        c.close()
    return out


class RecordingSink:
    """Keeps the last value written per (zone, window start) — what an idempotent store would hold."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, int], ZoneWindow] = {}
        self.writes = 0

    def write(self, windows: list[ZoneWindow]) -> int:
        for w in windows:
            self.points[(w.zone, w.start_ms)] = w
        self.writes += 1
        return len(windows)

    def close(self) -> None:
        pass

    def table(self) -> dict[tuple[str, int], tuple]:
        return {k: (w.agg.count, round(w.agg.mean, 9), w.agg.min, w.agg.max)
                for k, w in self.points.items()}


def expected_table(records: list[tuple[str, int, float]]) -> dict[tuple[str, int], tuple]:
    from tbspark.aggregate.windows import aggregate

    return {k: (a.count, round(a.mean, 9), a.min, a.max) for k, a in aggregate(records, 10_000).items()}


def state_dir(tmp_path: Path):
    from tbspark.state import StateDir

    return StateDir(tmp_path / "state").ensure()
