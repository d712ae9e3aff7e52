"""The command line as a user meets it, without any service running: the official tools'
conventions (-h, --version, completion, --debug anywhere, TB_DEBUG), one-line errors with what to
do, exit codes 0/1/2/3, exactly one JSON document with --json, `-o -`, one duration syntax, and
where the rule chain's Kafka address comes from."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbspark.cli import app, take_debug
from tbspark.cli._options import parse_duration
from tbspark.errors import ScenarioError
from tbspark.settings import REPO_ROOT

TUTORIAL = REPO_ROOT / "scenarios" / "wind-turbines.yaml"
REAL_TB = REPO_ROOT / "scenarios" / "wind-turbines-thingsboard.yaml"
CLEAN_ENV = {k: None for k in ("TB_URL", "TB_MQTT_HOST", "TB_MQTT_PORT", "TB_USERNAME", "TB_PASSWORD",
                                "KAFKA_BOOTSTRAP", "TB_KAFKA_BOOTSTRAP", "TBSPARK_STATE_DIR", "TB_DEBUG")}

runner = CliRunner()


def invoke(args: list[str], **env: str):
    return runner.invoke(app, args, env={**CLEAN_ENV, "COLUMNS": "100", **env})


def error_lines(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- conventions --------------------------------------------------------------------------------

def test_version_and_short_help():
    from tbspark import __version__

    res = invoke(["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"tbspark {__version__}"
    root = invoke(["-h"])
    assert root.exit_code == 0
    for word in ("provision", "simulate", "aggregate", "verify", "demo", "--install-completion",
                 "--debug", "--version"):
        assert word in root.stdout
    sub = invoke(["simulate", "-h"])
    assert sub.exit_code == 0 and "--duration" in sub.stdout and "--tb-url" in sub.stdout


def test_shell_completion_completes_verbs():
    import os

    env = {**{k: v for k, v in os.environ.items() if k not in CLEAN_ENV},
           "_TBSPARK_COMPLETE": "complete_bash", "COMP_WORDS": "tbspark stack st", "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-c", "from tbspark.cli import main; main()"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["status"], done.stderr
    # The bash script `--install-completion` writes, from a fresh process as a shell runs it. Asked for by
    # name (_TBSPARK_COMPLETE=source_bash): `--show-completion` detects the calling shell, which under
    # make (/bin/sh) is one Typer does not support.
    script = subprocess.run([sys.executable, "-c", "from tbspark.cli import main; main()"],
                            env={**{k: v for k, v in os.environ.items() if k not in CLEAN_ENV},
                                 "_TBSPARK_COMPLETE": "source_bash"},
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_TBSPARK_COMPLETE" in script.stdout, script.stderr


def test_exit_codes_are_documented_in_help_and_readme():
    help_text = " ".join(invoke(["--help"]).stdout.split())
    for code, meaning in (("0", "success"), ("1", "does not hold"), ("2", "usage"), ("3", "cannot reach")):
        assert f"{code} " in help_text and meaning in help_text
    readme = (REPO_ROOT / "README.md").read_text()
    assert "| 3 |" in readme and "| 1 |" in readme and "does not hold" in readme


def test_choices_are_shown_as_choices():
    out = " ".join(invoke(["simulate", "-h"]).stdout.split())
    assert "asyncio|paho" in out and "0|1" in out
    assert "earliest|latest" in " ".join(invoke(["aggregate", "-h"]).stdout.split())


def test_connection_flags_on_every_verb_that_connects():
    for verb in ("provision", "simulate", "aggregate", "verify"):
        out = invoke([verb, "-h"]).stdout
        for flag in ("--tb-url", "--mqtt-host", "--mqtt-port", "--kafka-bootstrap", "--state-dir", "--json"):
            assert flag in out, (verb, flag)


def test_debug_is_taken_from_anywhere_before_a_double_dash():
    assert take_debug(["scenario", "check", "x", "--debug"]) == (["scenario", "check", "x"], True)
    assert take_debug(["--debug", "stack", "status"]) == (["stack", "status"], True)
    assert take_debug(["demo", "--", "--debug"]) == (["demo", "--", "--debug"], False)


@pytest.mark.parametrize("how", [["--debug"], []])
def test_debug_anywhere_or_tb_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path, how):
    missing = str(tmp_path / "nope.yaml")
    res = invoke(["scenario", "check", missing, *how], **({} if how else {"TB_DEBUG": "1"}))
    assert res.exit_code == 2  # a scenario error, as without --debug
    assert "Traceback (most recent call last)" in res.stderr
    assert f"{ScenarioError.__module__}.ScenarioError" in res.stderr


def test_without_debug_an_error_is_one_line_and_exit_2(tmp_path):
    res = invoke(["scenario", "check", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert error_lines(res) == [f"Error: {tmp_path / 'nope.yaml'}: no such file"]


def test_click_usage_errors_are_one_line_with_where_to_look():
    res = invoke(["stack", "status", "--bogus"])
    assert res.exit_code == 2
    assert error_lines(res) == ["Error: No such option: --bogus — see 'tbspark stack status -h'"]


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch, tmp_path):
    import tbspark.cli.scenario_cmd as mod

    def boom(_):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(mod, "summarize", boom)
    res = invoke(["scenario", "check", str(TUTORIAL)])
    assert res.exit_code == 3
    assert error_lines(res) == ["Error: unexpected RuntimeError: disk on fire — rerun with --debug for the "
                                "traceback"]


# ---- bad configuration: one line, exit 2, in a fresh process (no traceback anywhere) -------------

def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "tbspark", *args], env=e, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("env, args, expected", [
    ({"TB_URL": "localhost:8080"}, [],
     "Error: TB_URL='localhost:8080' is not an http(s) URL — give the scheme and host, e.g. "
     "TB_URL=http://localhost:8080"),
    ({}, ["--tb-url", "ftp://x"],
     "Error: --tb-url='ftp://x' is not an http(s) URL — give the scheme and host, e.g. "
     "--tb-url=http://localhost:8080"),
    ({"TB_MQTT_PORT": "abc"}, [],
     "Error: TB_MQTT_PORT='abc' is not a port — set TB_MQTT_PORT to a number 1-65535, e.g. 1883"),
    ({"TB_URL": "http://localhost:http"}, [],
     "Error: TB_URL='http://localhost:http' has a port that is not a number 1-65535 — e.g. "
     "TB_URL=http://localhost:8080"),
    ({"KAFKA_BOOTSTRAP": "kafka"}, [],
     "Error: KAFKA_BOOTSTRAP='kafka' is not host:port[,host:port…] — e.g. KAFKA_BOOTSTRAP=localhost:9092"),
])
@pytest.mark.parametrize("verb", ["provision", "simulate"])
def test_bad_connection_settings_are_one_line_exit_2(tmp_path, env, args, expected, verb):
    done = cli(verb, str(TUTORIAL), "--state-dir", str(tmp_path), *args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == expected
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_no_stack_is_said_at_once_with_what_to_do(tmp_path):
    """A state dir whose recorded stack is gone: no 7–10 s of retries blaming TB_URL."""
    dead = free_port()
    (tmp_path / "services.json").write_text(json.dumps({
        "kafka": {"bootstrap": f"127.0.0.1:{free_port()}", "pid": 999999},
        "platform": {"url": f"http://127.0.0.1:{dead}", "mqtt_port": free_port(), "pid": 999999}}))
    t0 = time.monotonic()
    res = invoke(["provision", str(TUTORIAL), "--state-dir", str(tmp_path)])
    took = time.monotonic() - t0
    assert res.exit_code == 3
    assert error_lines(res) == [
        f"Error: nothing answers at http://127.0.0.1:{dead}: the stack recorded in {tmp_path} is not "
        f"running — run `tbspark stack up`, or pass the --state-dir of a running stack, or set TB_URL "
        f"to your ThingsBoard"]
    assert took < 4, took


def test_no_stack_recorded_is_said_at_once(tmp_path):
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("something listens on 127.0.0.1:8080, the default address")
    res = invoke(["provision", str(TUTORIAL), "--state-dir", str(tmp_path)])
    assert res.exit_code == 3
    assert error_lines(res)[0].startswith(
        f"Error: nothing answers at http://127.0.0.1:8080: no tbspark stack is recorded in {tmp_path} — "
        f"run `tbspark stack up`")


class _NotThingsBoard(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"Not Found")

    def log_message(self, *a):
        pass


@pytest.fixture
def not_thingsboard():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotThingsBoard)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_path_prefix_on_tb_url_gets_a_hint(tmp_path, not_thingsboard):
    res = invoke(["provision", str(TUTORIAL), "--state-dir", str(tmp_path)],
                 TB_URL=f"{not_thingsboard}/thingsboard")
    assert res.exit_code == 3
    lines = error_lines(res)
    assert len(lines) == 1 and "POST /api/auth/login → 404" in lines[0]
    assert "without a path such as /thingsboard" in lines[0]


def test_verify_that_cannot_reach_thingsboard_exits_3_not_1(tmp_path):
    (tmp_path / "provision.json").write_text(json.dumps({"scenario": "wind-turbines", "devices": {}}))
    port = free_port()
    res = invoke(["verify", str(TUTORIAL), "--state-dir", str(tmp_path), "--tb-url", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 3
    assert error_lines(res) == [f"Error: nothing answers at http://127.0.0.1:{port} (from --tb-url) — start "
                                f"ThingsBoard, or fix the address"]


# ---- stack status ---------------------------------------------------------------------------------

def test_stack_status_exits_3_unless_every_listed_service_is_up(tmp_path):
    empty = invoke(["stack", "status", "--state-dir", str(tmp_path / "none")])
    assert empty.exit_code == 3 and "No stack recorded" in empty.stdout
    (tmp_path / "services.json").write_text(json.dumps({
        "kafka": {"bootstrap": "127.0.0.1:1", "controller_port": 2, "pid": 999999, "config": "x"},
        "platform": {"url": "http://127.0.0.1:3", "mqtt_port": 4, "pid": 999999}}))
    dead = invoke(["stack", "status", "--state-dir", str(tmp_path)])
    assert dead.exit_code == 3 and "dead" in dead.stdout
    as_json = invoke(["stack", "status", "--state-dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 3
    doc = json.loads(as_json.stdout)
    assert doc["up"] is False and doc["kafka"]["up"] is False and doc["platform"]["up"] is False


# ---- JSON and -o - ----------------------------------------------------------------------------------

def test_scenario_check_json_uses_the_common_key():
    res = invoke(["scenario", "check", str(TUTORIAL), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["scenario"] == "wind-turbines" and "name" not in doc


def test_rulechain_export_to_stdout_is_the_chain_and_no_file_named_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(["rulechain", "export", str(TUTORIAL), "-o", "-", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0
    chain = json.loads(res.stdout)  # exactly one JSON document: the chain
    assert set(chain) == {"ruleChain", "metadata"}
    assert not (tmp_path / "-").exists()


def test_rulechain_export_json_reports_in_one_document(tmp_path):
    out = tmp_path / "chain.json"
    res = invoke(["rulechain", "export", str(TUTORIAL), "-o", str(out), "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["scenario"] == "wind-turbines" and doc["output"] == str(out)
    assert json.loads(out.read_text())["ruleChain"]["name"] == doc["rule_chain"]


def test_stack_down_json_on_an_empty_state_dir(tmp_path):
    res = invoke(["stack", "down", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0
    json.loads(res.stdout)


# ---- the rule node's Kafka address: scenario < env < flag, default tbspark's own ------------------

def kafka_node_bootstrap(res) -> str:
    assert res.exit_code == 0, res.output
    chain = json.loads(res.stdout)
    return next(n["configuration"]["bootstrapServers"] for n in chain["metadata"]["nodes"]
                if n["type"].endswith("TbKafkaNode"))


def test_platform_kafka_bootstrap_precedence(tmp_path):
    base = ["rulechain", "export", str(REAL_TB), "-o", "-", "--state-dir", str(tmp_path)]
    # the shipped real-ThingsBoard scenario: the chain uses tbspark's own Kafka (a local ThingsBoard)
    assert kafka_node_bootstrap(invoke(base)) == "localhost:9092"
    assert kafka_node_bootstrap(invoke(base, KAFKA_BOOTSTRAP="127.0.0.1:19999")) == "127.0.0.1:19999"
    # a scenario that names it
    named = tmp_path / "named.yaml"
    named.write_text(REAL_TB.read_text().replace("  bootstrap: localhost:9092\n",
                                                 "  bootstrap: localhost:9092\n  bootstrap_for_platform: sc:1\n"))
    scen = ["rulechain", "export", str(named), "-o", "-", "--state-dir", str(tmp_path)]
    assert kafka_node_bootstrap(invoke(scen)) == "sc:1"
    # the environment beats the scenario, the flag beats the environment
    assert kafka_node_bootstrap(invoke(scen, TB_KAFKA_BOOTSTRAP="kafka:19092")) == "kafka:19092"
    assert kafka_node_bootstrap(invoke([*scen, "--platform-kafka-bootstrap", "flag:2"],
                                       TB_KAFKA_BOOTSTRAP="kafka:19092")) == "flag:2"
    bad = invoke(scen, TB_KAFKA_BOOTSTRAP="kafka")
    assert bad.exit_code == 2 and "TB_KAFKA_BOOTSTRAP='kafka' is not host:port" in bad.output


# ---- durations ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("30s", 30), ("90", 90), ("2m", 120),
                                           ("1.5m", 90), ("2h", 7200), (" 10S ", 10)])
def test_one_duration_syntax(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1e3", "inf", "nan", "0", "0s", "-1s", "", "10 d", "s", "9000h"])
def test_durations_a_person_would_not_type_are_refused(text):
    from tbspark.errors import UsageError

    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("verb", [["demo"], ["simulate", str(TUTORIAL)]])
@pytest.mark.parametrize("bad", ["1e3", "inf"])
def test_demo_and_simulate_refuse_the_same_durations(tmp_path, verb, bad):
    res = invoke([*verb, "--duration", bad, "--state-dir", str(tmp_path / "s")])
    assert res.exit_code == 2
    assert error_lines(res) == [f"Error: --duration '{bad}' is not a duration — a positive number with ms, "
                                f"s, m or h, e.g. --duration 30s, 500ms, 2m"]


# ---- output a person reads ------------------------------------------------------------------------

def test_simulate_live_view_fits_80_columns_and_shows_elapsed_and_remaining():
    from rich.console import Console

    from tbspark.cli.simulate_cmd import LiveView
    from tbspark.simulate.fleet import Stats

    view = LiveView(expected_rate=50_000, planned_s=120)
    st = Stats(devices=10_000, connected=10_000, sent=123_456_789, acked=123_456_000, errors=12_345,
               skipped=7, last_error="connection refused by 127.0.0.1:1883 " * 5)
    console = Console(width=80, record=True, color_system=None)
    console.print(view.render(st, now=view.started + 45))
    lines = console.export_text().splitlines()
    assert all(len(ln) <= 80 for ln in lines), lines
    header = lines[0].split()
    assert header == ["elapsed", "left", "devices", "sent", "msg/s", "acked", "errors"]
    assert lines[1].split()[:3] == ["45s", "~1m15s", "10,000/10,000"]
    assert "123,456,789" in lines[1]


def test_planned_seconds_of_a_messages_run_is_the_slowest_stream():
    from tbspark.cli.simulate_cmd import planned_seconds
    from tbspark.scenario import load_scenario

    sc = load_scenario(TUTORIAL)  # every stream at 10 Hz
    assert planned_seconds(sc, None, 50) == pytest.approx(5.0)
    assert planned_seconds(sc, 7.0, None) == 7.0
    assert planned_seconds(sc, None, None) == sc.simulation.duration_s


def _report(holds: bool = True):
    from tbspark.verify import VerifyReport, ZoneVerdict

    zones = [ZoneVerdict(zone=z, windows_expected=3, windows_found=3, windows_matching=3,
                         messages_expected=None, messages_found=None, mean=m, expected_mean=None,
                         tolerance=None, deviation=None, mean_ok=None,
                         series=[(1_000_000 + 10_000 * i, m + i) for i in range(3)])
             for z, m in (("Zone A", 40.0), ("Zone B", 60.0))]
    return VerifyReport(scenario="wind-turbines", holds=holds, window_s=10, timestamps="device",
                        exact=True, started_ms=1_000_000, ended_ms=1_030_000, zones=zones, mismatches=[])


def test_chart_tells_the_zones_apart_without_colour():
    from tbspark.cli.verify_cmd import CHART_MARKERS, zone_chart

    chart = zone_chart(_report())
    legend = [ln for ln in chart.splitlines() if "Zone A" in ln or "Zone B" in ln]
    assert any(f"{CHART_MARKERS[0]} Zone A" in ln for ln in legend)
    assert any(f"{CHART_MARKERS[1]} Zone B" in ln for ln in legend)
    plot_area = "\n".join(ln for ln in chart.splitlines() if "Zone" not in ln)
    assert CHART_MARKERS[0] in plot_area and CHART_MARKERS[1] in plot_area
    assert "\x1b[" not in chart  # no colour codes


@pytest.mark.parametrize("holds, code, verdict", [(True, 0, "HOLDS"), (False, 1, "DOES NOT HOLD")])
def test_demo_prints_one_verdict_line_and_exits_by_it(monkeypatch, tmp_path, holds, code, verdict):
    import tbspark.demo as demo_mod

    def fake_demo(sc, state_dir=None, duration_s=0, keep=False, seed=None, progress=None):
        assert duration_s == 0.5  # `--duration 500ms` is accepted, as by simulate
        progress("stack", "up")
        return demo_mod.DemoReport(scenario=sc.name, state_dir=str(tmp_path), holds=holds, sent=10, acked=10,
                                   windows_verified=6, verify=_report(holds))

    monkeypatch.setattr(demo_mod, "demo", fake_demo)
    res = invoke(["demo", "--duration", "500ms"])
    assert res.exit_code == code
    verdict_lines = [ln for ln in res.stdout.splitlines() if "HOLDS" in ln or "DOES NOT HOLD" in ln]
    assert len(verdict_lines) == 1 and verdict_lines[0].startswith(verdict)
    as_json = invoke(["demo", "--duration", "500ms", "--json"])
    assert as_json.exit_code == code
    doc = json.loads(as_json.stdout)
    assert doc["scenario"] == "wind-turbines" and doc["holds"] is holds
