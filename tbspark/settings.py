"""Where tbspark's configuration comes from, in one place.

Precedence, lowest first: packaged defaults < scenario file < environment < command-line flags.
For the embedded platform and the local Kafka broker, the addresses of a running
``tbspark stack`` (recorded in the state directory) stand in for the defaults.

Environment variables read here and nowhere else:
    TBSPARK_STATE_DIR   state directory (default ``.tbspark`` in the current directory)
    TB_URL              ThingsBoard REST base URL, e.g. http://127.0.0.1:8080
    TB_MQTT_HOST        ThingsBoard MQTT host (default: TB_URL's host)
    TB_MQTT_PORT        ThingsBoard MQTT port (default 1883)
    TB_USERNAME         tenant administrator login
    TB_PASSWORD         its password
    KAFKA_BOOTSTRAP     Kafka bootstrap servers as tbspark's own clients see them
    TB_KAFKA_BOOTSTRAP  Kafka bootstrap servers as ThingsBoard's Kafka rule node sees them (written
                        into the forwarding chain; default: the scenario's
                        kafka.bootstrap_for_platform, else KAFKA_BOOTSTRAP's resolved value). Under
                        docker-compose the rule node runs in a container: TB_KAFKA_BOOTSTRAP=kafka:19092
    TB_DEBUG            1/true/yes: print tracebacks (as --debug does)
    TBSPARK_JAR_CACHE   where Maven copies the JVM jars (default ``.cache/jars`` in the repo)
    TBSPARK_TENANT_USERNAME / TBSPARK_TENANT_PASSWORD
                        the embedded platform's tenant admin, created on its first start
                        (default tenant@thingsboard.org / tenant; flags --tenant-username/-password)
    JWT_TOKEN_EXPIRATION_TIME / JWT_REFRESH_TOKEN_EXPIRATION_TIME
                        the embedded platform's token lifetimes in seconds (ThingsBoard's names;
                        default 9000 / 604800; flags --token-ttl / --refresh-ttl, durations such as 9000s or 168h)
    TBSPARK_MQTT_CONNECT_TIMEOUT_S / TBSPARK_MQTT_MAX_HALF_OPEN /
    TBSPARK_HTTP_HEADER_TIMEOUT_S / TBSPARK_HTTP_BODY_TIMEOUT_S
                        the embedded platform's connection limits (tbspark/platform/limits.py:
                        10 s, a quarter of the descriptor limit, 20 s, 60 s)
    DEFAULT_INACTIVITY_TIMEOUT / DEFAULT_STATE_CHECK_INTERVAL / TB_TRANSPORT_SESSIONS_REPORT_TIMEOUT
                        the embedded platform's device state (ThingsBoard's names and defaults: 600 s,
                        60 s, 3000 ms; read by `tbspark platform serve`)
    TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS / TBSPARK_LOGIN_LOCKOUT_S / TBSPARK_LOGIN_MAX_LOCKOUT_S
                        the embedded platform's failed-login lockout (default 5 / 60 / 3600;
                        read by `platform serve`, docs/security.md)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
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


def env(name: str, environ: dict[str, str] | None = None) -> str | None:
    """The value of an environment variable, or None when unset or blank."""
    value = (environ if environ is not None else os.environ).get(name)
    return value if value not in (None, "") else None


def debug(environ: dict[str, str] | None = None) -> bool:
    """TB_DEBUG (as the official ThingsBoard tools read it): tracebacks on errors."""
    return (env("TB_DEBUG", environ) or "").strip().lower() in ("1", "true", "yes", "on")


_PLATFORM_LIMITS = {"mqtt_connect_timeout_s": "TBSPARK_MQTT_CONNECT_TIMEOUT_S",
                    "mqtt_max_half_open": "TBSPARK_MQTT_MAX_HALF_OPEN",
                    "http_header_timeout_s": "TBSPARK_HTTP_HEADER_TIMEOUT_S",
                    "http_body_timeout_s": "TBSPARK_HTTP_BODY_TIMEOUT_S"}


def platform_limits(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The embedded platform's connection limits set in the environment: {limit name: text}."""
    return {name: value for name, var in _PLATFORM_LIMITS.items() if (value := env(var, environ)) is not None}


def state_dir(flag: str | Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """The state directory: flag > TBSPARK_STATE_DIR > ./.tbspark."""
    chosen = flag or env("TBSPARK_STATE_DIR", environ) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def jar_cache_dir(environ: dict[str, str] | None = None) -> Path:
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
    """What runs locally for this state directory: services.json of `tbspark stack up`, or the
    endpoint file `tbspark platform serve` leaves when it runs alone; None when neither exists."""
    from tbspark.state import StateDir

    root = state_root.root if isinstance(state_root, StateDir) else Path(state_root)
    stack = _read_json(root / "services.json") or {}
    if not stack.get("platform"):
        endpoint = _read_json(root / "platform" / "endpoint.json")
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
