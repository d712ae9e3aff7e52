"""docker-compose.yml cannot run here (no Docker): check its wiring the way a user would trip on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tbspark.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _listeners(kafka_env: dict, var: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}"""
    out = {}
    for item in kafka_env[var].split(","):
        name, addr = item.split("://", 1)
        out[name] = addr
    return out


def _published(service: dict) -> set[int]:
    ports = set()
    for p in service.get("ports", []):
        host = str(p).split("/")[0].split(":")[0]
        if host.isdigit():
            ports.add(int(host))
    return ports


def test_services_present(compose):
    assert {"postgres", "thingsboard-ce", "kafka", "aggregate", "tb-install"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["thingsboard-ce"]["image"].startswith("thingsboard/tb-node:")


def test_thingsboard_ports_and_database(compose):
    tb = compose["services"]["thingsboard-ce"]
    assert {8080, 1883} <= _published(tb)
    env = _env(tb)
    assert env["SPRING_DATASOURCE_URL"] == "jdbc:postgresql://postgres:5432/thingsboard"
    assert _env(compose["services"]["postgres"])["POSTGRES_DB"] == "thingsboard"
    # tb-node creates nothing on its own: the install service must load the demo tenant tbspark logs in as
    inst = _env(compose["services"]["tb-install"])
    assert inst["INSTALL_TB"] == "true" and inst["LOAD_DEMO"] == "true"
    assert inst["SPRING_DATASOURCE_URL"] == env["SPRING_DATASOURCE_URL"]


def test_kafka_kraft_with_a_listener_for_containers_and_one_for_the_host(compose):
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    advertised = _listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    bound = _listeners(env, "KAFKA_LISTENERS")
    internal = compose["x-kafka-internal"]
    # the rule chain inside ThingsBoard's container and the aggregate job connect here
    assert internal == "kafka:19092"
    assert internal in advertised.values()
    name = next(n for n, a in advertised.items() if a == internal)
    assert bound[name].endswith(":19092")
    assert kafka.get("hostname", "kafka") == "kafka" or "kafka" in compose["services"]
    # tools on the host connect to localhost:9092, which must be published
    host_name = next(n for n, a in advertised.items() if a.startswith("localhost:"))
    host_port = int(advertised[host_name].split(":")[1])
    assert host_port in _published(kafka)
    assert bound[host_name].endswith(f":{host_port}")
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(advertised) | set(bound) <= set(protocols)


def test_aggregate_service_reaches_thingsboard_and_kafka_from_inside(compose):
    agg = compose["services"]["aggregate"]
    env = _env(agg)
    assert env["KAFKA_BOOTSTRAP"] == compose["x-kafka-internal"]
    tb_port = next(int(str(p).split(":")[1]) for p in compose["services"]["thingsboard-ce"]["ports"]
                   if str(p).startswith("8080:"))
    assert env["TB_URL"] == f"http://thingsboard-ce:{tb_port}"
    assert {"TB_USERNAME", "TB_PASSWORD", "TBSPARK_STATE_DIR"} <= set(env)
    assert agg["command"][:2] == ["tbspark", "aggregate"]
    assert "kafka" in agg["depends_on"] and "thingsboard-ce" in agg["depends_on"]
    # the image installs the project and the JVM the Spark job needs
    dockerfile = agg["build"]["dockerfile_inline"]
    assert "pip install" in dockerfile and "openjdk" in dockerfile


def test_rule_chain_bootstrap_for_compose_is_documented_and_the_scenario_works_on_a_local_thingsboard(compose):
    """Under compose the rule chain must use the container listener (inside ThingsBoard's container
    localhost is ThingsBoard): the walk-through and the compose file say to set TB_KAFKA_BOOTSTRAP.
    The shipped scenario itself hard-codes no container address, so it works as is against a
    ThingsBoard on this host (its rule chain then uses the scenario's own bootstrap)."""
    internal = compose["x-kafka-internal"]
    doc = (REPO_ROOT / "docs" / "thingsboard.md").read_text()
    assert f"TB_KAFKA_BOOTSTRAP={internal}" in doc
    assert f"TB_KAFKA_BOOTSTRAP={internal}" in COMPOSE.read_text()
    from tbspark.scenario import load_scenario
    from tbspark.settings import scenario_connection

    sc = load_scenario(REPO_ROOT / "scenarios" / "wind-turbines-thingsboard.yaml")
    assert sc.platform.kind == "thingsboard"
    assert sc.kafka.bootstrap == "localhost:9092"
    assert sc.kafka.bootstrap_for_platform is None
    local = scenario_connection(sc, REPO_ROOT / "no-such-state-dir", environ={})
    assert local.kafka_bootstrap_for_platform == "localhost:9092"
    in_compose = scenario_connection(sc, REPO_ROOT / "no-such-state-dir", environ={"TB_KAFKA_BOOTSTRAP": internal})
    assert in_compose.kafka_bootstrap_for_platform == internal
    assert in_compose.kafka_bootstrap == "localhost:9092"  # tbspark on the host still uses the host listener


def test_kafka_keeps_its_data_on_its_volume(compose):
    """Kafka's log directory must be the mounted volume, or a recreated container loses the topic
    while the aggregate job's checkpoint (kept on its own volume) survives."""
    kafka = compose["services"]["kafka"]
    log_dirs = _env(kafka).get("KAFKA_LOG_DIRS")
    assert log_dirs, "KAFKA_LOG_DIRS unset: the image writes to /tmp/kafka-logs inside the container"
    mounts = {}
    for v in kafka.get("volumes", []):
        source, target = str(v).split(":")[:2]
        mounts[target.rstrip("/")] = source
    for d in log_dirs.split(","):
        assert d.rstrip("/") in mounts, f"{d} is not a mounted volume ({sorted(mounts)})"
        assert mounts[d.rstrip("/")] in compose.get("volumes", {}), "a named volume, not a bind mount"


def test_aggregate_image_ships_a_stamped_jar_cache(compose):
    """The image must fill its jar cache with tbspark's own resolver, which writes the stamp
    resolve_jars checks at start; a bare `mvn copy-dependencies` leaves no stamp and Maven runs at
    every container start."""
    agg = compose["services"]["aggregate"]
    lines = [ln.strip() for ln in agg["build"]["dockerfile_inline"].splitlines()]
    env_lines = [ln for ln in lines if ln.startswith("ENV TBSPARK_JAR_CACHE=")]
    assert len(env_lines) == 1
    env_at = lines.index(env_lines[0])
    resolve_at = next(i for i, ln in enumerate(lines) if "python -m tbspark.stack.jvm spark" in ln)
    assert env_at < resolve_at, "the cache must be set before the jars are resolved into it"
    assert not any("dependency:copy-dependencies" in ln for ln in lines)  # Maven alone writes no stamp
