"""Where tbspark's configuration comes from, in one place.

Precedence, lowest first: packaged defaults < scenario file < environment < command-line flags.
For the embedded platform and the local Kafka broker, the addresses of a running
``tbspark stack`` (recorded in the state directory) stand in for the defaults.

Every environment variable tbspark reads is read here and nowhere else: ``VARIABLES`` below lists
each once with its default and meaning (docs/configuration.md is the same list; tests/unit/
test_settings_env.py keeps both true), and each has a named accessor that callers use. Building a
child process's environment (``child_environ``) is no read of a setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

DEFAULT_STATE_DIR = ".tbspark"
DEFAULT_TB_URL = "http://127.0.0.1:8080"
DEFAULT_MQTT_PORT = 1883
DEFAULT_USERNAME = "tenant@thingsboard.org"
DEFAULT_PASSWORD = "tenant"
DEFAULT_SYSADMIN_USERNAME = "sysadmin@thingsboard.org"
DEFAULT_SYSADMIN_PASSWORD = "sysadmin"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"

REPO_ROOT = Path(__file__).resolve().parent.parent


Environ = Mapping[str, str]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable tbspark reads: its name, its default (as a person reads it) and what
    it sets."""

    name: str
    default: str
    meaning: str


VARIABLES: tuple[EnvVar, ...] = (
    # where things are
    EnvVar("TBSPARK_STATE_DIR", "`.tbspark` in the current directory", "the state directory (flag `--state-dir`)"),
    EnvVar("TBSPARK_JAR_CACHE", "a checkout's `.cache/jars`, else `$XDG_CACHE_HOME/tbspark/jars`",
           "where Maven copies the JVM jars"),
    EnvVar("XDG_CACHE_HOME", "`~/.cache`", "the user's cache directory (the jar cache of an installed tbspark)"),
    # the connection (resolve_connection: defaults < the local stack < scenario < environment < flags)
    EnvVar("TB_URL", "scenario `platform.url`, else `http://127.0.0.1:8080`", "ThingsBoard's REST base URL"),
    EnvVar("TB_MQTT_HOST", "the host of `TB_URL`", "ThingsBoard's MQTT host"),
    EnvVar("TB_MQTT_PORT", "`1883`", "ThingsBoard's MQTT port"),
    EnvVar("TB_USERNAME", "`tenant@thingsboard.org`", "the tenant administrator's login"),
    EnvVar("TB_PASSWORD", "`tenant`", "its password"),
    EnvVar("KAFKA_BOOTSTRAP", "scenario `kafka.bootstrap`, else `127.0.0.1:9092`",
           "Kafka as tbspark's own clients (and the Spark job) see it"),
    EnvVar("TB_KAFKA_BOOTSTRAP", "scenario `kafka.bootstrap_for_platform`, else the resolved `KAFKA_BOOTSTRAP`",
           "Kafka as ThingsBoard's rule node sees it (written into the forwarding chain; under "
           "docker-compose `kafka:19092`)"),
    EnvVar("TB_DEBUG", "off", "`1`/`true`/`yes`/`on`: print tracebacks (as `--debug` does)"),
    # the embedded platform (`tbspark platform serve`, `tbspark stack up`)
    EnvVar("TBSPARK_TENANT_USERNAME", "`tenant@thingsboard.org`",
           "the embedded platform's tenant admin, created on its first start (flag `--tenant-username`)"),
    EnvVar("TBSPARK_TENANT_PASSWORD", "`tenant`", "its password (flag `--tenant-password`)"),
    EnvVar("JWT_TOKEN_EXPIRATION_TIME", "`9000`", "access-token lifetime in seconds (ThingsBoard's name; "
           "flag `--token-ttl`)"),
    EnvVar("JWT_REFRESH_TOKEN_EXPIRATION_TIME", "`604800`", "refresh-token lifetime in seconds (ThingsBoard's "
           "name; flag `--refresh-ttl`)"),
    EnvVar("TBSPARK_MQTT_CONNECT_TIMEOUT_S", "`10`", "seconds a new MQTT connection has to send CONNECT "
           "(tbspark/platform/limits.py)"),
    EnvVar("TBSPARK_MQTT_MAX_HALF_OPEN", "a quarter of the descriptor limit",
           "MQTT connections allowed to be waiting for their CONNECT at once"),
    EnvVar("TBSPARK_HTTP_HEADER_TIMEOUT_S", "`20`", "seconds a REST request has to send its headers"),
    EnvVar("TBSPARK_HTTP_BODY_TIMEOUT_S", "`60`", "seconds a REST request has to send its body"),
    EnvVar("DEFAULT_INACTIVITY_TIMEOUT", "`600`", "seconds of silence before a device is inactive "
           "(ThingsBoard's name)"),
    EnvVar("DEFAULT_STATE_CHECK_INTERVAL", "`60`", "seconds between inactivity checks (ThingsBoard's name)"),
    EnvVar("TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT", "`3000`", "milliseconds between the sessions' activity "
           "reports (ThingsBoard's name)"),
    EnvVar("TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS", "`5`", "failed logins before a lockout, 0 = none "
           "(docs/security.md)"),
    EnvVar("TBSPARK_LOGIN_LOCKOUT_S", "`60`", "seconds of the first lockout"),
    EnvVar("TBSPARK_LOGIN_MAX_LOCKOUT_S", "`3600`", "the cap on a doubled lockout, seconds"),
    EnvVar("TBSPARK_PLATFORM_STOP_GRACE_S", "`10`", "seconds the platform has to stop cleanly after "
           "SIGTERM before it exits anyway, in (0, 3600]"),
    EnvVar("TBSPARK_EVENT_LOOP", "`auto`", "`auto` (uvloop when installed), `uvloop` (required) or `asyncio` "
           "(the stock loop, for A/B runs)"),
    EnvVar("TZ", "`/etc/localtime`, else UTC", "the server's time zone, for aggregation buckets without "
           "`timeZone` (as ThingsBoard's JVM reads it)"),
    # the simulator and the job
    EnvVar("TBSPARK_SIM_HOT_PATH", "`auto`", "the asyncio engine's per-message loop: `auto` (the C hot path "
           "where it can), `c` (required) or `python` (docs/scenarios.md)"),
    EnvVar("TBSPARK_SIM_ENGINE", "unset", "the old name of `TBSPARK_SIM_HOT_PATH`, still read when that is "
           "unset"),
    EnvVar("TBSPARK_AGGREGATE_BATCH_LOG", "unset (no log)", "a file the aggregation job appends one JSON "
           "line per micro-batch to (docs/aggregate.md)"),
    EnvVar("SPARK_CONF_DIR", "unset", "a user's own Spark configuration: when set, the job leaves Spark's "
           "logging to it"),
    EnvVar("PYSPARK_GATEWAY_PORT", "unset", "set by spark-submit: the job runs in its JVM (jars from "
           "`--jars`/`--packages`, log4j its own)"),
    # the JVM tools
    EnvVar("JAVA_HOME", "the `java` on `PATH`", "the Java runtime of Kafka, Spark and Maven"),
    EnvVar("MAVEN_HOME", "the `mvn` on `PATH`", "the Maven that resolves the jars"),
    EnvVar("PATH", "the process's", "where `java` and `mvn` are looked for"),
)
_NAMES = frozenset(v.name for v in VARIABLES)


