"""`--json` on the verbs that talk to services: exactly one JSON document on stdout, the same key
(`scenario`) naming the scenario in each, progress and the Spark JVM's noise off stdout — and the
JVM's log lines, banners and warnings in <state>/logs/spark.log, not on the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.test_provision import run, stack, unique_tutorial  # noqa: F401

NOISE = ("WARN", "WARNING", "log4j", "incubator", "SPARK_LOCAL_IP", "hostname")


def one_document(text: str) -> dict:
    """The text is one JSON object and nothing else (json.loads refuses trailing data)."""
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.spark
def test_every_service_verb_prints_one_json_document(stack, tmp_path):  # noqa: F811
    path, _ = unique_tutorial(tmp_path)
    state = tmp_path / "state"
    name = path.read_text().split("name: ", 1)[1].split("\n", 1)[0]

    res = run(["provision", str(path), "--json"], stack, state)
    assert res.exit_code == 0, res.output
    assert one_document(res.stdout)["scenario"] == name

    res = run(["simulate", str(path), "--duration", "3s", "--json"], stack, state)
    assert res.exit_code == 0, res.output
    sim = one_document(res.stdout)
    assert sim["scenario"] == name and sim["sent"] > 0

    # aggregate in its own process: what reaches file descriptors 1 and 2 is what a terminal shows
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONF_DIR", "TB_DEBUG")}
    env.update({"TB_URL": stack.url, "TB_MQTT_HOST": stack.mqtt_host, "TB_MQTT_PORT": str(stack.mqtt_port),
                "KAFKA_BOOTSTRAP": stack.kafka_bootstrap})
    done = subprocess.run([sys.executable, "-m", "tbspark", "aggregate", str(path), "--once", "--json",
                           "--state-dir", str(state)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    agg = one_document(done.stdout)
    assert agg["scenario"] == name and agg["records"] == sim["sent"]
    noisy = [ln for ln in done.stderr.splitlines() if any(word in ln for word in NOISE)]
    assert noisy == [], noisy
    log = state / "logs" / "spark.log"
    assert log.exists() and log.stat().st_size > 0  # the JVM's output went here instead

    res = run(["verify", str(path), "--json"], stack, state)
    doc = one_document(res.stdout)
    assert doc["scenario"] == name
    assert res.exit_code == (0 if doc["holds"] else 1)


def test_platform_serve_json_is_one_document_from_ready_to_stop(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "tbspark", "platform", "serve", "--http-port", "0",
                             "--mqtt-port", "0", "--state-dir", str(tmp_path / "p"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # blocks until the platform says it is ready (pytest's timeout bounds it)
            lines.append(line)
            if line.rstrip() == "}":
                break
        ready = one_document("".join(lines))
        assert ready["pid"] == proc.pid and ready["url"].startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert rest == ""  # nothing after the one document
