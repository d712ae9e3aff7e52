"""The aggregation job's tuning: how its Spark session, query and batches are built, as one frozen
value passed into ``job.aggregate`` / ``job.build_session``. The scenario's ``aggregation`` section
says what to compute and how often (window, watermark, ``trigger_s``, ``max_offsets_per_trigger``,
``shuffle_partitions``); this says how the job spends its CPU doing it. The defaults are the measured
best; bench/spark_steady.py builds variants with ``dataclasses.replace``."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class JobTuning:
    # The driver JVM's flags (local mode: the executors are threads of this JVM). -Xss16m: py4j callbacks
    # of foreachBatch recurse deeply.
    driver_java_options: tuple[str, ...] = ("-Xss16m",)
    # Further Spark session settings (bench/spark_steady.py measures alternatives through these).
    session_conf: Mapping[str, str] = field(default_factory=dict)
    # Extra options of the Kafka source, e.g. the consumer's "kafka.fetch.min.bytes".
    source_options: Mapping[str, str] = field(default_factory=dict)
    # Read a batch in one task (no shuffle: one stage) when the previous batch had fewer records than
    # this; 0 = always spread the batch over the cores (a Kafka partition per task, then a shuffle).
    # One core parses ~100,000 records a second, so such a batch stays well inside a 3 s trigger, and it
    # saves five task launches and the shuffle files: 13 % less CPU per record at 5,000 records/s
    # (bench/spark_steady.py, variant "spread" = 0). A larger batch (a backlog) still uses every core.
    single_task_below: int = 100_000
    # Before a continuous job starts its query: run the batch's query prime_rounds times over this many
    # synthetic forwarding-chain records (generated in the JVM), so that the JIT has compiled Spark's JSON
    # parsing, casts, aggregation and planning code before the first real records arrive; a young JVM
    # spends most of its CPU compiling (0 = no priming). See job.prime().
    prime_records: int = 200_000
    prime_rounds: int = 3
    # ... only for a scenario whose fleet sends at least this many messages a second (its
    # expected_rate_hz): a smaller one's young JVM keeps up, and priming would only delay its start.
    prime_from_rate: int = 5_000

    def __post_init__(self) -> None:
        # Truly read-only: a variant is a new value (dataclasses.replace), never an edit of a shared one.
        object.__setattr__(self, "driver_java_options", tuple(self.driver_java_options))
        object.__setattr__(self, "session_conf", MappingProxyType(dict(self.session_conf)))
        object.__setattr__(self, "source_options", MappingProxyType(dict(self.source_options)))
        for name in ("single_task_below", "prime_records", "prime_rounds", "prime_from_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"JobTuning.{name} must be a whole number >= 0, not {value!r}")


DEFAULT_TUNING = JobTuning()
