"""A producer at a fixed rate, shared by the Kafka-broker and Spark benchmarks: records in the
forwarding chain's format (windSpeed, geoZone, ts), keyed by 3,000 device names, paced every 10 ms."""

from __future__ import annotations

import time
from typing import Any, Callable

TICK_S = 0.01
DEVICES = 3000
KEYS = [b"Turbine %04d" % i for i in range(DEVICES)]


def produce_paced(producer: Any, topic: str, rate: float, seconds: float, *,
                  on_tick: Callable[[float, int], None] | None = None,
                  on_delivery: Callable | None = None, ts_as_string: bool = False) -> int:
    """Produce ``rate`` records a second for ``seconds``; ``on_tick(elapsed_s, sent)`` runs at the
    start of every tick (benchmarks take their warm-up mark there). Returns the records produced."""
    fmt = (b'{"windSpeed":%d.%d,"geoZone":"Zone %02d","ts":"%d"}' if ts_as_string
           else b'{"windSpeed":%d.%d,"geoZone":"Zone %02d","ts":%d}')
    extra = {"on_delivery": on_delivery} if on_delivery is not None else {}
    t0 = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            return sent
        if on_tick is not None:
            on_tick(now - t0, sent)
        due = int((now - t0) * rate)
        ts = int(time.time() * 1000)
        while sent < due:
            i = sent % DEVICES
            body = fmt % (30 + sent % 31, sent % 10, i % 50, ts)
            try:
                producer.produce(topic, body, KEYS[i], **extra)
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))  # pacing tick of the fixed rate
