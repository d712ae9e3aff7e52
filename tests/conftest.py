"""Shared fixtures. Each service's fixtures live in tests/fixtures/<service>.py:
real Kafka, the real embedded platform, real Spark — started once per session on free ports,
waited on by readiness, stopped by PID."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.platform",
    "tests.fixtures.spark",
]
