"""Configuration precedence: defaults < local stack < scenario < environment < flags; secrets stay hidden."""

from pathlib import Path

from tbspark.scenario import parse_scenario
from tbspark.settings import scenario_connection, resolve_connection, state_dir

STACK = {"kafka": {"bootstrap": "127.0.0.1:39092"},
         "platform": {"url": "http://127.0.0.1:38080", "mqtt_port": 31883}}


def test_layers_override_in_order() -> None:
    conn = resolve_connection({}, STACK, {}, environ={})
    assert (conn.tb_url, conn.mqtt_port, conn.kafka_bootstrap) == ("http://127.0.0.1:38080", 31883, "127.0.0.1:39092")
    conn = resolve_connection({"tb_url": "http://sc:1/"}, STACK, {}, environ={})
    assert conn.tb_url == "http://sc:1"
    conn = resolve_connection({"tb_url": "http://sc:1"}, STACK, {}, environ={"TB_URL": "http://env:2", "TB_MQTT_PORT": "2883"})
    assert (conn.tb_url, conn.mqtt_host, conn.mqtt_port) == ("http://env:2", "env", 2883)
    conn = resolve_connection({}, STACK, {"tb_url": "http://flag:3"}, environ={"TB_URL": "http://env:2"})
    assert conn.tb_url == "http://flag:3"


def test_password_never_in_repr() -> None:
    conn = resolve_connection({"password": "s3cret"}, None, None, environ={})
    assert "s3cret" not in repr(conn) and conn.password == "s3cret"


def test_real_thingsboard_ignores_the_embedded_platform(tmp_path: Path) -> None:
    import json
    (tmp_path / "services.json").write_text(json.dumps(STACK))
    text = ("name: t\nplatform: {kind: thingsboard, url: 'http://tb.example:8080'}\ndevices:\n  - name: a\n    zone: Z\n"
            "    telemetry:\n      windSpeed: {kind: constant, value: 1, rate_hz: 1}\n")
    conn = scenario_connection(parse_scenario(text), tmp_path, environ={})
    assert (conn.tb_url, conn.mqtt_host, conn.kafka_bootstrap) == ("http://tb.example:8080", "tb.example", "127.0.0.1:39092")


def test_state_dir_precedence(tmp_path: Path) -> None:
    assert state_dir(None, environ={}) == Path(".tbspark").resolve()
    assert state_dir(None, environ={"TBSPARK_STATE_DIR": str(tmp_path)}) == tmp_path
    assert state_dir(tmp_path / "f", environ={"TBSPARK_STATE_DIR": "/x"}) == tmp_path / "f"


def test_platform_kafka_bootstrap_layers_and_default() -> None:
    # default: the bootstrap tbspark itself resolved (a ThingsBoard on this host reaches it there)
    conn = resolve_connection({"kafka_bootstrap": "localhost:9092"}, STACK, {}, environ={})
    assert conn.kafka_bootstrap_for_platform == "localhost:9092"
    conn = resolve_connection({}, STACK, {}, environ={"KAFKA_BOOTSTRAP": "h:1"})
    assert conn.kafka_bootstrap_for_platform == "h:1"
    sc = {"kafka_bootstrap": "localhost:9092", "platform_kafka_bootstrap": "sc:1"}
    assert resolve_connection(sc, None, {}, environ={}).kafka_bootstrap_for_platform == "sc:1"
    env = {"TB_KAFKA_BOOTSTRAP": "kafka:19092"}
    assert resolve_connection(sc, None, {}, environ=env).kafka_bootstrap_for_platform == "kafka:19092"
    flags = {"platform_kafka_bootstrap": "flag:2"}
    conn = resolve_connection(sc, None, flags, environ=env)
    assert conn.kafka_bootstrap_for_platform == "flag:2" and conn.kafka_bootstrap == "localhost:9092"
    assert "flag:2" in repr(conn)


def test_malformed_values_name_where_they_came_from() -> None:
    import pytest

    from tbspark.errors import UsageError

    cases = [
        ({}, {"TB_URL": "localhost:8080"}, {}, "TB_URL='localhost:8080' is not an http(s) URL"),
        ({}, {}, {"tb_url": "ftp://x"}, "--tb-url='ftp://x' is not an http(s) URL"),
        ({}, {"TB_MQTT_PORT": "abc"}, {}, "TB_MQTT_PORT='abc' is not a port"),
        ({}, {"TB_MQTT_PORT": "70000"}, {}, "TB_MQTT_PORT='70000' is not a port"),
        ({"mqtt_port": "x"}, {}, {}, "s.yaml: platform.mqtt_port='x' is not a port"),
        ({}, {"KAFKA_BOOTSTRAP": "nohost"}, {}, "KAFKA_BOOTSTRAP='nohost' is not host:port"),
        ({}, {"TB_KAFKA_BOOTSTRAP": "a:1,b"}, {}, "TB_KAFKA_BOOTSTRAP='a:1,b' is not host:port"),
    ]
    for sc, environ, flags, message in cases:
        with pytest.raises(UsageError) as err:
            resolve_connection(sc, None, flags, environ=environ, scenario_name="s.yaml")
        assert str(err.value).startswith(message), str(err.value)
        assert err.value.exit_code == 2


def test_where_tb_url_came_from_is_kept() -> None:
    assert resolve_connection({}, None, {}, environ={}).tb_url_from == "defaults"
    assert resolve_connection({}, STACK, {}, environ={}).tb_url_from == "the local stack"
    assert resolve_connection({}, STACK, {}, environ={"TB_URL": "http://e:1"}).tb_url_from == "TB_URL"
    assert resolve_connection({}, STACK, {"tb_url": "http://f:1"}, environ={}).tb_url_from == "--tb-url"


def test_tb_debug() -> None:
    from tbspark.settings import debug

    assert debug({"TB_DEBUG": "1"}) and debug({"TB_DEBUG": "true"}) and not debug({}) and not debug({"TB_DEBUG": "0"})


def test_a_damaged_stack_record_is_said_not_skipped(tmp_path: Path) -> None:
    """A cut-short services.json used to be skipped silently, so a verb then talked to the default
    addresses (another stack, or nothing) instead of saying the record was damaged."""
    import pytest

    from tbspark.errors import StateError

    (tmp_path / "services.json").write_text('{"kafka": {"bootstrap": "127.0.0.1:39')
    text = ("name: t\ndevices:\n  - name: a\n    zone: Z\n"
            "    telemetry:\n      windSpeed: {kind: constant, value: 1, rate_hz: 1}\n")
    with pytest.raises(StateError) as e:
        scenario_connection(parse_scenario(text), tmp_path, environ={})
    assert "services.json" in str(e.value) and "stack down" in (e.value.hint or "")
