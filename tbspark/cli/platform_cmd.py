"""`tbspark platform` — run the embedded ThingsBoard-compatible platform in the foreground."""

from __future__ import annotations

from typing import Optional

import typer

from tbspark import settings
from tbspark.cli import app
from tbspark.cli._common import console, handle_errors, print_json
from tbspark.cli._options import JsonOpt, StateDirOpt, parse_duration
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
    state_dir: StateDirOpt = None,
    tenant_username: str = typer.Option(None, "--tenant-username", help="Tenant admin login created on first start."),
    tenant_password: str = typer.Option(None, "--tenant-password", help="Its password (first start only)."),
    token_ttl: Optional[str] = typer.Option(None, "--token-ttl", show_default=False, metavar="DURATION",
                                            help="Access-token lifetime, e.g. 9000s, 2.5h (default 9000s, "
                                                 "as ThingsBoard; env JWT_TOKEN_EXPIRATION_TIME in seconds)."),
    refresh_ttl: Optional[str] = typer.Option(None, "--refresh-ttl", show_default=False, metavar="DURATION",
                                              help="Refresh-token lifetime, e.g. 168h (default 604800s, as "
                                                   "ThingsBoard; env JWT_REFRESH_TOKEN_EXPIRATION_TIME)."),
    as_json: JsonOpt = False,
) -> None:
    """Serve REST on --http-port and MQTT on --mqtt-port until Ctrl-C / SIGTERM. With --json, one
    JSON object (url, mqtt_port, state_dir, pid) is printed once it is ready."""
    from tbspark.platform.app import serve as run

    env_user, env_password = settings.tenant_login()
    user = tenant_username or env_user
    password = tenant_password or env_password
    root = settings.state_dir(state_dir)
    lifetimes = {}
    for key, flag, name, from_env in (("access_ttl_s", token_ttl, "--token-ttl", settings.access_token_ttl_s),
                                      ("refresh_ttl_s", refresh_ttl, "--refresh-ttl", settings.refresh_token_ttl_s)):
        if flag is not None:
            lifetimes[key] = max(1, round(parse_duration(flag, name)))
        elif (seconds := from_env()) is not None:
            lifetimes[key] = seconds
    device_state = settings.device_state()
    policy = _login_policy()

    def ready(info: dict) -> None:
        if as_json:
            print_json({"url": info["url"], "mqtt_port": info["mqtt_port"], "state_dir": str(root),
                        "pid": info["pid"], "username": user})
            return
        console.print(f"REST  {info['url']}   (login {user})", highlight=False)
        console.print(f"UI    {info['ui_url']}", highlight=False)
        if info["mqtt_port"]:
            console.print(f"MQTT  {info['url'].split('//')[1].rsplit(':', 1)[0]}:{info['mqtt_port']}", highlight=False)
        console.print(f"state {root}   pid {info['pid']}   — Ctrl-C to stop", highlight=False)

    run(root, host, http_port, mqtt_port, on_ready=ready, tenant_user=(user, password), device_state=device_state,
        login_policy=policy, **lifetimes)


def _login_policy():
    """The failed-login lockout (docs/security.md): TBSPARK_MAX_FAILED_LOGIN_ATTEMPTS (default 5, 0 =
    off), TBSPARK_LOGIN_LOCKOUT_S (first lock, default 60), TBSPARK_LOGIN_MAX_LOCKOUT_S (cap, 3600).
    None when none is set: then the platform's saved security settings apply."""
    from tbspark.platform.login_throttle import LoginPolicy

    values = settings.login_lockout()
    if not values:
        return None  # the platform's saved security settings, else the defaults
    if "lockout_s" in values and "max_lockout_s" not in values:
        values["max_lockout_s"] = max(values["lockout_s"], LoginPolicy.max_lockout_s)
    if values.get("max_lockout_s", LoginPolicy.max_lockout_s) < values.get("lockout_s", LoginPolicy.lockout_s):
        raise UsageError("TBSPARK_LOGIN_MAX_LOCKOUT_S is below TBSPARK_LOGIN_LOCKOUT_S",
                         "the cap must be at least the first lock")
    return LoginPolicy(**values)
