"""Does the platform's rule chain actually deliver to Kafka?

A ThingsBoard acknowledges a device's message when it has queued it, not when its Kafka node has
produced it; a Kafka node whose bootstrap address the server cannot resolve or reach fails on every
message, and the devices never know (seen on ThingsBoard CE 4.3.1.3 with `kafka:19092` outside
docker-compose: every message acknowledged, none in Kafka). Two checks, both read from Kafka itself,
so they hold for real ThingsBoard and the embedded platform alike:

- ``probe()`` (``tbspark provision``): one telemetry message from a probe device of the scenario's
  device profile, carried by the real chain, looked for in the topic. The probe device's
  zone is ``PROBE_ZONE``: the aggregation drops that zone's records (aggregate/parse.py).
- ``TopicCounter`` (``tbspark simulate``): the topic's end offsets before and after a run; fewer new
  records than acknowledged messages means the chain lost them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tbspark.errors import MqttError, ThingsBoardError

if TYPE_CHECKING:
    from tbspark.scenario import Scenario
    from tbspark.settings import Connection
    from tbspark.thingsboard.rest import TbRestClient

PROBE_KEY = "tbsparkProbe"
PROBE_ZONE = "tbspark-probe"
# A ThingsBoard Kafka node produces lazily: its first record waits for the producer's metadata
# (measured on CE 4.3.1.3 on this machine: 0.3-1.5 s after a chain save). 20 s leaves room for a
# loaded server without making a broken setup wait long.
PROBE_TIMEOUT_S = 20.0
# After a run, the platform may still be draining a backlog (the embedded platform ran up to 32 s
# behind at 27K msg/s, docs/benchmarks.md): wait while the count grows, give up after this long
# without progress.
SETTLE_NO_PROGRESS_S = 5.0
SETTLE_MAX_S = 120.0


def probe_device_name(device_type: str) -> str:
    return f"tbspark delivery probe ({device_type})"


@dataclass
class DeliveryCheck:
    """The outcome of a check. ``ok`` None means it could not be made (Kafka unreachable from here)."""

    ok: bool | None
    detail: str
    elapsed_s: float = 0.0
    in_kafka: int | None = None
    acked: int | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail, "elapsed_s": round(self.elapsed_s, 2),
                "in_kafka": self.in_kafka, "acked": self.acked}


def _admin_conf(bootstrap: str) -> dict:
    # Short timeouts: a check must answer in seconds, whatever the address.
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
            "socket.connection.setup.timeout.ms": 5000, "log_level": 0}


def _check_consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer({**_admin_conf(bootstrap), "group.id": f"tbspark-check-{secrets.token_hex(4)}",
                     "enable.auto.commit": False})


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 5.0,
                consumer: Any = None) -> dict[int, int] | None:
    """partition → high watermark of ``topic``; None when Kafka cannot be reached or the topic does
    not exist (then nothing can be said). ``consumer``: one to reuse (polling callers), else its own."""
    from confluent_kafka import KafkaException, TopicPartition

    own = consumer is None
    consumer = consumer or _check_consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            return None
        out = {}
        for p in tmeta.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            out[p] = high
        return out
    except KafkaException:
        return None
    finally:
        if own:
            consumer.close()


class TopicCounter:
    """Counts the records that reach a topic between ``start()`` and ``settle()``."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic = bootstrap, topic
        self.before: dict[int, int] | None = None

    def start(self) -> None:
        self.before = end_offsets(self.bootstrap, self.topic)

    def _new(self, consumer: Any) -> int | None:
        after = end_offsets(self.bootstrap, self.topic, consumer=consumer)
        if after is None or self.before is None:
            return None
        return sum(high - self.before.get(p, 0) for p, high in after.items())

    def settle(self, acked: int, no_progress_s: float = SETTLE_NO_PROGRESS_S,
               max_s: float = SETTLE_MAX_S) -> DeliveryCheck:
        """Wait until ``acked`` new records are in the topic, or the count stops growing."""
        t0 = time.monotonic()
        if self.before is None:
            return DeliveryCheck(None, f"could not read topic {self.topic!r} at {self.bootstrap} "
                                 "before the run; delivery not checked")
        consumer = _check_consumer(self.bootstrap)  # one for the whole wait, not one per poll
        try:
            return self._settle(consumer, acked, no_progress_s, max_s, t0)
        finally:
            consumer.close()

    def _settle(self, consumer: Any, acked: int, no_progress_s: float, max_s: float,
                t0: float) -> DeliveryCheck:
        last, last_change = -1, t0
        while True:
            new = self._new(consumer)
            now = time.monotonic()
            if new is None:
                return DeliveryCheck(None, f"could not read topic {self.topic!r} at "
                                     f"{self.bootstrap} after the run; delivery not checked",
                                     now - t0)
            if new >= acked:
                return DeliveryCheck(True, f"{new:,} records reached Kafka topic {self.topic!r} "
                                     f"for {acked:,} acknowledged messages", now - t0, new, acked)
            if new != last:
                last, last_change = new, now
            if now - last_change >= no_progress_s or now - t0 >= max_s:
                return DeliveryCheck(False, f"only {new:,} of {acked:,} acknowledged messages "
                                     f"reached Kafka topic {self.topic!r} at {self.bootstrap}",
                                     now - t0, new, acked)
            time.sleep(0.5)  # the next offsets query; the loop ends on the conditions above


