"""tbspark/settings.py is the one reader of the environment: every variable listed once (with its
default and meaning) in ``settings.VARIABLES`` and docs/configuration.md, read through a named accessor."""

from __future__ import annotations

import re

import pytest

from tbspark import settings
from tbspark.errors import StackError, UsageError
from tbspark.settings import REPO_ROOT

# What reads the process environment: os.environ / os.getenv / os.environb, and settings.env("NAME")
# called from elsewhere (a named accessor in settings.py says what the variable means).
ENV_READ = re.compile(r"os\.environb?\b|\bgetenv\b|\bputenv\b|from os import [^\n]*\benviron\b|settings\.env\(")


def test_no_module_but_settings_reads_the_environment() -> None:
    offenders = []
    for path in sorted((REPO_ROOT / "tbspark").rglob("*.py")):
        if path == REPO_ROOT / "tbspark" / "settings.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if ENV_READ.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{no}: {line.strip()}")
    assert not offenders, (
        "these lines read the environment outside tbspark/settings.py; add the variable to "
        "settings.VARIABLES (and docs/configuration.md) with a named accessor, and call that "
        "(a child process's environment: settings.child_environ):\n  " + "\n  ".join(offenders))


def test_the_guard_catches_a_read() -> None:
    for line in ('x = os.environ.get("X")', 'os.getenv("X")', "env = {**os.environ}",
                 'settings.env("TB_URL")', "from os import environ, path"):
        assert ENV_READ.search(line), line
    for line in ("def find_java(environ=None):", "subprocess.run(cmd, env=environ)", "settings.java_home()"):
        assert not ENV_READ.search(line), line


def test_docs_list_exactly_the_variables_settings_reads() -> None:
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    documented = re.findall(r"^\| `([A-Z_]+)` \|", text, re.M)
    listed = [v.name for v in settings.VARIABLES]
    assert len(set(listed)) == len(listed), "a variable is listed twice in settings.VARIABLES"
    assert documented == listed, ("docs/configuration.md's table and settings.VARIABLES differ: "
                                  f"only in docs {sorted(set(documented) - set(listed))}, "
                                  f"only in settings {sorted(set(listed) - set(documented))}")


def test_reading_an_unlisted_variable_is_refused() -> None:
    with pytest.raises(KeyError, match="not in tbspark.settings.VARIABLES"):
        settings.env("TBSPARK_NOT_A_SETTING", {})


def test_blank_is_unset_but_an_empty_path_finds_nothing() -> None:
    assert settings.env("TB_URL", {"TB_URL": ""}) is None
    assert settings.search_path({"PATH": ""}) == "" and settings.search_path({}) is None


def test_tenant_login_defaults_to_the_demo_tenant() -> None:
    assert settings.tenant_login({}) == ("tenant@thingsboard.org", "tenant")
    assert settings.tenant_login({"TBSPARK_TENANT_USERNAME": "a@b", "TBSPARK_TENANT_PASSWORD": "pw"}) == ("a@b", "pw")


def test_token_lifetimes() -> None:
    assert settings.access_token_ttl_s({}) is None
    assert settings.refresh_token_ttl_s({"JWT_REFRESH_TOKEN_EXPIRATION_TIME": "60"}) == 60
    with pytest.raises(UsageError, match=r"JWT_TOKEN_EXPIRATION_TIME='9h' is not a number of seconds"):
        settings.access_token_ttl_s({"JWT_TOKEN_EXPIRATION_TIME": "9h"})


def test_device_state() -> None:
    assert settings.device_state({}) == {}
    assert settings.device_state({"DEFAULT_INACTIVITY_TIMEOUT": "5", "TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT": "250.0"}) \
        == {"inactivity_timeout_s": 5.0, "report_ms": 250}
    with pytest.raises(UsageError, match=r"DEFAULT_STATE_CHECK_INTERVAL='0' is not a positive number of seconds"):
        settings.device_state({"DEFAULT_STATE_CHECK_INTERVAL": "0"})


def test_login_lockout() -> None:
    assert settings.login_lockout({}) == {}
    assert settings.login_lockout({"TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS": "0", "TBSPARK_LOGIN_LOCKOUT_S": "1.5"}) \
        == {"max_failed_attempts": 0, "lockout_s": 1.5}
    with pytest.raises(UsageError, match="TBSPARK_LOGIN_MAX_LOCKOUT_S='inf' is not a number of seconds above 0"):
        settings.login_lockout({"TBSPARK_LOGIN_MAX_LOCKOUT_S": "inf"})


def test_stop_grace_event_loop_and_sim_hot_path() -> None:
    assert settings.platform_stop_grace_s(10.0, {}) == 10.0
    assert settings.platform_stop_grace_s(10.0, {"TBSPARK_PLATFORM_STOP_GRACE_S": " 2 "}) == 2.0
    with pytest.raises(UsageError, match=r"\(0, 3600\]"):
        settings.platform_stop_grace_s(10.0, {"TBSPARK_PLATFORM_STOP_GRACE_S": "3601"})
    assert settings.event_loop({}) == "auto" and settings.event_loop({"TBSPARK_EVENT_LOOP": " AsyncIO"}) == "asyncio"
    with pytest.raises(StackError, match="TBSPARK_EVENT_LOOP='libuv'"):
        settings.event_loop({"TBSPARK_EVENT_LOOP": "libuv"})
    assert settings.sim_hot_path({}) == ("auto", "TBSPARK_SIM_HOT_PATH")
    assert settings.sim_hot_path({"TBSPARK_SIM_HOT_PATH": "C"}) == ("c", "TBSPARK_SIM_HOT_PATH")
    # the old name is still read, and the new one wins when both are set
    assert settings.sim_hot_path({"TBSPARK_SIM_ENGINE": "C"}) == ("c", "TBSPARK_SIM_ENGINE")
    assert settings.sim_hot_path({"TBSPARK_SIM_ENGINE": "c", "TBSPARK_SIM_HOT_PATH": "python"}) == (
        "python", "TBSPARK_SIM_HOT_PATH")
    with pytest.raises(UsageError, match="TBSPARK_SIM_HOT_PATH='fast' is not a simulator hot path"):
        settings.sim_hot_path({"TBSPARK_SIM_HOT_PATH": "fast"})
    with pytest.raises(UsageError, match="TBSPARK_SIM_ENGINE='fast' is not a simulator hot path"):
        settings.sim_hot_path({"TBSPARK_SIM_ENGINE": "fast"})


def test_time_zone_spark_and_batch_log() -> None:
    assert settings.system_time_zone({"TZ": ":Europe/Paris"}) == "Europe/Paris"
    assert settings.system_time_zone({}) is None
    assert settings.under_spark_submit({"PYSPARK_GATEWAY_PORT": "40000"})
    assert not settings.under_spark_submit({})
    assert settings.aggregate_batch_log({"TBSPARK_AGGREGATE_BATCH_LOG": "/tmp/b.jsonl"}) == "/tmp/b.jsonl"


def test_child_environ_copies_drops_and_sets() -> None:
    parent = {"PATH": "/bin", "SPARK_HOME": "/opt/spark", "A": "1"}
    child = settings.child_environ({"A": "2", "B": "3"}, drop=("SPARK_HOME",), environ=parent)
    assert child == {"PATH": "/bin", "A": "2", "B": "3"}
    assert parent["A"] == "1" and "SPARK_HOME" in parent  # the parent's is untouched