def _raw(name: str, environ: Environ | None) -> str | None:
    if name not in _NAMES:  # a read must be listed in VARIABLES (and so in docs/configuration.md)
        raise KeyError(f"{name} is not in tbspark.settings.VARIABLES: add it there with its default and meaning")
    return (environ if environ is not None else os.environ).get(name)


def env(name: str, environ: Environ | None = None) -> str | None:
    """The value of an environment variable listed in ``VARIABLES``, or None when unset or blank.
    Other modules call the named accessors below, not this."""
    value = _raw(name, environ)
    return value if value not in (None, "") else None


def child_environ(extra: Mapping[str, str] | None = None, drop: tuple[str, ...] = (),
                  environ: Environ | None = None) -> dict[str, str]:
    """A child process's environment: this process's, without ``drop``, with ``extra`` set."""
    base = dict(environ if environ is not None else os.environ)
    for name in drop:
        base.pop(name, None)
    return {**base, **(extra or {})}


def debug(environ: Environ | None = None) -> bool:
    """TB_DEBUG (as the official ThingsBoard tools read it): tracebacks on errors."""
    return (env("TB_DEBUG", environ) or "").strip().lower() in ("1", "true", "yes", "on")


_PLATFORM_LIMITS = {"mqtt_connect_timeout_s": "TBSPARK_MQTT_CONNECT_TIMEOUT_S",
                    "mqtt_max_half_open": "TBSPARK_MQTT_MAX_HALF_OPEN",
                    "http_header_timeout_s": "TBSPARK_HTTP_HEADER_TIMEOUT_S",
                    "http_body_timeout_s": "TBSPARK_HTTP_BODY_TIMEOUT_S"}


