"""Shared fixtures. Each service's fixtures live in tests/fixtures/<service>.py:
real Kafka, the real embedded platform, real Spark — started once per session on free ports,
waited on by readiness, stopped by PID. What tests share with the benchmarks (starting the
platform, the pipeline runner, wait_until, the CPU meter) lives in tbspark/testing/."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.platform",
    "tests.fixtures.spark",
]
