"""What every CLI verb shares: the consoles, the error line, exit codes."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from tbspark.errors import ScenarioError, TbsparkError

console = Console()
err_console = Console(stderr=True)
DEBUG = {"on": False}

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: TbsparkError) -> None:
    """Print one red line (more for scenario errors and log tails) and exit."""
    if isinstance(exc, ScenarioError) and exc.issues:
        for line in exc.issues:
            err_console.print(f"[red]Error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
    else:
        err_console.print(f"[red]Error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def handle_errors(fn: F) -> F:
    """Decorator for verb functions: TbsparkError → one error line + exit code;
    Ctrl-C → exit 130 without a traceback. Tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TbsparkError as exc:
            if DEBUG["on"]:
                raise
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/yellow]")
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