def platform_limits(environ: Environ | None = None) -> dict[str, str]:
    """The embedded platform's connection limits set in the environment: {limit name: text}."""
    return {name: value for name, var in _PLATFORM_LIMITS.items() if (value := env(var, environ)) is not None}


def tenant_login(environ: Environ | None = None) -> tuple[str, str]:
    """The embedded platform's tenant admin (login, password): TBSPARK_TENANT_USERNAME /
    TBSPARK_TENANT_PASSWORD, else the demo tenant."""
    return (env("TBSPARK_TENANT_USERNAME", environ) or DEFAULT_USERNAME,
            env("TBSPARK_TENANT_PASSWORD", environ) or DEFAULT_PASSWORD)


def _token_ttl(name: str, environ: Environ | None) -> int | None:
    from tbspark.errors import UsageError

    value = env(name, environ)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number of seconds",
                         f"set {name} to an integer, e.g. 9000") from None


def access_token_ttl_s(environ: Environ | None = None) -> int | None:
    """JWT_TOKEN_EXPIRATION_TIME in seconds; None when unset (the platform's default applies)."""
    return _token_ttl("JWT_TOKEN_EXPIRATION_TIME", environ)


def refresh_token_ttl_s(environ: Environ | None = None) -> int | None:
    """JWT_REFRESH_TOKEN_EXPIRATION_TIME in seconds; None when unset."""
    return _token_ttl("JWT_REFRESH_TOKEN_EXPIRATION_TIME", environ)


def device_state(environ: Environ | None = None) -> dict[str, float | int]:
    """The embedded platform's device-state settings set in the environment (ThingsBoard's names):
    ``inactivity_timeout_s``, ``check_interval_s`` (seconds) and ``report_ms``; a value that is not
    a positive number is a one-line UsageError."""
    from tbspark.errors import UsageError

    values: dict[str, float | int] = {}
    for key, name, unit in (("inactivity_timeout_s", "DEFAULT_INACTIVITY_TIMEOUT", "seconds"),
                            ("check_interval_s", "DEFAULT_STATE_CHECK_INTERVAL", "seconds"),
                            ("report_ms", "TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT", "milliseconds")):
        value = env(name, environ)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number > 0:
            raise UsageError(f"{name}={value!r} is not a positive number of {unit}",
                             f"set {name} to a number above 0, or unset it")
        values[key] = int(number) if key == "report_ms" else number
    return values


def login_lockout(environ: Environ | None = None) -> dict[str, float | int]:
    """The failed-login lockout values set in the environment (docs/security.md):
    ``max_failed_attempts`` (TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS, 0 = off), ``lockout_s``
    (TBSPARK_LOGIN_LOCKOUT_S), ``max_lockout_s`` (TBSPARK_LOGIN_MAX_LOCKOUT_S); each checked alone."""
    from tbspark.errors import UsageError

    values: dict[str, float | int] = {}
    for key, name, kind, what in (
            ("max_failed_attempts", "TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS", int, "a whole number, 0 (no lockout) or more"),
            ("lockout_s", "TBSPARK_LOGIN_LOCKOUT_S", float, "a number of seconds above 0"),
            ("max_lockout_s", "TBSPARK_LOGIN_MAX_LOCKOUT_S", float, "a number of seconds above 0")):
        raw = env(name, environ)
        if raw is None:
            continue
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if value < 0 or (kind is float and not 0 < value < float("inf")):
            raise UsageError(f"{name}={raw!r} is not {what}", f"set {name} to {what}, or unset it")
        values[key] = value
    return values


