"""Kafka topics as tbspark creates them, for every verb (the stack, the job, the platform's node):
one broker → one replica; a cluster → three replicas with ``min.insync.replicas`` 2, so a producer
with ``acks=all`` has each record on two brokers before it counts as sent and one broker may die.
Kept out of ``tbspark.stack`` so that the Spark job imports nothing of the local stack."""

from __future__ import annotations

import logging
import time

from tbspark.errors import KafkaError

REPLICATED_RF = 3          # replicas of a topic on a cluster of 3 or more brokers
REPLICATED_MIN_ISR = 2     # in-sync replicas an acks=all write needs: survives one broker's loss


def quiet_logger() -> logging.Logger:
    logger = logging.getLogger("tbspark.kafka.admin")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def replication_for(brokers: int) -> tuple[int, int | None]:
    """(replication factor, min.insync.replicas or None for the broker's default) for a cluster of
    ``brokers`` brokers."""
    if brokers >= REPLICATED_RF:
        return REPLICATED_RF, REPLICATED_MIN_ISR
    return 1, None


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> int:
    """Create ``topic`` with ``partitions`` partitions (replicated as ``replication_for`` says for the
    brokers that answer), or grow it to that many; returns the count it has. Idempotent: an existing
    topic with at least as many partitions is left as is."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    if partitions < 1:
        raise KafkaError(f"a topic needs at least one partition, not {partitions}", "pass --partitions 1 or more")
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet_logger()})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            have, brokers = _partition_count(admin, topic)
            if have is None:
                rf, min_isr = replication_for(brokers)
                config = {"min.insync.replicas": str(min_isr)} if min_isr else {}
                admin.create_topics([NewTopic(topic, partitions, rf, config=config)])[topic].result(
                    timeout=timeout_s)
            elif have < partitions:
                admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(timeout=timeout_s)
            have, _ = _partition_count(admin, topic)
            if have is not None and have >= partitions:
                return have
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() not in ("TOPIC_ALREADY_EXISTS", "INVALID_PARTITIONS") and not err.retriable():
                raise KafkaError(f"cannot create topic {topic!r} on {bootstrap}: {err.str()}",
                                 "check the topic name and that the broker runs (`tbspark stack status`)") from exc
        if time.monotonic() > deadline:
            raise KafkaError(f"topic {topic!r} on {bootstrap} not ready within {timeout_s:.0f} s",
                             "check the broker's log (`tbspark stack status` shows where)")
        time.sleep(0.1)  # retry interval while the controller settles


def _partition_count(admin, topic: str) -> tuple[int | None, int]:
    # All topics rather than list_topics(topic=...), which could auto-create the topic it asks about.
    md = admin.list_topics(timeout=5.0)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None, len(md.brokers)
    return len(t.partitions), len(md.brokers)


def is_replicated(bootstrap: str, topic: str, timeout_s: float = 10.0) -> bool:
    """True when ``topic`` has more than one replica (its producers then use acks=all and
    idempotence); False when it has one or does not exist yet (decided then by the broker count)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet_logger()})
    md = admin.list_topics(timeout=timeout_s)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return replication_for(len(md.brokers))[0] > 1
    return any(len(p.replicas) > 1 for p in t.partitions.values())
