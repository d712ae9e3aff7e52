"""Filling a topic as fast as the broker takes it, for benchmarks that read a backlog."""

from __future__ import annotations

import time
from typing import Iterable


def produce_all(bootstrap: str, topic: str, bodies: Iterable[bytes], *, idempotent: bool = False,
                timeout_s: float = 300) -> float:
    """Produce every body to ``topic`` (batched, lz4) and wait until the broker has them all; the
    seconds it took. ``idempotent`` keeps the offset order equal to the order given even when a
    batch is retried (a benchmark whose expected result depends on that order needs it). Raises
    when some were still undelivered after ``timeout_s``: a backlog short of records is no figure."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4",
                  "enable.idempotence": idempotent})
    t = time.monotonic()
    for body in bodies:
        while True:
            try:
                p.produce(topic, body)
                break
            except BufferError:  # the local queue is full: let the producer send, then retry
                p.poll(0.05)
    left = p.flush(timeout_s)
    if left:
        raise RuntimeError(f"{left} records still undelivered to {topic} after {timeout_s:g} s")
    return time.monotonic() - t
