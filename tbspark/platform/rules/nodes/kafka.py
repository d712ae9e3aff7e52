"""Kafka node (TbKafkaNode): one confluent-kafka producer per node configuration.

``process`` only enqueues (``produce`` never blocks the event loop); a poll thread serves delivery
reports and hands them back to the loop in batches, where each message continues on ``Success``
(metadata ``offset``/``partition``/``topic``) or ``Failure`` (metadata ``error``). Delivery is retried
by librdkafka until ``delivery.timeout.ms`` (ThingsBoard's Java default, 120 s, unless the node's
``otherProperties`` set another), then the message goes to Failure; the platform keeps serving.

When the chain has no ``Success`` connection out of the node (the tutorial's forwarding chain ends at
it), nothing would read a delivered message again: librdkafka then reports failed deliveries only
(``delivery.report.only.error``), and successful ones are counted from the producer's queue length
(produced − still queued or unreported − failed), handed to the engine as a count. Failures still
come back one by one with their ``error`` metadata. When the node has no ``Failure`` connection
either (the tutorial chain), a failed message would not be read again, so the records carry no
per-message callback at all (one producer-wide callback counts the failures): a ``partial`` per record
only to find its TbMsg again cost about 1–2 µs of CPU per message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial

from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, compile_pattern, register

log = logging.getLogger(__name__)

DEFAULT_DELIVERY_TIMEOUT_MS = 120_000
FLUSH_TIMEOUT_S = 30.0
# Java producer settings with no librdkafka counterpart (serializers are implicit: we send text).
_JAVA_ONLY = {"key.serializer", "value.serializer", "max.block.ms", "buffer.memory",
              "partitioner.class", "interceptor.classes", "metadata.max.idle.ms"}


def _int(config: dict, key: str, default: int) -> int:
    value = config.get(key, default)
    try:
        return int(value if value is not None else default)
    except (TypeError, ValueError) as exc:
        raise NodeConfigError(f"{key} must be an integer, not {value!r}") from exc


def producer_config(node_id: str, config: dict) -> dict:
    """TbKafkaNodeConfiguration → librdkafka properties."""
    bootstrap = config.get("bootstrapServers") or "localhost:9092"
    acks = str(config.get("acks", "-1"))
    if acks not in ("-1", "0", "1", "all"):
        raise NodeConfigError(f"acks must be -1, 0, 1 or all, not {acks!r}")
    conf = {
        "bootstrap.servers": bootstrap,
        "client.id": f"producer-tb-kafka-node-{node_id}-tbspark",
        "acks": acks,
        "retries": _int(config, "retries", 0),
        "batch.size": max(1, _int(config, "batchSize", 16384)),
        "linger.ms": _int(config, "linger", 0),
        "queue.buffering.max.kbytes": max(1, _int(config, "bufferMemory", 33554432) // 1024),
        "delivery.timeout.ms": DEFAULT_DELIVERY_TIMEOUT_MS,
        # The Java producer's default (librdkafka's is 1,000,000): while 5 requests are in flight the
        # next records wait and go out together, in fewer and larger requests. Measured: about 4 µs of
        # producer CPU less per record at 3,000 messages/batch (bench/platform_mqtt.py, docs/benchmarks.md).
        "max.in.flight.requests.per.connection": 5,
        # librdkafka's own log lines (e.g. one per failed reconnect while a broker is down) go to
        # Python logging instead of stderr.
        "logger": logging.getLogger("tbspark.kafka.librdkafka"),
    }
    other = config.get("otherProperties") or {}
    if not isinstance(other, dict):
        raise NodeConfigError("otherProperties must be an object of string properties")
    for k, v in other.items():
        if k in _JAVA_ONLY:
            continue
        if k == "message.timeout.ms":
            k = "delivery.timeout.ms"
        conf[k] = str(v)
    return conf


@register
class TbKafkaNode(Node):
    TYPE = PKG + "kafka.TbKafkaNode"
    CURRENT_VERSION = 1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        cfg = self.config
        topic = cfg.get("topicPattern")
        if not topic or not isinstance(topic, str):
            raise NodeConfigError("topicPattern must be a non-empty string")
        self.topic = compile_pattern(topic)
        key = cfg.get("keyPattern")
        self.key = compile_pattern(key) if key else None
        self.headers = bool(cfg.get("addMetadataKeyValuesAsKafkaHeaders", False))
        self.charset = cfg.get("kafkaHeadersCharset") or "UTF-8"
        try:
            "".encode(self.charset)
        except LookupError as exc:
            raise NodeConfigError(f"kafkaHeadersCharset {self.charset!r} is not a known charset") from exc
        self.conf = producer_config(self.id, cfg)
        self.producer = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._done: list = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"produced": 0, "delivered": 0, "failed": 0}
        self.lean = False
        self.blind = False  # lean, and no Failure connection either: no per-record callback
        self._counted = 0
        self._failures_seen = 0

    def check(self) -> None:
        """Let librdkafka judge the properties (unknown or bad values) without connecting."""
        from confluent_kafka import KafkaException, Producer

        try:
            Producer(self.conf)
        except (KafkaException, ValueError, TypeError) as exc:
            raise NodeConfigError(f"Kafka producer properties rejected: {exc}") from exc

    async def start(self) -> None:
        from confluent_kafka import Producer

        self.loop = asyncio.get_running_loop()
        conf = self.conf
        # No Success connection: only failures need a delivery report (see the module docstring).
        self.lean = self.routed is not None and "Success" not in self.routed
        self.blind = self.lean and "Failure" not in self.routed
        if self.lean:
            conf = dict(conf, **{"delivery.report.only.error": True})
        if self.blind:
            # Failures are only counted: one callback for every record (no per-record partial).
            conf = dict(conf, on_delivery=self._on_blind_delivery)
        self.producer = Producer(conf)
        self._counted = 0  # successes handed to the engine as a count (lean mode)
        self._thread = threading.Thread(target=self._poll_loop, name=f"kafka-node-{self.name}", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self._hand_back()
        remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        self._hand_back()
        if remaining:
            log.warning("kafka node %s: %d messages not delivered at shutdown", self.name, remaining)

    def _hand_back(self) -> None:  # poll thread, between poll()/flush() calls
        done, self._done = self._done, []
        ok = 0
        if self.lean:
            # Read "produced" before the queue length: a record produced in between is then in the
            # length but not in "produced", so the figure can only lag, never run ahead. Failure
            # reports are served only by this thread, so "failures seen" is stable here.
            produced = self.stats["produced"]
            ok = produced - len(self.producer) - self._failures_seen - self._counted
            if ok < 0:
                ok = 0
            self._counted += ok
        if (done or ok) and self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._finish, done, ok)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _on_delivery(self, msg, err, record) -> None:  # poll thread, inside producer.poll/flush
        # librdkafka serves delivery reports only from poll() and flush(), both called by the poll
        # thread, which also swaps the list in _hand_back: one thread, so no lock per report.
        self._done.append((msg, err, record))
        if err is not None:
            self._failures_seen += 1

    def _on_blind_delivery(self, err, record) -> None:  # poll thread, blind mode (see module docstring)
        if err is not None:
            self._done.append((None, err, record))
            self._failures_seen += 1

    def _finish(self, done: list, ok: int = 0) -> None:  # event loop
        out = []
        append = out.append
        failed = 0
        unrouted = 0  # failures of records sent without their TbMsg (blind mode): counted only
        for msg, err, record in done:
            if msg is None:
                unrouted += 1
                continue
            md = msg.metadata
            if err is None:
                md["offset"] = str(record.offset())
                md["partition"] = str(record.partition())
                md["topic"] = record.topic()
                append(("Success", msg))
            else:
                md["error"] = f"org.apache.kafka.common.KafkaException: {err.str()} ({err.name()})"
                failed += 1
                append(("Failure", msg))
        failed += unrouted
        self.stats["delivered"] += len(done) - failed + ok
        self.stats["failed"] += failed
        if ok:
            self.resume_count("Success", ok)
        if unrouted:
            self.resume_count("Failure", unrouted)
        if out:
            self.resume(out)

    async def process(self, msgs):
        if self.producer is None:
            for m in msgs:
                m.metadata["error"] = "IllegalStateException: Kafka producer is not started"
            return [("Failure", m) for m in msgs]
        produce = self.producer.produce
        topic_of, key_of, with_headers = self.topic, self.key, self.headers
        # Constant topic / "${metadataKey}" key (the usual patterns): rendered without a call.
        const_topic = getattr(topic_of, "constant", None)
        key_md = getattr(key_of, "metadata_key", None) if key_of is not None else None
        blind = self.blind
        on_delivery = self._on_delivery
        stats = self.stats
        out = []
        produced = 0
        for m in msgs:
            try:
                topic = const_topic if const_topic is not None else topic_of(m)
                if key_md is not None:
                    key = m.metadata.get(key_md)
                    if key is None:
                        key = key_of.pattern
                else:
                    key = key_of(m) if key_of else None
                headers = ([("tb_msg_md_" + k, v.encode(self.charset)) for k, v in m.metadata.items()]
                           if with_headers else None)
                value = m.data_bytes()
            except Exception as exc:  # a pattern or value that cannot be rendered
                m.metadata["error"] = f"{type(exc).__name__}: {exc}"
                out.append(("Failure", m))
                continue
            while True:
                try:
                    if blind:  # the producer-wide callback counts failures (see start)
                        if headers is None:
                            produce(topic, value, key)
                        else:
                            produce(topic, value, key, headers=headers)
                    else:
                        cb = partial(on_delivery, m)  # called (err, record) by the poll thread
                        if headers is None:
                            produce(topic, value, key, on_delivery=cb)
                        else:
                            produce(topic, value, key, headers=headers, on_delivery=cb)
                    produced += 1
                    break
                except BufferError:
                    # Local queue full (broker slow or down): let the poll thread drain, then retry.
                    # "produced" is counted after produce() returned, and before any wait (the poll
                    # thread's lean count may lag behind it, never run ahead).
                    stats["produced"] += produced
                    produced = 0
                    await asyncio.sleep(0.01)
                except Exception as exc:  # e.g. invalid topic name
                    m.metadata["error"] = f"org.apache.kafka.common.KafkaException: {exc}"
                    out.append(("Failure", m))
                    break
        stats["produced"] += produced
        return out

    async def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        await asyncio.sleep(0)  # let the last hand-back run

    def counters(self) -> dict:
        in_flight = len(self.producer) if self.producer is not None else 0
        return dict(self.stats, in_flight=in_flight)