def _await_record(bootstrap: str, topic: str, start: dict[int, int], nonce: str,
                  timeout_s: float) -> float | None:
    """Seconds until a record holding ``nonce`` appears after ``start`` offsets, or None."""
    from confluent_kafka import Consumer, TopicPartition

    t0 = time.monotonic()
    consumer = Consumer({**_admin_conf(bootstrap), "group.id": f"tbspark-probe-{nonce}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        consumer.assign([TopicPartition(topic, p, off) for p, off in start.items()])
        needle = nonce.encode()
        while time.monotonic() - t0 < timeout_s:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if needle in (msg.value() or b""):
                return time.monotonic() - t0
        return None
    finally:
        consumer.close()


def probe(tb: TbRestClient, conn: Connection, scenario: Scenario, profile_id: str, device_type: str,
          make_token: Callable[[], str], timeout_s: float = PROBE_TIMEOUT_S) -> DeliveryCheck:
    """Send one message through the scenario's chain from a probe device and look for it in Kafka.

    ``tb``: a logged-in TbRestClient; ``conn``: the Connection (MQTT and tbspark-side Kafka).
    """
    from tbspark.thingsboard.mqtt import DeviceSession

    t0 = time.monotonic()
    topic, bootstrap = scenario.kafka.topic, conn.kafka_bootstrap
    agg = scenario.aggregation
    start = end_offsets(bootstrap, topic)
    if start is None:
        return DeliveryCheck(None, f"Kafka topic {topic!r} cannot be read at {bootstrap} from "
                             "here; delivery not checked (set KAFKA_BOOTSTRAP to the address "
                             "tbspark reaches Kafka at)")
    name = probe_device_name(device_type)
    dev = tb.get_device_by_name(name)
    if dev is None:
        dev = tb.save_device({"name": name, "type": device_type,
                              "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": profile_id},
                              "additionalInfo": {"description": "tbspark provision's delivery "
                                                 "probe; its records are dropped by the aggregation"}},
                             access_token=make_token())
    token = tb.get_device_credentials(dev["id"]["id"])["credentialsId"]
    attrs = {"deviceType": device_type, agg.zone_key: PROBE_ZONE}
    nonce = secrets.token_hex(8)
    try:
        with DeviceSession(conn.mqtt_host, conn.mqtt_port, token, timeout_s=10) as session:
            session.publish_attributes(attrs)
            # The chain looks the zone attribute up; on ThingsBoard the attribute save runs
            # after the PUBACK, so wait until it is readable before the telemetry follows.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                have = tb.get_attributes("DEVICE", dev["id"]["id"], "CLIENT_SCOPE", list(attrs))
                if all(have.get(k) == v for k, v in attrs.items()):
                    break
                time.sleep(0.2)  # the next REST read; bounded by the deadline
            session.publish_telemetry({agg.value_key: 0, PROBE_KEY: nonce}, qos=1)
    except (MqttError, ThingsBoardError) as exc:
        return DeliveryCheck(False, f"the probe device could not publish: {exc}",
                             time.monotonic() - t0)
    seen = _await_record(bootstrap, topic, start, nonce, timeout_s)
    if seen is None:
        return DeliveryCheck(False, f"a probe message acknowledged by the platform did not reach "
                             f"Kafka topic {topic!r} within {timeout_s:g} s",
                             time.monotonic() - t0)
    return DeliveryCheck(True, f"a probe message reached Kafka topic {topic!r} in {seen:.1f} s",
                         time.monotonic() - t0)


__all__ = ["DeliveryCheck", "TopicCounter", "end_offsets", "probe", "PROBE_KEY", "PROBE_ZONE",
           "probe_device_name"]
