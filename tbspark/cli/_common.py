"""What every CLI verb shares: the consoles, the error line, exit codes, JSON output, and the
connection a verb resolves (with a quick check that something answers there)."""

from __future__ import annotations

import functools
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar
from urllib.parse import urlparse

import typer
from rich.console import Console

from tbspark.errors import (
    EXIT_UNAVAILABLE,
    ScenarioError,
    TbNotFoundError,
    TbsparkError,
    TbUnavailableError,
)

if TYPE_CHECKING:
    from tbspark.settings import Connection

console = Console()
err_console = Console(stderr=True)
DEBUG = {"on": False}

F = TypeVar("F", bound=Callable[..., Any])

try:  # typer ≥ 0.2x carries its own click; older ones raise click's exceptions
    from typer.exceptions import TyperException as CliUsageError
except ImportError:  # pragma: no cover
    from click import ClickException as CliUsageError  # type: ignore[assignment,no-redef]

LOGIN_PATH = "/api/auth/login"
PROBE_TIMEOUT_S = 2.0


def out(as_json: bool) -> Console:
    """Where a verb's human-readable output goes: stdout, or stderr when stdout carries JSON."""
    return err_console if as_json else console


def error_line(exc: TbsparkError) -> str:
    """The one line (more for scenario issues and log tails) a user sees for ``exc``."""
    if isinstance(exc, TbNotFoundError) and exc.path == LOGIN_PATH:
        # ThingsBoard serves its API at the root: a TB_URL with a path (…/thingsboard) or a
        # server that is not ThingsBoard answers the login with 404.
        return (f"{exc.message} — is this ThingsBoard? TB_URL must be the server's base address, "
                f"e.g. http://localhost:8080, without a path such as /thingsboard")
    return str(exc)


def fail(exc: TbsparkError) -> None:
    """Print one red line (more for scenario errors and log tails) and exit."""
    if isinstance(exc, ScenarioError) and exc.issues:
        for line in exc.issues:
            err_console.print(f"[red]Error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
    else:
        err_console.print("[red]Error:[/red] ", markup=True, highlight=False, end="")
        err_console.print(error_line(exc), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def handle_errors(fn: F) -> F:
    """Decorator for verb functions: TbsparkError → one error line + its exit code; anything
    unexpected → one line and exit 3; Ctrl-C → exit 130. Tracebacks only with --debug / TB_DEBUG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, CliUsageError):
            raise
        except TbsparkError as exc:
            if DEBUG["on"]:
                raise
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/yellow]")
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 - a bug or an untranslated library error
            if DEBUG["on"]:
                raise
            what = str(exc).splitlines()[0] if str(exc) else ""
            err_console.print(f"Error: unexpected {type(exc).__name__}: {what} — rerun with --debug "
                              f"for the traceback", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_UNAVAILABLE)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Exactly one JSON document on stdout."""
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def check_reachable(conn: Connection, state_root: Path, *, rest: bool = True, mqtt: bool = False,
                    local_only: bool = False) -> None:
    """Fail in about a second, with what to do, when nothing listens where ``conn`` points —
    instead of retrying for seconds and blaming TB_URL when the real cause is a stack that is
    not running (or a state directory that is not the stack's). ``local_only``: check only an
    address that comes from the defaults or the local stack (a long-running verb such as
    aggregate keeps retrying a ThingsBoard that is still starting)."""
    from tbspark.settings import STACK_LAYER

    local = conn.tb_url_from in ("defaults", STACK_LAYER)
    if local_only and not local:
        return
    targets = []
    if rest:
        u = urlparse(conn.tb_url)
        targets.append((u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80),
                        conn.tb_url, f"from {conn.tb_url_from}", "start ThingsBoard, or fix the address"))
    if mqtt:
        targets.append((conn.mqtt_host, conn.mqtt_port, f"{conn.mqtt_host}:{conn.mqtt_port}", "MQTT",
                        "start ThingsBoard, or fix TB_MQTT_HOST / TB_MQTT_PORT (--mqtt-host / --mqtt-port)"))
    for host, port, shown, what, hint in targets:
        if _answers(host, port):
            continue
        if local:
            from tbspark.settings import read_stack_record

            recorded = read_stack_record(state_root) is not None
            why = (f"the stack recorded in {state_root} is not running" if recorded
                   else f"no tbspark stack is recorded in {state_root}")
            raise TbUnavailableError(f"nothing answers at {shown}: {why}",
                                     "run `tbspark stack up`, or pass the --state-dir of a running "
                                     "stack, or set TB_URL to your ThingsBoard")
        raise TbUnavailableError(f"nothing answers at {shown} ({what})", hint)