def platform_stop_grace_s(default: float, environ: Environ | None = None) -> float:
    """TBSPARK_PLATFORM_STOP_GRACE_S: seconds in (0, 3600], else ``default`` when unset."""
    from tbspark.errors import UsageError

    raw = (env("TBSPARK_PLATFORM_STOP_GRACE_S", environ) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"TBSPARK_PLATFORM_STOP_GRACE_S={raw!r} is not a number of seconds in (0, 3600]",
                         f"unset it (default {default:g} s) or set e.g. 10")
    return value


def event_loop(environ: Environ | None = None) -> str:
    """TBSPARK_EVENT_LOOP: ``auto``, ``uvloop`` or ``asyncio``; anything else is a StackError."""
    from tbspark.errors import StackError

    choice = (env("TBSPARK_EVENT_LOOP", environ) or "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise StackError(f"TBSPARK_EVENT_LOOP={choice!r} is not one of auto, uvloop, asyncio",
                         "unset it or pick one of those")
    return choice


SIM_HOT_PATH = "TBSPARK_SIM_HOT_PATH"
# Its name until the word "engine" was kept for --engine (asyncio / paho): still read, so that
# existing scripts keep working.
SIM_HOT_PATH_OLD = "TBSPARK_SIM_ENGINE"


def sim_hot_path(environ: Environ | None = None) -> tuple[str, str]:
    """TBSPARK_SIM_HOT_PATH (else its old name TBSPARK_SIM_ENGINE): ``auto``, ``c`` or ``python``,
    and the variable it came from (for messages); anything else is a UsageError."""
    from tbspark.errors import UsageError

    name = SIM_HOT_PATH if env(SIM_HOT_PATH, environ) is not None or \
        env(SIM_HOT_PATH_OLD, environ) is None else SIM_HOT_PATH_OLD
    mode = (env(name, environ) or "auto").strip().lower() or "auto"
    if mode not in ("auto", "c", "python"):
        raise UsageError(f"{name}={mode!r} is not a simulator hot path", "use auto, c or python")
    return mode, name


def system_time_zone(environ: Environ | None = None) -> str | None:
    """TZ without a leading ':' (glibc's form), None when unset."""
    return (env("TZ", environ) or "").lstrip(":") or None


BATCH_LOG = "TBSPARK_AGGREGATE_BATCH_LOG"


def aggregate_batch_log(environ: Environ | None = None) -> str | None:
    """TBSPARK_AGGREGATE_BATCH_LOG: the job's per-batch log file, None when unset."""
    return env(BATCH_LOG, environ)


def under_spark_submit(environ: Environ | None = None) -> bool:
    """True in a Python driver that spark-submit (or a running pyspark) started: its JVM exists."""
    return env("PYSPARK_GATEWAY_PORT", environ) is not None


def spark_conf_dir(environ: Environ | None = None) -> str | None:
    """SPARK_CONF_DIR: a user's own Spark configuration directory, None when unset."""
    return env("SPARK_CONF_DIR", environ)


def java_home(environ: Environ | None = None) -> str | None:
    return env("JAVA_HOME", environ)


def maven_home(environ: Environ | None = None) -> str | None:
    return env("MAVEN_HOME", environ)


def search_path(environ: Environ | None = None) -> str | None:
    """PATH as it is (an empty PATH finds nothing), None when unset."""
    return _raw("PATH", environ)

def state_dir(flag: str | Path | None = None, environ: Environ | None = None) -> Path:
    """The state directory: flag > TBSPARK_STATE_DIR > ./.tbspark."""
    chosen = flag or env("TBSPARK_STATE_DIR", environ) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def jar_cache_dir(environ: Environ | None = None) -> Path:
    """TBSPARK_JAR_CACHE > a source checkout's .cache/jars > the user's cache directory
    ($XDG_CACHE_HOME/tbspark/jars, else ~/.cache/tbspark/jars) for an installed wheel, whose
    site-packages is no place to write."""
    chosen = env("TBSPARK_JAR_CACHE", environ)
    if chosen:
        return Path(chosen).expanduser().resolve()
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".cache" / "jars"
    base = env("XDG_CACHE_HOME", environ) or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "tbspark" / "jars"


