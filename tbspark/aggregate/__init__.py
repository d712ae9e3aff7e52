"""Stage 4 of the pipeline: the Spark job that turns the Kafka topic into per-zone window aggregates
on ThingsBoard. ``windows`` is pure arithmetic; ``parse``/``job`` wire it into Spark; ``sinks`` write."""

from __future__ import annotations

from typing import Any

__all__ = ["aggregate", "AggregateReport", "AggregateStatus"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the pure window code does not import pyspark.
    if name in __all__:
        from tbspark.aggregate import job

        return getattr(job, name)
    raise AttributeError(name)
