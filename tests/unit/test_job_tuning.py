"""The aggregation job's tuning is one frozen value: the defaults are the measured ones, and a
benchmark variant is a new value, never an edit of the one every job shares."""

from __future__ import annotations

import dataclasses

import pytest

from tbspark.aggregate.tuning import DEFAULT_TUNING, JobTuning


def test_defaults_are_the_measured_values() -> None:
    assert DEFAULT_TUNING == JobTuning(driver_java_options=("-Xss16m",), session_conf={}, source_options={},
                                       single_task_below=100_000, prime_records=200_000, prime_rounds=3,
                                       prime_from_rate=5_000)


def test_it_cannot_be_changed_in_place() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_TUNING.prime_records = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_TUNING.session_conf["spark.x"] = "y"  # type: ignore[index]
    conf = {"kafka.check.crcs": "false"}
    tuning = JobTuning(source_options=conf)
    conf["kafka.check.crcs"] = "true"  # the caller's dict is copied, not shared
    assert tuning.source_options == {"kafka.check.crcs": "false"}


def test_a_variant_is_a_replace() -> None:
    variant = dataclasses.replace(DEFAULT_TUNING, prime_records=0, driver_java_options=["-Xss16m", "-XX:+UseSerialGC"])
    assert variant.prime_records == 0 and variant.driver_java_options == ("-Xss16m", "-XX:+UseSerialGC")
    assert DEFAULT_TUNING.prime_records == 200_000


@pytest.mark.parametrize("field", ["single_task_below", "prime_records", "prime_rounds", "prime_from_rate"])
def test_a_negative_count_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"JobTuning.{field} must be a whole number >= 0"):
        JobTuning(**{field: -1})