@dataclass(frozen=True)
class Connection:
    """How to reach ThingsBoard (real or embedded) and Kafka. Secrets are never printed."""

    tb_url: str = DEFAULT_TB_URL
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = DEFAULT_MQTT_PORT
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    # Kafka as ThingsBoard's rule node reaches it; None = the same as kafka_bootstrap.
    platform_kafka_bootstrap: str | None = None
    # Which layer named tb_url ("defaults", "the local stack", a scenario file, TB_URL, --tb-url):
    # an error about an unreachable server says what to change.
    tb_url_from: str = field(default="defaults", compare=False)

    @property
    def kafka_bootstrap_for_platform(self) -> str:
        """The Kafka address written into the forwarding rule chain."""
        return self.platform_kafka_bootstrap or self.kafka_bootstrap

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (f"Connection(tb_url={self.tb_url!r}, mqtt={self.mqtt_host}:{self.mqtt_port}, "
                f"username={self.username!r}, kafka_bootstrap={self.kafka_bootstrap!r}, "
                f"platform_kafka_bootstrap={self.kafka_bootstrap_for_platform!r})")


STACK_LAYER = "the local stack"
# Each layer's name for each setting, for error messages that say what to change.
ENV_NAMES = {"tb_url": "TB_URL", "mqtt_host": "TB_MQTT_HOST", "mqtt_port": "TB_MQTT_PORT",
             "username": "TB_USERNAME", "password": "TB_PASSWORD", "kafka_bootstrap": "KAFKA_BOOTSTRAP",
             "platform_kafka_bootstrap": "TB_KAFKA_BOOTSTRAP"}
FLAG_NAMES = {"tb_url": "--tb-url", "mqtt_host": "--mqtt-host", "mqtt_port": "--mqtt-port",
              "kafka_bootstrap": "--kafka-bootstrap",
              "platform_kafka_bootstrap": "--platform-kafka-bootstrap"}
SCENARIO_KEYS = {"tb_url": "platform.url", "mqtt_host": "platform.mqtt_host",
                 "mqtt_port": "platform.mqtt_port", "username": "platform.username",
                 "password": "platform.password", "kafka_bootstrap": "kafka.bootstrap",
                 "platform_kafka_bootstrap": "kafka.bootstrap_for_platform"}


def check_url(value: str, where: str) -> str:
    """A ThingsBoard base URL, trailing slash removed; anything else is a one-line UsageError
    naming ``where`` it came from (``TB_URL``, ``--tb-url``, ...)."""
    from tbspark.errors import UsageError

    text = str(value).strip()
    u = urlparse(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        guess = f"http://{text}" if "://" not in text else "http://localhost:8080"
        raise UsageError(f"{where}={text!r} is not an http(s) URL",
                         f"give the scheme and host, e.g. {where}={guess}")
    try:
        u.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UsageError(f"{where}={text!r} has a port that is not a number 1-65535",
                         f"e.g. {where}=http://{u.hostname}:8080") from None
    return text.rstrip("/")


def check_port(value: object, where: str) -> int:
    """A TCP port 1-65535, or a one-line UsageError naming ``where`` it came from."""
    from tbspark.errors import UsageError

    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise UsageError(f"{where}={value!r} is not a port", f"set {where} to a number 1-65535, e.g. 1883")
    return port


def check_bootstrap(value: str, where: str) -> str:
    """Kafka bootstrap servers ``host:port[,host:port…]``, or a one-line UsageError."""
    from tbspark.errors import UsageError

    text = str(value).strip()
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{where}={text!r} is not host:port[,host:port…]",
                             f"e.g. {where}=localhost:9092")
    return text


