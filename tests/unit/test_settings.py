"""Configuration precedence: defaults < local stack < scenario < environment < flags; secrets stay hidden."""

from pathlib import Path

from tbspark.scenario import parse_scenario
from tbspark.settings import connection_for, resolve_connection, state_dir

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
    conn = connection_for(parse_scenario(text), tmp_path, environ={})
    assert (conn.tb_url, conn.mqtt_host, conn.kafka_bootstrap) == ("http://tb.example:8080", "tb.example", "127.0.0.1:39092")


def test_state_dir_precedence(tmp_path: Path) -> None:
    assert state_dir(None, environ={}) == Path(".tbspark").resolve()
    assert state_dir(None, environ={"TBSPARK_STATE_DIR": str(tmp_path)}) == tmp_path
    assert state_dir(tmp_path / "f", environ={"TBSPARK_STATE_DIR": "/x"}) == tmp_path / "f"
