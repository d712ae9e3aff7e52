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
    TBSPARK_JAR_CACHE   where Maven copies the JVM jars (default ``.cache/jars`` in the repo)
    TBSPARK_TENANT_USERNAME / TBSPARK_TENANT_PASSWORD
                        the embedded platform's tenant admin, created on its first start
                        (default tenant@thingsboard.org / tenant; flags --tenant-username/-password)
    JWT_TOKEN_EXPIRATION_TIME / JWT_REFRESH_TOKEN_EXPIRATION_TIME
                        the embedded platform's token lifetimes in seconds (ThingsBoard's names;
                        default 9000 / 604800; flags --token-ttl-s / --refresh-ttl-s)
    TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS / TBSPARK_LOGIN_LOCKOUT_S / TBSPARK_LOGIN_MAX_LOCKOUT_S
                        the embedded platform's failed-login lockout (default 5 / 60 / 3600;
                        read by `platform serve`, docs/security.md)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
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


def state_dir(flag: str | Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """The state directory: flag > TBSPARK_STATE_DIR > ./.tbspark."""
    chosen = flag or env("TBSPARK_STATE_DIR", environ) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def jar_cache_dir(environ: dict[str, str] | None = None) -> Path:
    chosen = env("TBSPARK_JAR_CACHE", environ)
    return Path(chosen).expanduser().resolve() if chosen else REPO_ROOT / ".cache" / "jars"


@dataclass(frozen=True)
class Connection:
    """How to reach ThingsBoard (real or embedded) and Kafka. Secrets are never printed."""

    tb_url: str = DEFAULT_TB_URL
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = DEFAULT_MQTT_PORT
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (f"Connection(tb_url={self.tb_url!r}, mqtt={self.mqtt_host}:{self.mqtt_port}, "
                f"username={self.username!r}, kafka_bootstrap={self.kafka_bootstrap!r})")


def resolve_connection(
    scenario_conn: dict | None = None,
    stack: dict | None = None,
    flags: dict | None = None,
    environ: dict[str, str] | None = None,
) -> Connection:
    """Merge the layers into one ``Connection``.

    ``scenario_conn``: keys tb_url, mqtt_host, mqtt_port, username, password, kafka_bootstrap
    taken from the scenario (None values ignored). ``stack``: the running local stack's record
    (``{"kafka": {"bootstrap": ...}, "platform": {"url": ..., "mqtt_port": ...}}``), used when the
    scenario targets the embedded platform. ``flags``: same keys as ``scenario_conn``.
    """
    conn = Connection()
    layers: list[dict] = []
    if stack:
        st: dict = {}
        if stack.get("platform"):
            st["tb_url"] = stack["platform"].get("url")
            st["mqtt_port"] = stack["platform"].get("mqtt_port")
        if stack.get("kafka"):
            st["kafka_bootstrap"] = stack["kafka"].get("bootstrap")
        layers.append(st)
    layers.append(scenario_conn or {})
    e: dict = {
        "tb_url": env("TB_URL", environ),
        "mqtt_host": env("TB_MQTT_HOST", environ),
        "mqtt_port": env("TB_MQTT_PORT", environ),
        "username": env("TB_USERNAME", environ),
        "password": env("TB_PASSWORD", environ),
        "kafka_bootstrap": env("KAFKA_BOOTSTRAP", environ),
    }
    layers.append(e)
    layers.append(flags or {})
    for layer in layers:
        values = {k: v for k, v in layer.items() if v is not None and k in Connection.__dataclass_fields__}
        if "mqtt_port" in values:
            values["mqtt_port"] = int(values["mqtt_port"])
        if "tb_url" in values:
            values["tb_url"] = str(values["tb_url"]).rstrip("/")
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


def connection_for(scenario, state_root, flags: dict | None = None,
                   environ: dict[str, str] | None = None) -> Connection:
    """The connection a verb should use for ``scenario`` (``state_root``: a Path or a StateDir):
    defaults < the local stack (its platform only when the scenario's platform is embedded)
    < the scenario's platform/kafka sections < environment < flags."""
    p = scenario.platform
    sc = {
        "tb_url": p.url, "mqtt_host": p.mqtt_host, "mqtt_port": p.mqtt_port,
        "username": p.username, "password": p.password, "kafka_bootstrap": scenario.kafka.bootstrap,
    }
    stack = read_stack_record(state_root)
    if p.kind != "embedded" and stack is not None:
        stack = {"kafka": stack.get("kafka")}  # a real ThingsBoard: only the local broker applies
    return resolve_connection(sc, stack, flags, environ)