def resolve_connection(
    scenario_conn: dict | None = None,
    stack: dict | None = None,
    flags: dict | None = None,
    environ: dict[str, str] | None = None,
    scenario_name: str = "the scenario",
) -> Connection:
    """Merge the layers into one ``Connection``; a malformed value is a one-line ``UsageError``
    that names the variable, flag or scenario key it came from.

    ``scenario_conn``: keys tb_url, mqtt_host, mqtt_port, username, password, kafka_bootstrap,
    platform_kafka_bootstrap taken from the scenario (None values ignored). ``stack``: the running
    local stack's record (``{"kafka": {"bootstrap": ...}, "platform": {"url": ..., "mqtt_port": ...}}``),
    used when the scenario targets the embedded platform. ``flags``: same keys as ``scenario_conn``.
    """
    conn = Connection()
    layers: list[tuple[str, dict]] = []
    if stack:
        st: dict = {}
        if stack.get("platform"):
            st["tb_url"] = stack["platform"].get("url")
            st["mqtt_port"] = stack["platform"].get("mqtt_port")
        if stack.get("kafka"):
            st["kafka_bootstrap"] = stack["kafka"].get("bootstrap")
        layers.append((STACK_LAYER, st))
    layers.append(("scenario", scenario_conn or {}))
    layers.append(("env", {key: env(name, environ) for key, name in ENV_NAMES.items()}))
    layers.append(("flag", flags or {}))
    for layer, values in layers:
        values = {k: v for k, v in values.items() if v is not None and k in Connection.__dataclass_fields__}

        def where(key: str) -> str:
            if layer == "env":
                return ENV_NAMES[key]
            if layer == "flag":
                return FLAG_NAMES.get(key, key)
            if layer == "scenario":
                return f"{scenario_name}: {SCENARIO_KEYS[key]}"
            return f"{layer}: {key}"

        if "mqtt_port" in values:
            values["mqtt_port"] = check_port(values["mqtt_port"], where("mqtt_port"))
        for key in ("kafka_bootstrap", "platform_kafka_bootstrap"):
            if key in values:
                values[key] = check_bootstrap(values[key], where(key))
        if "tb_url" in values:
            values["tb_url"] = check_url(values["tb_url"], where("tb_url"))
            values["tb_url_from"] = STACK_LAYER if layer == STACK_LAYER else where("tb_url")
            # a layer that moves ThingsBoard moves its MQTT host too, unless it names one
            values.setdefault("mqtt_host", urlparse(values["tb_url"]).hostname or conn.mqtt_host)
        conn = replace(conn, **values)
    return conn


def _read_json(path: Path) -> dict | None:
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # absent or half-written: the other layers decide
    return data if isinstance(data, dict) else None


def read_stack_record(state_root: Path) -> dict | None:
    """What runs locally for this state directory: services.json of `tbspark stack up` (read through
    state.StackRecord: a damaged record is a StateError with its hint, not a silent fall-back to
    the default addresses), or the endpoint file `tbspark platform serve` leaves when it runs
    alone; None when neither exists."""
    from tbspark.state import StackRecord, StateDir

    state = state_root if isinstance(state_root, StateDir) else StateDir(Path(state_root))
    record = StackRecord.find(state)
    stack = record.to_json() if record is not None else {}
    if not stack.get("platform"):
        endpoint = _read_json(state.endpoint_file)
        if endpoint:
            stack["platform"] = endpoint
    return stack or None


def scenario_connection(scenario, state_root, flags: dict | None = None,
                   environ: dict[str, str] | None = None) -> Connection:
    """The connection a verb should use for ``scenario`` (``state_root``: a Path or a StateDir):
    defaults < the local stack (its platform only when the scenario's platform is embedded)
    < the scenario's platform/kafka sections < environment < flags.

    The rule node's Kafka address (``platform_kafka_bootstrap``) follows the same layers
    (kafka.bootstrap_for_platform < TB_KAFKA_BOOTSTRAP < --platform-kafka-bootstrap) and, unless one
    of them names it, is the bootstrap tbspark itself uses: right for a ThingsBoard on this host."""
    p = scenario.platform
    sc = {
        "tb_url": p.url, "mqtt_host": p.mqtt_host, "mqtt_port": p.mqtt_port,
        "username": p.username, "password": p.password, "kafka_bootstrap": scenario.kafka.bootstrap,
        "platform_kafka_bootstrap": getattr(scenario.kafka, "bootstrap_for_platform", None),
    }
    stack = read_stack_record(state_root)
    if p.kind != "embedded" and stack is not None:
        stack = {"kafka": stack.get("kafka")}  # a real ThingsBoard: only the local broker applies
    source = getattr(scenario, "source", None)
    return resolve_connection(sc, stack, flags, environ,
                              scenario_name=str(source) if source else f"scenario {scenario.name!r}")
