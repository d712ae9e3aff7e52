"""The `tbspark` command line: the root command (``--debug`` anywhere, ``--version``, usage errors as
one line). No verb's logic lives here: each verb parses its options, calls one library function,
renders the result with rich, and maps errors to exit codes (``tbspark.cli._common.handle_errors``).
One module per verb group registers its commands; options several verbs share are declared once in
``tbspark.cli._options``.

The conventions of ThingsBoard's official CLI tools: shell completion, ``--version``, ``-h``,
``--debug`` anywhere on the command line (or ``TB_DEBUG=1``) for tracebacks, one error line otherwise.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from tbspark.cli import _common
from tbspark.errors import EXIT_CODES_HELP, EXIT_UNAVAILABLE, EXIT_USAGE, TbsparkError


def take_debug(args: list[str]) -> tuple[list[str], bool]:
    """``--debug`` may stand anywhere before a ``--``: remove it and say whether it was there."""
    out: list[str] = []
    seen = False
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:], seen
        if arg == "--debug":
            seen = True
        else:
            out.append(arg)
    return out, seen


class _Root(TyperGroup):
    """The root command: takes ``--debug`` from anywhere and prints click's usage errors as one
    line (``Error: … — see 'tbspark VERB -h'``, exit 2) instead of a box."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from tbspark import settings

        argv, debug = take_debug(list(sys.argv[1:] if args is None else args))
        _common.DEBUG["on"] = debug or settings.debug()
        try:
            rv = super().main(args=argv, prog_name=prog_name or "tbspark", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _common.CliUsageError as exc:
            if not standalone_mode:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help text was shown: nothing to add
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            where = f" — see '{ctx.command_path} -h'" if ctx is not None else ""
            _common.err_console.print(f"Error: {exc.format_message()}{where}", markup=False,
                                      highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
        except typer.Abort:
            if not standalone_mode:
                raise
            _common.err_console.print("Interrupted.", markup=False)
            sys.exit(130)
        except Exception as exc:  # only with --debug / TB_DEBUG: handle_errors let it through
            if not standalone_mode:
                raise
            import traceback

            traceback.print_exc()
            sys.exit(exc.exit_code if isinstance(exc, TbsparkError) else EXIT_UNAVAILABLE)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="tbspark",
    cls=_Root,
    help="IoT analytics with ThingsBoard, Kafka and Spark: provision, simulate, aggregate, verify.\n\n"
         + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from tbspark import __version__

        typer.echo(f"tbspark {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors; allowed anywhere on the "
                               "command line (or set TB_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print tbspark's version and exit."),
) -> None:
    # --debug is taken out of the arguments by _Root.main wherever it stands; declared here for -h.
    del debug, version


def _register_all() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from tbspark.cli import (  # noqa: F401
        aggregate_cmd,
        demo_cmd,
        platform_cmd,
        provision_cmd,
        scenario_cmd,
        simulate_cmd,
        stack_cmd,
        verify_cmd,
    )


_register_all()


def main() -> None:
    app()
