"""`tbspark platform` — run the embedded ThingsBoard-compatible platform in the foreground."""

from __future__ import annotations

from pathlib import Path

import typer

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import console, handle_errors
from tbspark.errors import UsageError

platform_app = typer.Typer(help="The embedded ThingsBoard-compatible platform (REST + MQTT + rule engine).",
                           no_args_is_help=True)
app.add_typer(platform_app, name="platform")


@platform_app.command("serve")
@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    http_port: int = typer.Option(8080, "--http-port", help="REST port (0 picks a free one)."),
    mqtt_port: int = typer.Option(1883, "--mqtt-port", help="MQTT port (0 picks a free one)."),
    state_dir: Path = typer.Option(None, "--state-dir", help="State directory (default: $TBSPARK_STATE_DIR or ./.tbspark)."),
    tenant_username: str = typer.Option(None, "--tenant-username", help="Tenant admin login created on first start."),
    tenant_password: str = typer.Option(None, "--tenant-password", help="Its password (first start only)."),
    token_ttl_s: int = typer.Option(None, "--token-ttl-s", min=1,
                                    help="Access-token lifetime (default 9000 s, as ThingsBoard)."),
    refresh_ttl_s: int = typer.Option(None, "--refresh-ttl-s", min=1,
                                      help="Refresh-token lifetime (default 604800 s, as ThingsBoard)."),
) -> None:
    """Serve REST on --http-port and MQTT on --mqtt-port until Ctrl-C / SIGTERM."""
    from tbspark.platform.app import serve as run

    user = tenant_username or settings.env("TBSPARK_TENANT_USERNAME") or settings.DEFAULT_USERNAME
    password = tenant_password or settings.env("TBSPARK_TENANT_PASSWORD") or settings.DEFAULT_PASSWORD
    root = settings.state_dir(state_dir)
    lifetimes = {}
    for key, flag, env_name in (("access_ttl_s", token_ttl_s, "JWT_TOKEN_EXPIRATION_TIME"),
                                ("refresh_ttl_s", refresh_ttl_s, "JWT_REFRESH_TOKEN_EXPIRATION_TIME")):
        value = flag if flag is not None else settings.env(env_name)
        if value is not None:
            try:
                lifetimes[key] = int(value)
            except ValueError:
                raise UsageError(f"{env_name}={value!r} is not a number of seconds",
                                 f"set {env_name} to an integer, e.g. 9000") from None

    policy = _login_policy()

    def ready(info: dict) -> None:
        console.print(f"REST  {info['url']}   (login {user})", highlight=False)
        console.print(f"UI    {info['ui_url']}", highlight=False)
        if info["mqtt_port"]:
            console.print(f"MQTT  {info['url'].split('//')[1].rsplit(':', 1)[0]}:{info['mqtt_port']}", highlight=False)
        console.print(f"state {root}   pid {info['pid']}   — Ctrl-C to stop", highlight=False)

    run(root, host, http_port, mqtt_port, on_ready=ready, tenant_user=(user, password), login_policy=policy,
        **lifetimes)


def _login_policy():
    """The failed-login lockout (docs/security.md): TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS (default 5, 0 =
    off), TBSPARK_LOGIN_LOCKOUT_S (first lock, default 60), TBSPARK_LOGIN_MAX_LOCKOUT_S (cap, 3600).
    None when none is set: then the platform's saved security settings apply."""
    from tbspark.platform.login_throttle import LoginPolicy

    values: dict = {}
    for key, env_name, kind, what in (
            ("max_failed_attempts", "TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS", int, "a whole number, 0 (no lockout) or more"),
            ("lockout_s", "TBSPARK_LOGIN_LOCKOUT_S", float, "a number of seconds above 0"),
            ("max_lockout_s", "TBSPARK_LOGIN_MAX_LOCKOUT_S", float, "a number of seconds above 0")):
        raw = settings.env(env_name)
        if raw is None:
            continue
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if value < 0 or (kind is float and not 0 < value < float("inf")):
            raise UsageError(f"{env_name}={raw!r} is not {what}", f"set {env_name} to {what}, or unset it")
        values[key] = value
    if not values:
        return None  # the platform's saved security settings, else the defaults
    if "lockout_s" in values and "max_lockout_s" not in values:
        values["max_lockout_s"] = max(values["lockout_s"], LoginPolicy.max_lockout_s)
    if values.get("max_lockout_s", LoginPolicy.max_lockout_s) < values.get("lockout_s", LoginPolicy.lockout_s):
        raise UsageError("TBSPARK_LOGIN_MAX_LOCKOUT_S is below TBSPARK_LOGIN_LOCKOUT_S",
                         "the cap must be at least the first lock")
    return LoginPolicy(**values)
